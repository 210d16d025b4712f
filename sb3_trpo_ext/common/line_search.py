"""Backtracking line search of TRPO's natural-gradient step (paper Sec. 6 and Appendix C), beside
:mod:`~sb3_trpo_ext.common.cg`: it returns what it did, as conjugate gradient does."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch as th

__all__ = ["LineSearchResult", "backtracking_line_search"]


@dataclass(frozen=True)
class LineSearchResult:
    """What the line search did.

    :param accepted: index ``i`` of the accepted candidate ``theta_old + factor**i * full_step`` (0: the full
        step), or None when no candidate was accepted (the parameters are back at ``theta_old``)
    :param candidates: candidates tried (the accepted one included), ``max_iter`` when none was accepted
    :param kl: the mean KL of the accepted candidate (0.0 when none was)
    :param objective: the surrogate at the accepted candidate (the old surrogate when none was)
    :param reason: ``"accepted"``, or why the last candidate was rejected: ``"kl"`` (outside the trust region),
        ``"no_improvement"`` (inside it but the surrogate did not improve), ``"non_finite"`` (a non-finite
        parameter, KL or surrogate)
    """

    accepted: int | None
    candidates: int
    kl: float
    objective: float
    reason: str


def backtracking_line_search(
    set_params: Callable[[th.Tensor], None],
    evaluate: Callable[[], tuple[th.Tensor, th.Tensor]],
    theta_old: th.Tensor,
    full_step: th.Tensor,
    old_objective: th.Tensor,
    max_kl: float,
    shrinking_factor: float,
    max_iter: int,
) -> LineSearchResult:
    """Try ``theta_old + shrinking_factor**i * full_step`` for ``i = 0, 1, ...`` and accept the first candidate
    inside the trust region (mean KL ``<= max_kl``) that improves the surrogate; with none, put ``theta_old``
    back.

    :param set_params: writes a flat parameter vector into the actor
    :param evaluate: ``(mean KL from the old policy, surrogate)`` of the actor as it is now (reduced over every
        state of the batch, so that every data-parallel rank takes the same decision)
    :param old_objective: the surrogate at ``theta_old``
    """
    reason = "non_finite"
    with th.no_grad():
        for step in range(max_iter):
            candidate = theta_old + shrinking_factor**step * full_step
            if not th.isfinite(candidate).all():
                reason = "non_finite"
                continue
            set_params(candidate)
            kl, objective = evaluate()
            # Accept the first candidate inside the trust region that improves the surrogate.
            if kl <= max_kl and objective > old_objective:  # False for NaN as well
                return LineSearchResult(step, step + 1, kl.item(), objective.item(), "accepted")
            if not (th.isfinite(kl) and th.isfinite(objective)):
                reason = "non_finite"
            else:
                reason = "kl" if kl > max_kl else "no_improvement"
        set_params(theta_old)  # no acceptable step: keep the old policy
    return LineSearchResult(None, max_iter, 0.0, old_objective.item(), reason)
