"""RecurrentTRPO end to end (moved from tests/unit/test_recurrent.py, seconds each): a saved model loaded in a
fresh process acts as the original, and the Zoo's ``train``/``enjoy`` with the trpo_lstm block."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
from gymnasium import spaces
from recurrent_helpers import TINY, RandomEnv, episode_actions
from stable_baselines3.common.env_util import make_vec_env

from sb3_trpo_ext import RecurrentTRPO

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_save_and_load_in_a_fresh_process(tmp_path):
    env = make_vec_env(lambda: RandomEnv(spaces.Box(-1, 1, (2,), np.float32)), n_envs=2, seed=0)
    model = RecurrentTRPO("MlpLstmPolicy", env, n_steps=16, batch_size=16, seed=0, policy_kwargs=TINY)
    model.learn(32)
    model.save(tmp_path / "rtrpo.zip")
    rng = np.random.default_rng(0)
    observations = rng.uniform(-1, 1, (12, 4)).astype(np.float32)
    starts = np.zeros(12, bool)
    starts[[0, 5]] = True
    np.save(tmp_path / "obs.npy", observations)
    np.save(tmp_path / "starts.npy", starts)
    code = f"""
import json, numpy as np, sys
sys.path.insert(0, {str(REPO_ROOT / "tests")!r})
from recurrent_helpers import episode_actions
from sb3_trpo_ext import RecurrentTRPO
model = RecurrentTRPO.load({str(tmp_path / "rtrpo.zip")!r})
actions = episode_actions(model, np.load({str(tmp_path / "obs.npy")!r}), np.load({str(tmp_path / "starts.npy")!r}))
print(json.dumps({{"actions": actions, "class": type(model).__name__, "policy": type(model.policy).__name__}}))
"""
    env_vars = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env_vars, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert output["actions"] == episode_actions(model, observations, starts)
    assert (output["class"], output["policy"]) == ("RecurrentTRPO", "MlpLstmPolicy")


def test_zoo_train_and_enjoy(tmp_path):
    """``train --algo trpo_lstm`` with the CartPoleNoVel-v1 block (VecNormalize, 8 environments), then ``enjoy``,
    which carries the LSTM state between steps."""
    from test_zoo import FAST, check, run_zoo

    check(
        run_zoo("train", "--algo", "trpo_lstm", "--env", "CartPoleNoVel-v1", "-n", "512", "-f", str(tmp_path), *FAST,
                "-params", "n_steps:32", "batch_size:128")
    )  # fmt: skip
    model = RecurrentTRPO.load(tmp_path / "trpo_lstm" / "CartPoleNoVel-v1_1" / "CartPoleNoVel-v1.zip")
    assert (model.n_envs, model.num_timesteps, model.policy.lstm_actor.hidden_size) == (8, 512, 64)
    check(
        run_zoo("enjoy", "--algo", "trpo_lstm", "--env", "CartPoleNoVel-v1", "-f", str(tmp_path), "--no-render",
                "-n", "50", "--num-threads", "1")
    )  # fmt: skip
