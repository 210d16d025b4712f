"""Collection's tail in whole-rollout operations (the speed layer's part of ``TRPO.collect_rollouts``): SB3's
``RolloutBuffer.add`` for a whole rollout at once, and SB3's GAE recursion over plain floats."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer

__all__ = ["compute_gae", "fill_buffer"]


def compute_gae(buffer: RolloutBuffer, last_values: np.ndarray, dones: np.ndarray) -> None:
    """SB3's ``compute_returns_and_advantage`` (GAE, Schulman et al. 2016), the same recursion over plain floats:
    SB3 runs it as numpy operations on ``n_envs``-sized arrays, whose per-call overhead is most of its cost.

    Not SB3's call itself: SB3 computes in float32, this in float64 (equal to rounding, tests/unit/test_trpo.py), and
    replacing it would change every run's advantages in the last bits (``tests/integration/test_bit_identical.py``)."""
    gamma, gae_lambda = buffer.gamma, buffer.gae_lambda
    n_steps, n_envs = buffer.rewards.shape
    rewards, values = buffer.rewards.T.tolist(), buffer.values.T.tolist()
    starts = buffer.episode_starts.T.tolist()
    for env in range(n_envs):
        r, v, start = rewards[env], values[env], starts[env]
        column = [0.0] * n_steps
        next_value, next_non_terminal, running = float(last_values[env]), 1.0 - float(dones[env]), 0.0
        for t in range(n_steps - 1, -1, -1):
            delta = r[t] + gamma * next_value * next_non_terminal - v[t]
            running = delta + gamma * gae_lambda * next_non_terminal * running
            column[t] = running
            next_value, next_non_terminal = v[t], 1.0 - start[t]
        buffer.advantages[:, env] = column
    buffer.returns = buffer.advantages + buffer.values


def fill_buffer(
    buffer: RolloutBuffer,
    observations: list[Any],
    actions: np.ndarray,
    rewards: list[np.ndarray],
    episode_starts: list[np.ndarray],
    values: th.Tensor,
    log_probs: th.Tensor,
    action_masks: list[np.ndarray] | None = None,
    whole: bool = True,
) -> None:
    """Add a whole rollout (``n_steps`` lists, ``(n_steps, n_envs, ...)`` arrays) to ``buffer``: SB3's own
    ``RolloutBuffer.add`` as whole-array copies when it fills the buffer exactly; a custom buffer's ``add`` (or a
    partial rollout, or ``whole=False``) is called step by step, with each step's ``action_masks`` (a masked
    buffer, e.g. sb3-contrib's ``MaskableRolloutBuffer``) where given."""
    n_steps = len(observations)
    if action_masks:
        for step in range(n_steps):
            buffer.add(  # type: ignore[call-arg]  # a masked buffer's add takes the masks
                observations[step], actions[step], rewards[step], episode_starts[step], values[step],
                log_probs[step], action_masks=action_masks[step],
            )  # fmt: skip
        return
    if whole and type(buffer).add is RolloutBuffer.add and n_steps == buffer.buffer_size:
        buffer.observations[:] = np.stack(observations).reshape(buffer.observations.shape)
        buffer.actions[:] = actions
        buffer.rewards[:] = np.stack(rewards)
        buffer.episode_starts[:] = np.stack(episode_starts)
        buffer.values[:] = values.cpu().numpy()
        buffer.log_probs[:] = log_probs.cpu().numpy()
        buffer.pos, buffer.full = n_steps, True
        return
    for step in range(n_steps):
        buffer.add(
            observations[step], actions[step], rewards[step], episode_starts[step], values[step], log_probs[step]
        )
