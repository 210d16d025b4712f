"""Checkpoints saved by the reference commit's code load in today's code and predict the same (issue 18).

Checkpoints name classes by module path (``sb3_trpo_ext.trpo.policies.MlpPolicy``,
``sb3_trpo_ext.common.vine.VineRolloutBuffer``, ...): a class that moves must keep an alias at its old path, and the
safe loader's allowlist must still admit it. The reference code runs from ``git archive`` in a subprocess, as in
``tests/integration/test_bit_identical.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch as th
from reference_code import reference_source, run_with

from sb3_trpo_ext import TRPO
from sb3_trpo_ext.common.vine import VineRolloutBuffer
from sb3_trpo_ext.trpo.policies import MlpPolicy

SAVE = r"""
import json, sys
import numpy as np
import sb3_trpo_ext
from sb3_trpo_ext import TRPO

folder = sys.argv[1]
out = {"module": sb3_trpo_ext.__file__}
cases = {
    "mlp": ("CartPole-v1", dict(n_steps=64, batch_size=32)),
    "vine": ("Pendulum-v1", dict(sampling="vine", n_steps=64, batch_size=32, vine_n_states=4, vine_horizon=5)),
}
for name, (env_id, kwargs) in cases.items():
    model = TRPO("MlpPolicy", env_id, seed=0, **kwargs).learn(128)
    model.save(f"{folder}/{name}.zip")
    obs = np.stack([model.observation_space.sample() for _ in range(16)]).astype(np.float32)
    np.save(f"{folder}/{name}_obs.npy", obs)
    actions, _ = model.predict(obs, deterministic=True)
    np.save(f"{folder}/{name}_actions.npy", actions)
    out[name] = [p.detach().numpy().tolist() for p in model.policy.parameters()]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def reference_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("reference_checkpoints")
    source = reference_source(folder)
    saved = json.loads(run_with(source, SAVE, folder, str(folder)))
    assert Path(saved.pop("module")).resolve().is_relative_to(source.resolve())  # the reference code wrote them
    return folder, saved


@pytest.mark.parametrize("name", ["mlp", "vine"])
def test_reference_checkpoint_loads_and_predicts_the_same(reference_checkpoints, name):
    folder, saved = reference_checkpoints
    model = TRPO.load(folder / f"{name}.zip")  # the safe loader (default): the old class paths are admitted
    assert type(model.policy) is MlpPolicy
    if name == "vine":
        assert model.rollout_buffer_class is VineRolloutBuffer
    for param, values in zip(model.policy.parameters(), saved[name], strict=True):
        assert th.equal(param.detach(), th.tensor(values, dtype=param.dtype))
    obs = np.load(folder / f"{name}_obs.npy")
    expected = np.load(folder / f"{name}_actions.npy")
    actions, _ = model.predict(obs, deterministic=True)
    if np.issubdtype(expected.dtype, np.integer):
        np.testing.assert_array_equal(actions, expected)
    else:  # the numpy and the torch actor compute the same function, equal to float precision
        np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-6)
