"""Merging the running statistics of every data-parallel rank's :class:`~stable_baselines3.common.vec_env.VecNormalize`.

Each rank's ``VecNormalize`` updates its statistics (``obs_rms``: one
:class:`~stable_baselines3.common.running_mean_std.RunningMeanStd`, or a dict of them for the ``norm_obs_keys`` of a
Dict observation; ``ret_rms``: the discounted returns) at every step from its own environments only. Once per rollout
:meth:`VecNormalizeMerger.merge` makes every rank's statistics those that one ``RunningMeanStd`` would hold had it seen
every rank's data since the last merge, on top of the shared statistics of the last merge (the *base*).

Why changes and not whole statistics: after a merge every rank holds the same statistics, so combining whole
statistics at the next merge would count that shared history once per rank. Each rank therefore recovers the batch
that turned the base into its current statistics (count ``c``, mean ``b``, sum of squared deviations ``M2``) by
inverting ``RunningMeanStd.update_from_moments`` (Chan, Golub & LeVeque's parallel variance formula,
https://en.wikipedia.org/wiki/Algorithms_for_calculating_variance#Parallel_algorithm). With the base ``(n0, m0, v0)``
and the current statistics ``(n1, m1, v1)``::

    c     = n1 - n0
    delta = (m1 - m0) * n1 / c                       # b - m0   (from m1 = m0 + delta * c / n1)
    M2    = n1 * v1 - n0 * v0 - delta**2 * n0 * c / n1  # (from n1 v1 = n0 v0 + M2 + delta**2 n0 c / n1)

Batches combine exactly through their power sums ``(c, sum x, sum x**2)``; these are taken about the shared base
mean ``s`` (rank 0's, the same on every rank) rather than about 0, which keeps ``sum (x - s)**2 - C * d**2`` free of
the cancellation that ``mean**2 >> var`` would cause::

    (c, c * (b - s), M2 + c * (b - s)**2)   summed over ranks -> (C, S1, S2)
    d = S1 / C,   global batch mean = s + d,   global batch M2 = S2 - S1 * d

and the global batch is applied to the base with SB3's own rule (``update_from_moments``), so the result equals, to
float64 rounding, a single ``RunningMeanStd`` that saw the base and then every rank's data. Every rank computes it
from the same base and the same all-reduced sums with the same operations, so every rank ends bit for bit equal.

The statistics are written into the venv's existing ``RunningMeanStd`` objects (their ``mean``, ``var`` and
``count``); their class is never changed, so ``vecnormalize.pkl`` stays loadable by plain SB3.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecNormalize

__all__ = ["VecNormalizeMerger"]


def _statistics(venv: VecNormalize) -> list[tuple[str, RunningMeanStd]]:
    """The statistics ``venv`` updates while ``training``, in an order every rank agrees on.

    ``obs_rms`` only with ``norm_obs`` (without it SB3 neither updates nor even creates it); its dict entries sorted by
    key. ``ret_rms`` always: SB3's ``step_wait`` updates it whenever ``training``, ``norm_reward`` or not (the flag
    only decides whether rewards are divided by it), so merging it keeps every rank's statistics (and the saved
    ``vecnormalize.pkl``) those of one process.
    """
    stats: list[tuple[str, RunningMeanStd]] = []
    if venv.norm_obs:
        obs_rms: dict[str, RunningMeanStd] | RunningMeanStd = venv.obs_rms
        if isinstance(obs_rms, dict):
            stats.extend((f"obs_rms[{key!r}]", obs_rms[key]) for key in sorted(obs_rms))
        else:
            stats.append(("obs_rms", obs_rms))
    stats.append(("ret_rms", venv.ret_rms))
    return stats


def _snapshot(rms: RunningMeanStd) -> RunningMeanStd:
    """A detached copy of ``rms`` (float64 arrays of its own shape, a float count)."""
    copy = RunningMeanStd(shape=np.shape(rms.mean))
    copy.mean = np.array(rms.mean, dtype=np.float64)
    copy.var = np.array(rms.var, dtype=np.float64)
    copy.count = float(rms.count)
    return copy


def _change_since(base: RunningMeanStd, current: RunningMeanStd) -> tuple[float, np.ndarray, np.ndarray]:
    """The batch ``(count, mean - base.mean, M2)`` that ``update_from_moments`` applied to ``base`` to give
    ``current`` (several updates compose into one batch: the parallel formula is associative).

    Inverts ``n1 = n0 + c``, ``m1 = m0 + delta * c / n1`` and ``n1 v1 = n0 v0 + M2 + delta**2 n0 c / n1``. The mean
    is returned relative to the base mean (``delta``), exactly as the formula has it. A zero count (nothing was seen:
    SB3 did not update) is no change. A negative count (the statistics went backwards, e.g. replaced or reloaded
    behind the merger's back) is returned as is for the caller to report. ``M2`` is clipped at 0 (float64 rounding
    of a constant component).
    """
    shape = np.shape(base.mean)
    n0, n1 = float(base.count), float(current.count)
    c = n1 - n0
    if c <= 0.0:
        return c, np.zeros(shape), np.zeros(shape)
    delta = (np.asarray(current.mean, np.float64) - base.mean) * (n1 / c)
    m2 = n1 * np.asarray(current.var, np.float64) - n0 * base.var - np.square(delta) * (n0 * c / n1)
    return c, delta, np.maximum(m2, 0.0)


class VecNormalizeMerger:
    """Keeps the statistics of the last merge of one rank's VecNormalize and merges each rank's change since then.

    One merger per rank, built on every rank before its venv is stepped for the first rollout to merge (the
    statistics at construction are the base). :meth:`merge` is a collective: every rank calls it once per rollout, in
    the same order. Each call makes one ``all_reduce_sum`` call (one buffer for all statistics) and the first call also
    one ``broadcast_from_rank0`` call before it.

    :param venv: this rank's ``VecNormalize``; ``norm_obs``, ``norm_obs_keys`` and the observation shapes must be the
        same on every rank (they fix the buffers' layout)
    :param all_reduce_sum: a float64 array -> its elementwise sum over ranks (the same result on every rank), e.g.
        ``torch.distributed.all_reduce`` on a float64 tensor
    :param broadcast_from_rank0: a float64 array -> rank 0's array on every rank, e.g. ``torch.distributed.broadcast``
        with ``src=0``
    """

    def __init__(
        self,
        venv: VecNormalize,
        all_reduce_sum: Callable[[np.ndarray], np.ndarray],
        broadcast_from_rank0: Callable[[np.ndarray], np.ndarray],
    ) -> None:
        self.venv = venv
        self.all_reduce_sum = all_reduce_sum
        self.broadcast_from_rank0 = broadcast_from_rank0
        stats = _statistics(venv)
        self._names = [name for name, _ in stats]
        self._base = [_snapshot(rms) for _, rms in stats]
        # Until the first merge the bases may differ between ranks (each rank's VecNormalize saw its own data before
        # training): the first merge adopts rank 0's. From then on every rank's base is the same merge result.
        self._base_shared = False

    def merge(self) -> None:
        """Make every rank's statistics the base plus every rank's change since it, then make that the new base.

        A collective: call it on every rank, once per rollout, in the same order (a rank that skips it leaves the
        others waiting in ``all_reduce_sum``).

        A rank whose venv is not ``training`` contributes no change (SB3 does not update its statistics; anything
        written into them out of band is discarded), but still makes the same collective calls, so that the ranks
        stay in step; like every rank it then holds the merged statistics. If the statistics of a ``training`` rank
        went backwards since the base (a smaller count: replaced or reloaded without a new merger), every rank raises
        :class:`RuntimeError` after the all-reduce (all together, rather than one rank leaving the others waiting).
        """
        stats = _statistics(self.venv)
        names = [name for name, _ in stats]
        if names != self._names:
            raise RuntimeError(
                f"VecNormalize's statistics changed from {self._names} to {names} since the merger was built"
            )
        for (name, rms), base in zip(stats, self._base):
            if np.shape(rms.mean) != np.shape(base.mean):
                raise RuntimeError(f"{name} changed shape from {np.shape(base.mean)} to {np.shape(rms.mean)}")

        # This rank's change since its own base (before the base is replaced by rank 0's on the first merge).
        changes = [_change_since(base, rms) for (_, rms), base in zip(stats, self._base)]
        went_backwards = self.venv.training and any(count < 0.0 for count, _, _ in changes)

        own_means = [base.mean for base in self._base]
        if not self._base_shared:
            self._base = self._decode_base(self._exchange(self.broadcast_from_rank0, self._encode_base()))
            self._base_shared = True

        # One buffer: [number of ranks whose statistics went backwards] + per statistic
        # (c, c * (b - s), M2 + c * (b - s)**2) about the shared base mean s (see the module docstring).
        parts: list[np.ndarray] = [np.array([1.0 if went_backwards else 0.0])]
        for (count, delta, m2), own_mean, base in zip(changes, own_means, self._base):
            if not self.venv.training or count <= 0.0:
                count, delta, m2 = 0.0, np.zeros_like(base.mean), np.zeros_like(base.mean)
            # b - s = (own base mean - s) + delta: exactly delta once the bases are shared (own base mean == s).
            offset = (own_mean - base.mean) + delta
            parts += [np.array([count]), np.ravel(count * offset), np.ravel(m2 + count * np.square(offset))]
        total = self._exchange(self.all_reduce_sum, np.concatenate(parts))

        if total[0] > 0.0:
            raise RuntimeError(
                f"the VecNormalize statistics of {int(total[0])} rank(s) have a smaller count than at the last merge "
                "(replaced or reloaded?): build a new VecNormalizeMerger after changing them"
            )
        position = 1
        for (_, rms), base in zip(stats, self._base):
            shape, size = np.shape(base.mean), int(np.size(base.mean))
            big_c = float(total[position])
            s1 = total[position + 1 : position + 1 + size].reshape(shape)
            s2 = total[position + 1 + size : position + 1 + 2 * size].reshape(shape)
            position += 1 + 2 * size
            merged = _snapshot(base)
            if big_c > 0.0:
                d = s1 / big_c
                batch_var = np.maximum(s2 - s1 * d, 0.0) / big_c
                # SB3's own combination rule, so the result is what one RunningMeanStd would compute.
                merged.update_from_moments(base.mean + d, batch_var, big_c)
            # Into the venv's own objects (class unchanged: the pickle stays plain SB3); the base gets its own copy.
            rms.mean = np.array(merged.mean, dtype=np.float64).reshape(shape)
            rms.var = np.array(merged.var, dtype=np.float64).reshape(shape)
            rms.count = float(merged.count)
        self._base = [_snapshot(rms) for _, rms in stats]

    def _encode_base(self) -> np.ndarray:
        """This rank's base as one float64 buffer: per statistic ``count, mean, var``."""
        parts: list[np.ndarray] = []
        for base in self._base:
            parts += [np.array([base.count]), np.ravel(base.mean), np.ravel(base.var)]
        return np.concatenate(parts)

    def _decode_base(self, buffer: np.ndarray) -> list[RunningMeanStd]:
        """The inverse of :meth:`_encode_base` (for rank 0's buffer)."""
        bases: list[RunningMeanStd] = []
        position = 0
        for own in self._base:
            shape, size = np.shape(own.mean), int(np.size(own.mean))
            base = RunningMeanStd(shape=shape)
            base.count = float(buffer[position])
            base.mean = buffer[position + 1 : position + 1 + size].reshape(shape).copy()
            base.var = buffer[position + 1 + size : position + 1 + 2 * size].reshape(shape).copy()
            position += 1 + 2 * size
            bases.append(base)
        return bases

    @staticmethod
    def _exchange(collective: Callable[[np.ndarray], np.ndarray], buffer: np.ndarray) -> np.ndarray:
        """``collective(buffer)`` as a float64 array of the buffer's shape (a result of another size means the
        ranks' layouts differ)."""
        result = np.asarray(collective(np.ascontiguousarray(buffer, dtype=np.float64)), dtype=np.float64)
        if result.shape != buffer.shape:
            raise RuntimeError(
                f"a collective returned shape {result.shape} for a buffer of shape {buffer.shape}: do all ranks "
                "use the same norm_obs, norm_obs_keys and observation shapes?"
            )
        return result
