"""Type check of the public API (``make test`` runs mypy on this file; it is never executed).

Uses every symbol ``sb3_trpo_ext`` exports as a user would; ``assert_type`` pins what the annotations promise, and
mypy's strict options for this file (pyproject.toml) make an unannotated public function or argument an error.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from typing_extensions import assert_type

import sb3_trpo_ext
from sb3_trpo_ext import TRPO, MaskableTRPO, RecurrentTRPO, UnsafeCheckpointError, add_safe_globals
from sb3_trpo_ext.common.vine import VineBranchWrapper, vine_subproc_vec_env
from sb3_trpo_ext.sim_state import EnvState, check_restorable, check_round_trip, get_state, set_state


def trpo(path: Path) -> None:
    model = TRPO("MlpPolicy", "CartPole-v1", target_kl=0.01, sampling="vine", num_threads="auto", seed=0)
    assert_type(model.learn(1_000, progress_bar=False), TRPO)
    action, state = model.predict(np.zeros(4, dtype=np.float32), deterministic=True)
    assert_type(action, np.ndarray)
    model.save(path)
    assert_type(TRPO.load(path, env=None, device="cpu"), TRPO)
    model.set_parameters(str(path), exact_match=True)
    assert isinstance(model, BaseAlgorithm)


def other_algorithms() -> None:
    masked = MaskableTRPO("MlpPolicy", "CartPole-v1")
    assert_type(masked.learn(1_000), MaskableTRPO)
    recurrent = RecurrentTRPO("MlpLstmPolicy", "CartPole-v1")
    assert_type(recurrent.learn(1_000), RecurrentTRPO)


def safe_loading() -> None:
    add_safe_globals([np.float64])
    error = UnsafeCheckpointError("data['policy_class']", "os.system")
    assert_type(error.global_name, str)
    assert_type(sb3_trpo_ext.__version__, str)


def simulator_state() -> None:
    env = gym.make("CartPole-v1")
    check_restorable(env)
    assert_type(check_round_trip(env, n_steps=5), float)
    state = get_state(env)
    assert_type(state, EnvState)
    set_state(env, state)
    venv = vine_subproc_vec_env([lambda: gym.make("Pendulum-v1")], start_method="fork")
    VineBranchWrapper(gym.make("Pendulum-v1"))
    venv.close()
