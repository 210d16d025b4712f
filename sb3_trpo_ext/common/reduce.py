"""The reducer: every mean the TRPO update takes over states goes through one, so that data-parallel ranks can
make it a mean over all ranks' states.

In one process the reducer is :data:`LOCAL`, the identity: it returns its argument unchanged (not recomputed),
so training is bit for bit what it was without it. A data-parallel reducer (``torch.distributed``) weights each
rank's local mean by its count of states and all-reduces; the update then decides every branch (skip, CG's stop,
line-search acceptance) on reduced values, identically on every rank.
"""

from __future__ import annotations

from typing import Protocol

import torch as th

__all__ = ["LOCAL", "LocalReducer", "Reducer"]


class Reducer(Protocol):
    """Means over the states of the whole batch, however it is split."""

    def mean(self, local_mean: th.Tensor, count: int) -> th.Tensor:
        """The mean over every state of ``local_mean``, a mean over this process's ``count`` states (any shape:
        a scalar, a gradient, a Fisher-vector product)."""
        ...

    def moments(self, values: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """The mean and the (unbiased) standard deviation of ``values`` over every process's values."""
        ...


class LocalReducer:
    """The reducer of one process: every mean is already global."""

    def mean(self, local_mean: th.Tensor, count: int) -> th.Tensor:
        return local_mean

    def moments(self, values: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        return values.mean(), values.std()


#: The reducer of one process.
LOCAL: Reducer = LocalReducer()
