"""TRPO's policy update: the natural-gradient step with backtracking line search (paper Sec. 6, Appendix C).

gradient -> conjugate gradient on Fisher-vector products -> full step to the trust-region boundary -> line
search. One function for every sampling scheme and policy family: the caller supplies the states, the surrogate
(:mod:`~sb3_trpo_ext.common.surrogate`), how its policy computes (:class:`ActorFunctions`) and a reducer
(:mod:`~sb3_trpo_ext.common.reduce`) through which every mean over states passes (the identity in one process).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch as th
from stable_baselines3.common.distributions import Distribution

from sb3_trpo_ext.common.cg import conjugate_gradient
from sb3_trpo_ext.common.fisher import ActionFamily, GaussianFamily, flatten, unflatten
from sb3_trpo_ext.common.line_search import backtracking_line_search
from sb3_trpo_ext.common.reduce import LOCAL, Reducer
from sb3_trpo_ext.common.surrogate import Surrogate

__all__ = ["ActorFunctions", "TrustRegion", "natural_gradient_step", "set_flat"]

FisherProduct = Callable[[th.Tensor], th.Tensor]


@dataclass(frozen=True)
class TrustRegion:
    """The step's settings (the algorithm's hyperparameters of the same names)."""

    target_kl: float
    cg_max_steps: int
    cg_rtol: float
    line_search_shrinking_factor: float
    line_search_max_iter: int
    sub_sampling_factor: int = 1


@dataclass(frozen=True)
class ActorFunctions:
    """How the caller's policy computes what the step needs.

    :param distribution: the policy's action distribution at the update's states
    :param family: the closed forms (KL, Fisher) of that distribution (:func:`~sb3_trpo_ext.common.fisher.action_family`)
    :param fisher_product: ``(states, distribution parameters at them, family) -> v -> (F + damping I) v``, the mean
        over the given states
    :param every_kth_state: the states where the Fisher is evaluated with ``sub_sampling_factor=k``
    """

    distribution: Callable[[Any], Distribution]
    family: Callable[[Distribution], ActionFamily]
    fisher_product: Callable[[Any, tuple[th.Tensor, ...], ActionFamily], FisherProduct]
    every_kth_state: Callable[[Any, int], Any]


def set_flat(params: Sequence[th.Tensor], flat: th.Tensor) -> None:
    """Write the flat vector ``flat`` into ``params`` (in their order)."""
    with th.no_grad():
        for param, value in zip(params, unflatten(flat, params), strict=True):
            param.copy_(value)


def _mean_of_pair(reducer: Reducer, first: th.Tensor, second: th.Tensor, count: int) -> tuple[th.Tensor, th.Tensor]:
    """``reducer.mean`` of two means over the same states, in one reduction (one collective between ranks instead
    of two)."""
    both = reducer.mean(th.cat([first.reshape(-1), second.reshape(-1)]), count)
    return both[: first.numel()].view_as(first), both[first.numel() :].view_as(second)


def natural_gradient_step(
    actor_params: Sequence[th.Tensor],
    states: Any,
    surrogate: Surrogate,
    actor: ActorFunctions,
    settings: TrustRegion,
    n_states: int,
    reducer: Reducer = LOCAL,
) -> dict[str, Any]:
    """Maximise ``surrogate`` subject to ``mean_s KL(pi_old(.|s) || pi(.|s)) <= target_kl`` by one natural-gradient
    step on ``actor_params`` (moved in place; left as they were when no step is accepted or the direction is
    invalid).

    :param states: where the surrogate, the Fisher and the trust-region check are evaluated
    :param surrogate: maps the policy's distribution at ``states`` to the objective (a mean over the states)
    :param n_states: this process's count of states (the weight of its means in the reducer)
    :return: the statistics to log (``policy_objective``, ``kl``, ``cg_*``, ``line_search_*``, ``std``)
    """
    distribution = actor.distribution(states)
    family = actor.family(distribution)
    dist_params = family.params(distribution)
    dist_old = tuple(t.detach() for t in dist_params)
    local_objective = surrogate(distribution)
    local_gradient = flatten(th.autograd.grad(local_objective, actor_params, retain_graph=True))
    gradient, objective = _mean_of_pair(reducer, local_gradient, local_objective.detach(), n_states)

    stats: dict[str, Any] = {
        "policy_objective": objective.item(),
        "kl": 0.0,
        "cg_iterations": 0,
        "cg_residual": float("nan"),
        "line_search_steps": 0,
        "is_line_search_success": 0.0,
    }
    if isinstance(family, GaussianFamily):
        stats["std"] = dist_old[1].exp().mean().item()
    if not th.isfinite(gradient).all() or not th.isfinite(objective):
        warnings.warn("TRPO: non-finite surrogate or policy gradient, the actor update is skipped", stacklevel=3)
        return stats

    # Search direction s ~ F^-1 g by conjugate gradient on the Fisher of the mean KL at theta_old, evaluated on
    # every sub_sampling_factor-th state (Appendix C)
    fisher_states, n_fisher_states = states, n_states
    if settings.sub_sampling_factor > 1:
        fisher_states = actor.every_kth_state(states, settings.sub_sampling_factor)
        n_fisher_states = math.ceil(n_states / settings.sub_sampling_factor)
        dist_params = family.params(actor.distribution(fisher_states))
    local_product = actor.fisher_product(fisher_states, dist_params, family)

    def fisher_product(vector: th.Tensor) -> th.Tensor:
        return reducer.mean(local_product(vector), n_fisher_states)

    cg = conjugate_gradient(fisher_product, gradient, max_iter=settings.cg_max_steps, rtol=settings.cg_rtol)
    stats.update(cg_iterations=cg.iterations, cg_residual=cg.residual_norm, cg_stop_reason=cg.reason)
    curvature = th.dot(cg.x, cg.a_x)  # s^T F s from CG's own products (one Fisher product fewer)
    if not (th.isfinite(cg.x).all() and th.isfinite(curvature) and curvature > 0):
        warnings.warn(
            f"TRPO: invalid search direction (s^T F s = {curvature.item()}), the actor update is skipped", stacklevel=3
        )
        return stats
    # The full step to the trust-region boundary: 1/2 (beta s)^T F (beta s) = target_kl (Appendix C)
    full_step = th.sqrt(2 * settings.target_kl / curvature) * cg.x

    def evaluate() -> tuple[th.Tensor, th.Tensor]:
        distribution = actor.distribution(states)
        local_kl = family.kl(dist_old, family.params(distribution)).mean()
        return _mean_of_pair(reducer, local_kl, surrogate(distribution), n_states)

    search = backtracking_line_search(
        lambda flat: set_flat(actor_params, flat),
        evaluate,
        flatten(actor_params).detach().clone(),
        full_step,
        objective,
        settings.target_kl,
        settings.line_search_shrinking_factor,
        settings.line_search_max_iter,
    )
    stats.update(line_search_steps=search.candidates, line_search_stop_reason=search.reason)
    if search.accepted is not None:
        stats.update(policy_objective=search.objective, kl=search.kl, is_line_search_success=1.0)
    return stats
