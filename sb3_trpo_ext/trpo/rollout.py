"""Collection's helpers: what ``TRPO.collect_rollouts`` does around its per-step loop (and MaskableTRPO's too).

* :func:`fast_distributions`, :func:`torch_threads`: the settings collection and ``learn()`` run under;
* batches of observations: :mod:`sb3_trpo_ext.common.observations`;
* the whole-rollout buffer fill and GAE: the speed layer's (:mod:`sb3_trpo_ext.fast.rollout`);
* :func:`describe_non_finite`: what ``train()`` reports before it skips a batch with non-finite data.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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
