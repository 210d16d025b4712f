"""A Fisher-vector product used only by the tests: forward-mode AD (``torch.func.jvp``) through a functional actor.

It is the independent reference for RecurrentTRPO's linearized-LSTM product (``recurrent.policies.
linearized_fisher_product``), which must equal it; no algorithm runs it (it recomputes the forward pass per
product, several times slower).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch as th

from sb3_trpo_ext.common.fisher import ActionFamily, DistParams, _grad, flatten, unflatten


def forward_mode_fisher_product(
    forward: Callable[[Sequence[th.Tensor]], DistParams],
    params: Sequence[th.Tensor],
    family: ActionFamily,
    damping: float = 0.0,
) -> Callable[[th.Tensor], th.Tensor]:
    """``v -> (mean_s J_s^T M_s J_s) v + damping * v`` with first derivatives only: ``J v`` by forward-mode AD
    (``torch.func.jvp``) of ``forward``, ``J^T u`` by one backward pass of the graph of ``forward(params)``,
    built once. Nothing differentiates a backward pass, so layers without a double-backward formula (cuDNN's
    and mkldnn's fused LSTM kernels) are fine, provided ``forward`` is made of operations with forward-mode
    formulas: for an LSTM, :func:`sb3_trpo_ext.recurrent.lstm.lstm_sequence` (the module's own weights through
    matmuls, sigmoid and tanh) instead of the fused kernel, which has no forward-mode formula either.

    :param forward: maps tensors shaped like ``params`` to the distribution parameters at a batch of states
        (``forward(params)`` must be differentiable w.r.t. ``params``)
    :param params: the parameters ``theta_old`` the Fisher is taken with respect to
    :param family: the action distribution family
    :param damping: Tikhonov damping added to the product
    """
    dist_params = forward(params)
    dist_at = tuple(t.detach() for t in dist_params)
    n_states = dist_at[0].shape[0]
    primals = tuple(p.detach() for p in params)

    def product(vector: th.Tensor) -> th.Tensor:
        _, jv = th.func.jvp(lambda *tensors: tuple(forward(tensors)), primals, unflatten(vector, params))
        weighted = tuple(t / n_states for t in family.fisher_times(dist_at, jv))
        return flatten(_grad(dist_params, params, weighted, retain_graph=True)) + damping * vector

    return product
