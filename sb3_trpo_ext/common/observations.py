"""Batches of observations, arrays or dicts of arrays (SB3's ``Dict`` observation spaces), one function each."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th

__all__ = ["as_batch_of_one", "index_obs", "stack_obs"]


def index_obs(obs: Any, index: th.Tensor | slice | int) -> Any:
    """The rows ``index`` of a batch of observations (a tensor or a dict of tensors)."""
    if isinstance(obs, dict):
        return {key: value[index] for key, value in obs.items()}
    return obs[index]


def stack_obs(observations: list[Any]) -> Any:
    """Stack per-step ``(n_envs, ...)`` observations (arrays or dicts of arrays) into ``(n_steps * n_envs, ...)``."""
    if isinstance(observations[0], dict):
        return {key: stack_obs([obs[key] for obs in observations]) for key in observations[0]}
    stacked = np.stack(observations)
    return stacked.reshape(-1, *stacked.shape[2:])


def as_batch_of_one(observation: Any) -> Any:
    """One observation (an array or a dict of arrays) as a batch of one, copied (a VecEnv may reuse its arrays)."""
    if isinstance(observation, dict):
        return {key: np.array(value)[None] for key, value in observation.items()}
    return np.array(observation)[None]
