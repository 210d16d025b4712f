"""Vine sampling end to end (moved from tests/unit/test_vine.py, seconds): a vine model saved here loads in a
fresh process with its settings, acts as the original and goes on training with branches."""

import subprocess
import sys

import numpy as np

from sb3_trpo_ext import TRPO

SMALL = dict(n_steps=64, batch_size=64, policy_kwargs=dict(net_arch=[16]))
VINE = dict(sampling="vine", vine_n_states=8, vine_n_actions=3, vine_horizon=5)


def test_vine_model_saves_and_loads_in_a_fresh_process(tmp_path):
    model = TRPO("MlpPolicy", "Pendulum-v1", seed=0, **SMALL, **VINE).learn(64)
    model.save(tmp_path / "vine")
    obs = np.array([[0.3, -0.2, 0.1]], dtype=np.float32)
    expected = model.predict(obs, deterministic=True)[0]
    script = f"""
import numpy as np
from sb3_trpo_ext import TRPO
model = TRPO.load({str(tmp_path / "vine")!r}, env=None)
assert (model.sampling, model.vine_n_states, model.vine_n_actions, model.vine_horizon) == ("vine", 8, 3, 5)
print(repr(model.predict(np.array([[0.3, -0.2, 0.1]], dtype=np.float32), deterministic=True)[0].tolist()))
from stable_baselines3.common.env_util import make_vec_env
model = TRPO.load({str(tmp_path / "vine")!r}, env=make_vec_env("Pendulum-v1"))
saved_branch_steps = model.vine_branch_steps  # saved with the model
model.learn(64)
assert model._vine is not None and model.vine_branch_steps > saved_branch_steps > 0
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    np.testing.assert_array_equal(np.array(eval(out.stdout.strip().splitlines()[-1])), expected)
