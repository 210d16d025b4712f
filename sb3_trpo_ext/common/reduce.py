"""The reducer: every mean the TRPO update takes over states goes through one, so that data-parallel ranks can
make it a mean over all ranks' states.

In one process the reducer is :data:`LOCAL`, the identity: it returns its argument unchanged (not recomputed),
so training is bit for bit what it was without it. A data-parallel reducer (``torch.distributed``) weights each
rank's local mean by its count of states and all-reduces; the update then decides every branch (skip, CG's stop,
line-search acceptance) on reduced values, identically on every rank.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch as th
import torch.distributed as dist

__all__ = ["LOCAL", "DistributedReducer", "LocalReducer", "Reducer"]


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


class DistributedReducer:
    """Means over every rank of a ``torch.distributed`` process group (gloo on CPU, NCCL on GPU): each rank's local
    mean weighted by its count of states, one ``all_reduce`` a call, summed in float64 so that the result does not
    depend on the order of the ranks beyond float64 rounding; every rank gets the same value (so every branch of
    the update is decided identically on every rank).

    :param group: the process group (None: the default group)
    """

    def __init__(self, group: Any = None):
        self.group = group

    def mean(self, local_mean: th.Tensor, count: int) -> th.Tensor:
        flat = local_mean.detach().reshape(-1).to(th.float64)
        weight = th.tensor([float(count)], dtype=th.float64, device=flat.device)
        buffer = th.cat([flat * weight, weight])
        dist.all_reduce(buffer, group=self.group)
        return (buffer[:-1] / buffer[-1]).to(local_mean.dtype).reshape(local_mean.shape)

    def moments(self, values: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        flat = values.detach().reshape(-1).to(th.float64)
        count = th.tensor(float(flat.numel()), dtype=th.float64, device=flat.device)
        buffer = th.stack([count, flat.sum(), flat.square().sum()])
        dist.all_reduce(buffer, group=self.group)
        n, total, squares = buffer.unbind()
        mean = total / n
        variance = ((squares - n * mean * mean) / (n - 1)).clamp(min=0.0)  # unbiased, as torch.std
        return mean.to(values.dtype), variance.sqrt().to(values.dtype)
