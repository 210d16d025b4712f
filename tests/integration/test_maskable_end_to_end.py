"""MaskableTRPO end to end (moved from tests/unit/test_maskable.py, seconds): a saved model loaded in a fresh
process acts as the original under the same masks, and the Zoo's ``trpo_mask`` key: masked evaluation, ``train``
and ``enjoy`` on Taxi with the environment's masks."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

pytest.importorskip("sb3_contrib")

from sb3_contrib.common.envs import InvalidActionEnvMultiDiscrete  # noqa: E402
from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback  # noqa: E402

from sb3_trpo_ext import TRPO, MaskableTRPO  # noqa: E402
from sb3_trpo_ext.maskable.policies import MaskableMlpPolicy  # noqa: E402

SMALL = dict(n_steps=32, batch_size=32, n_critic_updates=2, cg_max_steps=5, seed=0)


# ------------------------------------------------------------------------------------- save / load
def test_save_load_fresh_process(tmp_path: Path) -> None:
    env = InvalidActionEnvMultiDiscrete(dims=[3, 4], n_invalid_actions=3)
    model = MaskableTRPO("MlpPolicy", env, **SMALL).learn(64)
    path = tmp_path / "model.zip"
    model.save(path)
    observations, masks = [], []
    obs, _ = env.reset(seed=5)
    for _ in range(10):
        observations.append(np.asarray(obs).tolist())
        masks.append(np.asarray(env.action_masks()).tolist())
        obs, *_ = env.step(env.action_space.sample())
    expected = [
        model.predict(np.array(o), deterministic=True, action_masks=np.array(m))[0].tolist()
        for o, m in zip(observations, masks, strict=True)
    ]
    script = (
        "import json, sys, numpy as np\n"
        "from sb3_trpo_ext import MaskableTRPO\n"
        "model = MaskableTRPO.load(sys.argv[1])\n"
        "data = json.loads(sys.argv[2])\n"
        "print(json.dumps([model.predict(np.array(o), deterministic=True, action_masks=np.array(m))[0].tolist()"
        " for o, m in zip(data['obs'], data['masks'])]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(path), json.dumps({"obs": observations, "masks": masks})],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected
    loaded = MaskableTRPO.load(path, env=env)
    assert type(loaded.policy) is MaskableMlpPolicy
    loaded.set_parameters(str(path))
    loaded.learn(32, reset_num_timesteps=False)


# ------------------------------------------------------------------------------------- Zoo
def test_zoo_masked_evaluation_swaps_the_eval_callback() -> None:
    pytest.importorskip("rl_zoo3")
    from rl_zoo3 import exp_manager

    from sb3_trpo_ext.zoo.masking import MaskableTrialEvalCallback, masked_evaluation

    original = exp_manager.EvalCallback
    with masked_evaluation("trpo_mask"):
        assert exp_manager.EvalCallback is MaskableEvalCallback
        assert exp_manager.TrialEvalCallback is MaskableTrialEvalCallback
    assert exp_manager.EvalCallback is original
    with masked_evaluation("trpo_ext"):
        assert exp_manager.EvalCallback is original


def test_zoo_train_trpo_mask_on_taxi(tmp_path: Path) -> None:
    pytest.importorskip("rl_zoo3")
    from sb3_trpo_ext.zoo import main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(
            [
                "train", "--algo", "trpo_mask", "--env", "Taxi-v4", "-f", str(tmp_path), "--seed", "0",
                "-n", "512", "--eval-freq", "256", "--eval-episodes", "1", "--n-eval-envs", "1",
                "-params", "n_envs:1", "n_steps:256", "batch_size:256",
            ]
        )  # fmt: skip
    run = tmp_path / "trpo_mask" / "Taxi-v4_1"
    assert (run / "Taxi-v4.zip").is_file() and (run / "evaluations.npz").is_file()
    assert isinstance(MaskableTRPO.load(run / "Taxi-v4.zip"), TRPO)

    # enjoy plays with the masks of the environment it creates (the Zoo's script passes none)
    played = []
    predict = MaskableTRPO.predict

    def spy(self, observation, state=None, episode_start=None, deterministic=False, action_masks=None):
        action, state = predict(self, observation, state, episode_start, deterministic, action_masks=action_masks)
        played.append((action_masks, action))
        return action, state

    with mock.patch.object(MaskableTRPO, "predict", spy), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(["enjoy", "--algo", "trpo_mask", "--env", "Taxi-v4", "-f", str(tmp_path), "-n", "60", "--no-render"])
    assert len(played) >= 60
    for masks, action in played:
        assert masks is not None and masks.reshape(len(action), -1)[np.arange(len(action)), action].all()
    assert MaskableTRPO.predict is predict  # restored after the command
