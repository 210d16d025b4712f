"""Action-distribution families: true KL and Fisher-vector products (paper Appendix C.1).

The policy maps parameters ``theta`` to the parameters ``mu(theta)`` of its action distribution at
every state. The Fisher matrix of the mean KL is ``F = mean_s J_s^T M_s J_s``, with ``J_s`` the
Jacobian of ``mu`` at state ``s`` and ``M_s`` the closed-form Fisher of the distribution in its own
parameters. :func:`analytic_fisher_product` evaluates ``F v`` as a Jacobian-vector product ``J v``,
a per-state multiplication by ``M`` and a vector-Jacobian product ``J^T u``, without differentiating
the KL twice; :func:`autograd_fisher_product` is the reference: the Hessian of the mean KL at ``theta_old``.

The routes that run, by the algorithms' ``fisher`` argument (:data:`FISHER_PRODUCTS`, the one registry):

* ``"analytic"``: first derivatives and the closed-form ``M`` only. A plain MLP actor (SB3's ``MlpPolicy`` on
  flat observations) takes :func:`sb3_trpo_ext.fast.fisher.mlp_fisher_product` (the speed layer: ``J v`` and ``J^T u`` written out); an LSTM actor
  (RecurrentTRPO) takes :func:`sb3_trpo_ext.recurrent.policies.linearized_fisher_product` (the recurrence
  linearized once per update); every other actor (CNNs, Dict observations, masked policies) takes
  :func:`analytic_fisher_product` (both products from autograd). All three compute the same product (tested).
* ``"autograd"``: :func:`autograd_fisher_product`, the Hessian of the KL by double backprop (the reference;
  RecurrentTRPO's goes through its functional LSTM, since the fused kernels have no double backward).

Parameters per family (each tensor has the batch as first dimension):

* ``gaussian`` (diagonal Gaussian, also gSDE and tanh-squashed): ``(mean, log_std)``,
  ``M = diag(1 / sigma^2, 2)``.
* ``categorical``: normalised logits (log-probabilities), ``M = diag(p) - p p^T``.
* ``multicategorical``: concatenated normalised logits, block-diagonal categorical ``M``.
* ``bernoulli``: logits, ``M = diag(p (1 - p))``.

Every KL here is the KL of the whole action distribution: summed over action dimensions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch as th
import torch.nn.functional as F
from stable_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    Distribution,
    MultiCategoricalDistribution,
    StateDependentNoiseDistribution,
)

DistParams = tuple[th.Tensor, ...]


class ActionFamily:
    """Closed forms for one family of action distributions."""

    name: str

    def params(self, distribution: Distribution) -> DistParams:
        """The parameters of an SB3 distribution (differentiable w.r.t. the policy)."""
        raise NotImplementedError

    def kl(self, old: DistParams, new: DistParams) -> th.Tensor:
        """``KL(old || new)`` per state, summed over action dimensions."""
        raise NotImplementedError

    def fisher_times(self, at: DistParams, tangent: DistParams) -> DistParams:
        """``M_s @ tangent_s`` for every state ``s``, ``M_s`` the Fisher at ``at``."""
        raise NotImplementedError


def _torch_distribution(distribution: Distribution) -> Any:
    """The torch distribution inside an SB3 one (SB3 types it as the union over its subclasses' kinds)."""
    return distribution.distribution


class GaussianFamily(ActionFamily):
    name = "gaussian"

    def params(self, distribution: Distribution) -> DistParams:
        normal = _torch_distribution(distribution)
        return normal.loc, normal.scale.log()

    def kl(self, old: DistParams, new: DistParams) -> th.Tensor:
        (mean_old, log_std_old), (mean_new, log_std_new) = old, new
        var_ratio_and_shift = (th.exp(2 * log_std_old) + (mean_old - mean_new) ** 2) / (2 * th.exp(2 * log_std_new))
        return (log_std_new - log_std_old + var_ratio_and_shift - 0.5).sum(dim=-1)

    def fisher_times(self, at: DistParams, tangent: DistParams) -> DistParams:
        _, log_std = at
        d_mean, d_log_std = tangent
        return d_mean * th.exp(-2 * log_std), 2.0 * d_log_std


def _categorical_fisher_times(log_probs: th.Tensor, tangent: th.Tensor) -> th.Tensor:
    probs = log_probs.exp()
    return probs * tangent - probs * (probs * tangent).sum(dim=-1, keepdim=True)


class CategoricalFamily(ActionFamily):
    name = "categorical"

    def params(self, distribution: Distribution) -> DistParams:
        return (_torch_distribution(distribution).logits,)  # torch normalises them: log-probabilities

    def kl(self, old: DistParams, new: DistParams) -> th.Tensor:
        return (old[0].exp() * (old[0] - new[0])).sum(dim=-1)

    def fisher_times(self, at: DistParams, tangent: DistParams) -> DistParams:
        return (_categorical_fisher_times(at[0], tangent[0]),)


class MultiCategoricalFamily(ActionFamily):
    name = "multicategorical"

    def __init__(self, action_dims: Sequence[int]):
        self.action_dims = [int(n) for n in action_dims]

    def params(self, distribution: Distribution) -> DistParams:
        return (th.cat([categorical.logits for categorical in _torch_distribution(distribution)], dim=-1),)

    def kl(self, old: DistParams, new: DistParams) -> th.Tensor:
        # Each block is normalised on its own, so the summed KL is one sum over all logits.
        return (old[0].exp() * (old[0] - new[0])).sum(dim=-1)

    def fisher_times(self, at: DistParams, tangent: DistParams) -> DistParams:
        blocks = zip(th.split(at[0], self.action_dims, dim=-1), th.split(tangent[0], self.action_dims, dim=-1))
        return (th.cat([_categorical_fisher_times(lp, t) for lp, t in blocks], dim=-1),)


class BernoulliFamily(ActionFamily):
    name = "bernoulli"

    def params(self, distribution: Distribution) -> DistParams:
        return (_torch_distribution(distribution).logits,)

    def kl(self, old: DistParams, new: DistParams) -> th.Tensor:
        (logits_old,), (logits_new,) = old, new
        p_old = th.sigmoid(logits_old)
        # log p = logsigmoid(z), log(1 - p) = logsigmoid(-z): stable for large |z|
        kl = p_old * (F.logsigmoid(logits_old) - F.logsigmoid(logits_new)) + (1 - p_old) * (
            F.logsigmoid(-logits_old) - F.logsigmoid(-logits_new)
        )
        return kl.sum(dim=-1)

    def fisher_times(self, at: DistParams, tangent: DistParams) -> DistParams:
        p = th.sigmoid(at[0])
        return (p * (1 - p) * tangent[0],)


def action_family(distribution: Distribution) -> ActionFamily:
    """The :class:`ActionFamily` of an SB3 action distribution."""
    if isinstance(distribution, (DiagGaussianDistribution, StateDependentNoiseDistribution)):
        return GaussianFamily()  # also SquashedDiagGaussian: KL is invariant under the tanh bijection
    if isinstance(distribution, CategoricalDistribution):
        return CategoricalFamily()
    if isinstance(distribution, MultiCategoricalDistribution):
        return MultiCategoricalFamily(distribution.action_dims)
    if isinstance(distribution, BernoulliDistribution):
        return BernoulliFamily()
    raise TypeError(
        f"Unsupported action distribution {type(distribution).__name__}: TRPO supports diagonal Gaussian, "
        "gSDE, Categorical, MultiCategorical and Bernoulli distributions"
    )


def flatten(tensors: Sequence[th.Tensor]) -> th.Tensor:
    """Concatenate tensors into one flat vector."""
    return th.cat([t.reshape(-1) for t in tensors])


def unflatten(vector: th.Tensor, like: Sequence[th.Tensor]) -> tuple[th.Tensor, ...]:
    """Split a flat vector into tensors shaped like ``like``."""
    pieces = th.split(vector, [t.numel() for t in like])
    return tuple(piece.view_as(t) for piece, t in zip(pieces, like, strict=True))


def _grad(
    outputs: Sequence[th.Tensor], inputs: Sequence[th.Tensor], grad_outputs: Sequence[th.Tensor], **kwargs: Any
) -> tuple[th.Tensor, ...]:
    """Vector-Jacobian product; inputs the outputs do not depend on get zeros."""
    return th.autograd.grad(outputs, inputs, grad_outputs, allow_unused=True, materialize_grads=True, **kwargs)


#: autograd nodes that stand for a missing derivative: ``once_differentiable``'s delayed error, a formula not
#: implemented. Where they sit off the path to what is differentiated next, autograd skips them: a silent zero.
_REFUSING_NODES = ("Error", "DelayedError", "NotImplemented")


def _broken_graphs(grads: Sequence[th.Tensor | None], targets: Sequence[th.Tensor]) -> list[int]:
    """Indices of the gradients whose graph cannot be differentiated w.r.t. ``targets``: no graph at all, no path
    to any target, or a node that refuses the derivative (one walk over the graph, each node visited once)."""
    target_ids = {id(t) for t in targets}
    reaches: dict[Any, bool] = {}
    refuses: dict[Any, bool] = {}
    for root in {grad.grad_fn for grad in grads if grad is not None and grad.grad_fn is not None}:
        stack = [root]
        while stack:  # iterative post-order: graphs through long sequences are deep
            node = stack[-1]
            if node in reaches:
                stack.pop()
                continue
            children = [child for child, _ in node.next_functions if child is not None]
            pending = [child for child in children if child not in reaches]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            variable = getattr(node, "variable", None)  # AccumulateGrad: a leaf
            reaches[node] = (variable is not None and id(variable) in target_ids) or any(reaches[c] for c in children)
            refuses[node] = type(node).__name__ in _REFUSING_NODES or any(refuses[c] for c in children)
    return [
        index
        for index, grad in enumerate(grads)
        if grad is not None and (grad.grad_fn is None or not reaches[grad.grad_fn] or refuses[grad.grad_fn])
    ]


def _differentiable_grad(
    outputs: Sequence[th.Tensor],
    inputs: Sequence[th.Tensor],
    grad_outputs: Sequence[th.Tensor],
    then_wrt: Sequence[th.Tensor],
) -> tuple[th.Tensor, ...]:
    """A backward pass with its own graph (``create_graph``), to be differentiated again w.r.t. ``then_wrt``;
    inputs the outputs do not depend on get zeros.

    :raises RuntimeError: if a layer refuses the second derivative (a fused kernel without a double-backward
        formula, a custom autograd function computed on plain tensors or marked ``once_differentiable``): autograd
        would silently give zero for every parameter behind that layer (``F v = 0`` when it covers the network)
    """
    grads = th.autograd.grad(outputs, inputs, grad_outputs, create_graph=True, retain_graph=True, allow_unused=True)
    refused = _broken_graphs(grads, then_wrt)
    if refused:
        shapes = [tuple(inputs[index].shape) for index in refused]
        raise RuntimeError(
            "This Fisher-vector product differentiates a backward pass (a second derivative of the policy), but a "
            f"layer refused the second derivative: the gradients of the parameters {refused} (shapes {shapes}) have "
            "no graph, and their Fisher would be zero. Use a route with first derivatives only: fisher='analytic' "
            "(analytic_fisher_product, mlp_fisher_product, or RecurrentTRPO's linearized LSTM product)."
        )
    return tuple(th.zeros_like(x) if grad is None else grad for x, grad in zip(inputs, grads, strict=True))


def analytic_fisher_product(
    dist_params: DistParams,
    params: Sequence[th.Tensor],
    family: ActionFamily,
    damping: float = 0.0,
) -> Callable[[th.Tensor], th.Tensor]:
    """``v -> (mean_s J_s^T M_s J_s) v + damping * v`` for flat vectors ``v``.

    ``J^T u`` is one backward pass through the graph of ``dist_params``. ``J v`` is the derivative of
    the linear map ``u -> J^T u`` (built once, with ``create_graph``) along ``v``: an exact
    Jacobian-vector product that reuses the stored forward pass, where PyTorch's forward mode would
    recompute it (measured about 2x slower on MLP policies). Neither product differentiates the KL
    twice: only the closed-form ``M`` carries the curvature.

    :param dist_params: distribution parameters at a batch of states, with their autograd graph to ``params``
    :param params: the parameters ``theta_old`` the Fisher is taken with respect to
    :param family: the action distribution family
    :param damping: Tikhonov damping added to the product
    """
    dist_at = tuple(t.detach() for t in dist_params)
    n_states = dist_at[0].shape[0]
    probes = tuple(th.zeros_like(t, requires_grad=True) for t in dist_at)
    pullback_of_probes = _differentiable_grad(dist_params, params, probes, then_wrt=probes)
    linear = [(i, g) for i, g in enumerate(pullback_of_probes) if g.requires_grad]  # unused parameters: J v = 0

    def product(vector: th.Tensor) -> th.Tensor:
        pieces = unflatten(vector, params)
        jv = _grad([g for _, g in linear], probes, [pieces[i] for i, _ in linear], retain_graph=True)
        weighted = tuple(t / n_states for t in family.fisher_times(dist_at, jv))
        return flatten(_grad(dist_params, params, weighted, retain_graph=True)) + damping * vector

    return product


def autograd_fisher_product(
    dist_params: DistParams,
    params: Sequence[th.Tensor],
    family: ActionFamily,
    damping: float = 0.0,
) -> Callable[[th.Tensor], th.Tensor]:
    """Reference: ``v -> H v + damping * v``, ``H`` the Hessian of ``mean_s KL(pi_old || pi_theta)`` at
    ``theta = theta_old`` (double backprop through the KL). Equal to the Fisher at that point.

    Arguments as for :func:`analytic_fisher_product`.
    """
    dist_old = tuple(t.detach() for t in dist_params)
    kl = family.kl(dist_old, dist_params).mean()
    grad_kl = flatten(_differentiable_grad([kl], params, [th.ones(())], then_wrt=params))

    def product(vector: th.Tensor) -> th.Tensor:
        hv = _grad([grad_kl @ vector], params, [th.ones(())], retain_graph=True)
        return flatten(hv) + damping * vector

    return product


#: The ``fisher`` argument's values and their generic route (see the module docstring for the specialised
#: ``"analytic"`` routes an algorithm takes where its actor's structure allows).
FISHER_PRODUCTS: dict[str, Callable[..., Callable[[th.Tensor], th.Tensor]]] = {
    "analytic": analytic_fisher_product,
    "autograd": autograd_fisher_product,
}
