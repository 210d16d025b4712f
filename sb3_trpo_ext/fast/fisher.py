"""The Fisher-vector product of a plain MLP actor written out (the speed layer's ``fisher="analytic"`` route for
SB3's ``MlpPolicy`` on flat observations): the same product as
:func:`sb3_trpo_ext.common.fisher.analytic_fisher_product`, without autograd."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch as th
from torch import nn

from sb3_trpo_ext.common.fisher import (
    ActionFamily,
    CategoricalFamily,
    DistParams,
    GaussianFamily,
    MultiCategoricalFamily,
    flatten,
    unflatten,
)
from sb3_trpo_ext.fast.mlp import MASKED_LOGIT, TorchMlp

__all__ = ["mlp_fisher_product"]


def mlp_fisher_product(
    linears: Sequence[nn.Linear],
    tanh: Sequence[bool],
    log_std: th.Tensor | None,
    obs: th.Tensor,
    params: Sequence[th.Tensor],
    family: ActionFamily,
    damping: float = 0.0,
    action_masks: th.Tensor | None = None,
) -> Callable[[th.Tensor], th.Tensor]:
    """``v -> (mean_s J_s^T M_s J_s) v + damping * v`` for a plain MLP actor, with ``J v`` (tangents pushed
    forward layer by layer) and ``J^T u`` (the chain rule backwards) written out: no autograd graph, about a
    third of the operations of :func:`analytic_fisher_product`, the same product.

    The head's raw outputs stand for the distribution's parameters: for categorical families ``M`` applied to
    a tangent of the raw logits is the Fisher in the raw logits (the softmax's Jacobian is absorbed), for the
    Gaussian the head is the mean and ``log_std`` a state-independent parameter.

    :param linears: the actor's Linear layers, the action head last
    :param tanh: for each activation between them, True for tanh, False for ReLU
    :param log_std: the Gaussian's ``log_std`` parameter, else None
    :param obs: the states, flat
    :param params: the actor's parameters, in the order of the flat vectors: every Linear's ``weight`` and
        ``bias`` and ``log_std``, each exactly once
    :param family: the action distribution family
    :param damping: Tikhonov damping added to the product
    :param action_masks: for sb3-contrib's masked distributions, True where an action is valid (one row per state):
        the Fisher is taken at the masked probabilities (an invalid action has probability 0, so its logit's row
        and column of ``M`` vanish: the raw head's Jacobian serves as it is), else None
    """
    mlp = TorchMlp(linears, tanh)
    inputs, head = mlp.forward(obs)  # each Linear's input at theta_old
    with th.no_grad():
        if action_masks is not None:
            head = th.where(action_masks.reshape(head.shape).bool(), head, th.tensor(MASKED_LOGIT, dtype=head.dtype))
        if isinstance(family, GaussianFamily):
            assert log_std is not None
            at: DistParams = (head, log_std.detach().expand_as(head))
        else:
            at = (th.log_softmax(head, dim=-1),) if isinstance(family, CategoricalFamily) else (head,)
            if isinstance(family, MultiCategoricalFamily):
                blocks = th.split(head, family.action_dims, dim=-1)
                at = (th.cat([th.log_softmax(block, dim=-1) for block in blocks], dim=-1),)
    n_states = obs.shape[0]
    position = {id(p): i for i, p in enumerate(params)}
    weights_at = [position[id(layer.weight)] for layer in linears]
    biases_at = [position[id(layer.bias)] for layer in linears]
    slopes = mlp.slopes(inputs)  # at theta_old, once for every product of the conjugate gradient

    def product(vector: th.Tensor) -> th.Tensor:
        with th.no_grad():
            pieces = unflatten(vector, params)
            tangent = mlp.jvp(inputs, slopes, [pieces[i] for i in weights_at], [pieces[i] for i in biases_at])
            if isinstance(family, GaussianFamily):
                jv: DistParams = (tangent, pieces[position[id(log_std)]].expand_as(tangent))
            else:
                jv = (tangent,)
            weighted = [t / n_states for t in family.fisher_times(at, jv)]
            result = [th.zeros_like(p) for p in params]
            if isinstance(family, GaussianFamily):
                result[position[id(log_std)]] = weighted[1].sum(dim=0)
            d_weights, d_biases = mlp.vjp(inputs, weighted[0], slopes)
            for index in range(len(linears)):
                result[weights_at[index]], result[biases_at[index]] = d_weights[index], d_biases[index]
            return flatten(result) + damping * vector

    return product
