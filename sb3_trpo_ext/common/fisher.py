"""Action-distribution families: true KL and Fisher-vector products (paper Appendix C.1).

The policy maps parameters ``theta`` to the parameters ``mu(theta)`` of its action distribution at
every state. The Fisher matrix of the mean KL is ``F = mean_s J_s^T M_s J_s``, with ``J_s`` the
Jacobian of ``mu`` at state ``s`` and ``M_s`` the closed-form Fisher of the distribution in its own
parameters. :func:`analytic_fisher_product` evaluates ``F v`` as a forward-mode product ``J v``,
a per-state multiplication by ``M`` and a reverse-mode product ``J^T u`` (no double backprop);
:func:`autograd_fisher_product` is the reference: the Hessian of the mean KL at ``theta_old``.

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
#: Maps a tuple of parameter tensors to the distribution parameters at a fixed batch of states.
ParamsToDist = Callable[[tuple[th.Tensor, ...]], DistParams]


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


class GaussianFamily(ActionFamily):
    name = "gaussian"

    def params(self, distribution: Distribution) -> DistParams:
        normal = distribution.distribution
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
        return (distribution.distribution.logits,)  # torch normalises them: log-probabilities

    def kl(self, old: DistParams, new: DistParams) -> th.Tensor:
        return (old[0].exp() * (old[0] - new[0])).sum(dim=-1)

    def fisher_times(self, at: DistParams, tangent: DistParams) -> DistParams:
        return (_categorical_fisher_times(at[0], tangent[0]),)


class MultiCategoricalFamily(ActionFamily):
    name = "multicategorical"

    def __init__(self, action_dims: Sequence[int]):
        self.action_dims = [int(n) for n in action_dims]

    def params(self, distribution: Distribution) -> DistParams:
        return (th.cat([categorical.logits for categorical in distribution.distribution], dim=-1),)

    def kl(self, old: DistParams, new: DistParams) -> th.Tensor:
        # Each block is normalised on its own, so the summed KL is one sum over all logits.
        return (old[0].exp() * (old[0] - new[0])).sum(dim=-1)

    def fisher_times(self, at: DistParams, tangent: DistParams) -> DistParams:
        blocks = zip(th.split(at[0], self.action_dims, dim=-1), th.split(tangent[0], self.action_dims, dim=-1))
        return (th.cat([_categorical_fisher_times(lp, t) for lp, t in blocks], dim=-1),)


class BernoulliFamily(ActionFamily):
    name = "bernoulli"

    def params(self, distribution: Distribution) -> DistParams:
        return (distribution.distribution.logits,)

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


def analytic_fisher_product(
    params_to_dist: ParamsToDist,
    params: Sequence[th.Tensor],
    family: ActionFamily,
    damping: float = 0.0,
) -> Callable[[th.Tensor], th.Tensor]:
    """``v -> (mean_s J_s^T M_s J_s) v + damping * v`` for flat vectors ``v``.

    The reverse-mode half (``J^T``) is linearised once and reused for every product; each product
    costs one forward-mode pass for ``J v`` and one backward pass.

    :param params_to_dist: maps parameter tensors to the distribution parameters at a batch of states
    :param params: the point ``theta_old`` at which the Fisher is evaluated
    :param family: the action distribution family
    :param damping: Tikhonov damping added to the product
    """
    primals = tuple(p.detach() for p in params)
    dist_at, pullback = th.func.vjp(params_to_dist, primals)
    dist_at = tuple(t.detach() for t in dist_at)
    n_states = dist_at[0].shape[0]

    def product(vector: th.Tensor) -> th.Tensor:
        _, jv = th.func.jvp(params_to_dist, (primals,), (unflatten(vector, primals),))
        weighted = tuple(t / n_states for t in family.fisher_times(dist_at, jv))
        (jt_m_jv,) = pullback(weighted)
        return flatten(jt_m_jv) + damping * vector

    return product


def autograd_fisher_product(
    params_to_dist: ParamsToDist,
    params: Sequence[th.Tensor],
    family: ActionFamily,
    damping: float = 0.0,
) -> Callable[[th.Tensor], th.Tensor]:
    """Reference: ``v -> H v + damping * v``, ``H`` the Hessian of ``mean_s KL(pi_old || pi_theta)``
    at ``theta = theta_old`` (double backprop). Equal to the Fisher at that point."""
    leaves = tuple(p.detach().requires_grad_(True) for p in params)
    dist_new = params_to_dist(leaves)
    dist_old = tuple(t.detach() for t in dist_new)
    kl = family.kl(dist_old, dist_new).mean()
    grad_kl = flatten(th.autograd.grad(kl, leaves, create_graph=True))

    def product(vector: th.Tensor) -> th.Tensor:
        hv = th.autograd.grad(grad_kl @ vector, leaves, retain_graph=True)
        return flatten(hv) + damping * vector

    return product
