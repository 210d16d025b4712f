"""Collection's helpers: what ``TRPO.collect_rollouts`` does around its per-step loop (and MaskableTRPO's too).

* :func:`fast_distributions`, :func:`torch_threads`: the settings collection and ``learn()`` run under;
* batches of observations: :mod:`sb3_trpo_ext.common.observations`;
* :func:`fill_buffer`: SB3's ``RolloutBuffer.add`` for a whole rollout at once;
* :func:`compute_gae`: SB3's GAE recursion over plain floats (see its docstring for why it is not SB3's call);
* :func:`describe_non_finite`: what ``train()`` reports before it skips a batch with non-finite data.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer


@contextmanager
def torch_threads(n_threads: int | None) -> Iterator[None]:
    """Run the block with ``n_threads`` torch intra-op threads (None: as they are), then restore the setting."""
    previous = th.get_num_threads()
    if n_threads is not None and n_threads != previous:
        th.set_num_threads(n_threads)
    try:
        yield
    finally:
        if th.get_num_threads() != previous:
            th.set_num_threads(previous)


@contextmanager
def fast_distributions() -> Iterator[None]:
    """Skip torch.distributions' argument validation: SB3 builds a distribution per policy call, and the
    data-dependent checks cost more than a small policy's forward pass. Our own inputs are always valid."""
    previous = th.distributions.Distribution._validate_args
    th.distributions.Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        th.distributions.Distribution.set_default_validate_args(previous)


def compute_gae(buffer: RolloutBuffer, last_values: np.ndarray, dones: np.ndarray) -> None:
    """SB3's ``compute_returns_and_advantage`` (GAE, Schulman et al. 2016), the same recursion over plain floats:
    SB3 runs it as numpy operations on ``n_envs``-sized arrays, whose per-call overhead is most of its cost.

    Not SB3's call itself: SB3 computes in float32, this in float64 (equal to rounding, tests/test_trpo.py), and
    replacing it would change every run's advantages in the last bits (``tests/test_bit_identical.py``)."""
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


def describe_non_finite(buffer: RolloutBuffer) -> str:
    """What is non-finite in a filled rollout buffer (and its vine rollout set), or "" if nothing: for each
    array, how many entries and at which (step, env) positions, e.g. ``rewards: 1 at (step, env) [(299, 0)]``."""
    arrays: dict[str, np.ndarray] = {}
    if isinstance(buffer.observations, dict):
        arrays.update({f"observations[{key!r}]": value for key, value in buffer.observations.items()})
    else:
        arrays["observations"] = buffer.observations
    for name in ("rewards", "values", "advantages", "returns"):
        arrays[name] = getattr(buffer, name)
    rollout_set = getattr(buffer, "rollout_set", None)
    if rollout_set is not None:
        arrays["vine Q estimates (state, action)"] = rollout_set.q_values.cpu().numpy()
    problems = []
    for name, array in arrays.items():
        bad = ~np.isfinite(array)
        if bad.any():
            where = sorted({tuple(int(i) for i in index[:2]) for index in np.argwhere(bad)})
            shown = ", ".join(map(str, where[:10])) + (", ..." if len(where) > 10 else "")
            label = "" if name.startswith("vine") else " at (step, env)"
            problems.append(f"{name}: {int(bad.sum())}{label} [{shown}]")
    return "; ".join(problems)


def fill_buffer(
    buffer: RolloutBuffer,
    observations: list[Any],
    actions: np.ndarray,
    rewards: list[np.ndarray],
    episode_starts: list[np.ndarray],
    values: th.Tensor,
    log_probs: th.Tensor,
) -> None:
    """Add a whole rollout (``n_steps`` lists, ``(n_steps, n_envs, ...)`` arrays) to ``buffer``: SB3's own
    ``RolloutBuffer.add`` as whole-array copies when it fills the buffer exactly; a custom buffer's ``add`` (or a
    partial rollout) is called step by step."""
    n_steps = len(observations)
    if type(buffer).add is RolloutBuffer.add and n_steps == buffer.buffer_size:
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
