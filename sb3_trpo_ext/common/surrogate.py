"""The surrogate objectives of TRPO's two sampling schemes (paper Sec. 5), one function each.

A surrogate maps the policy's action distribution at the update's states to the objective the natural-gradient
step maximises; it returns the mean over this process's states (the step reduces it with its reducer,
:mod:`sb3_trpo_ext.common.reduce`). The masked and recurrent variants supply the same functions with their own
states (masks travel with the states; sequences select their real steps before calling).
"""

from __future__ import annotations

from collections.abc import Callable

import torch as th
from stable_baselines3.common.distributions import Distribution

from sb3_trpo_ext.common.reduce import LOCAL, Reducer

__all__ = ["Surrogate", "single_path_surrogate", "standardized", "vine_surrogate"]

Surrogate = Callable[[Distribution], th.Tensor]

#: Added to a standard deviation before dividing by it (SB3's and sb3-contrib's value).
STD_EPSILON = 1e-8


def standardized(advantages: th.Tensor, reducer: Reducer = LOCAL) -> th.Tensor:
    """``(A - mean A) / (std A + 1e-8)`` with the batch's statistics (over every rank's advantages)."""
    mean, std = reducer.moments(advantages)
    return (advantages - mean) / (std + STD_EPSILON)


def single_path_surrogate(
    actions: th.Tensor,
    advantages: th.Tensor,
    old_log_prob: th.Tensor,
    normalize_advantage: bool,
    reducer: Reducer = LOCAL,
) -> Surrogate:
    """The single-path surrogate ``L(theta) = mean_t A_t pi_theta(a_t|s_t) / pi_old(a_t|s_t)`` (paper Eq. 14),
    with the advantages standardized over the batch when ``normalize_advantage``.

    :param actions: the actions taken, in the form the policy's distribution scores
    :param advantages: ``A_t``, one per state
    :param old_log_prob: ``log pi_old(a_t|s_t)``, one per state
    """
    if normalize_advantage:
        advantages = standardized(advantages, reducer)

    def surrogate(distribution: Distribution) -> th.Tensor:
        return (advantages * th.exp(distribution.log_prob(actions) - old_log_prob)).mean()

    return surrogate


def vine_surrogate(
    actions: th.Tensor,
    old_log_probs: th.Tensor,
    q_values: th.Tensor,
    enumerated: bool,
    normalize_advantage: bool,
    tried: th.Tensor | None = None,
    reducer: Reducer = LOCAL,
) -> Surrogate:
    """The vine surrogate on a rollout set of ``N`` states with ``K`` actions each (paper Sec. 5.2).

    ``A_k = Q_k - mean_k Q_k`` (a per-state baseline, which leaves the gradient unchanged); with
    ``normalize_advantage`` divided by their standard deviation over the whole set. Enumerated discrete actions:
    ``mean_s sum_k pi_theta(a_k|s) A_k``; sampled actions: self-normalised importance sampling
    ``mean_s sum_k r_k A_k / sum_k r_k`` with ``r_k = pi_theta(a_k|s) / pi_old(a_k|s)``.

    :param actions: ``(N, K, *action_shape)``
    :param old_log_probs: ``(N, K)``
    :param q_values: ``(N, K)``, the branch estimates of ``Q(s, a_k)``
    :param enumerated: the ``K`` actions are every action of a discrete space
    :param tried: ``(N, K)`` bool, the actions that got a branch (masked policies: an invalid enumerated action
        has none, and its Q is meaningless): the baseline, the standard deviation and the importance weights
        then run over the tried actions only. None: every action was tried
    """
    n_actions = actions.shape[1]

    def log_probs_of(distribution: Distribution) -> th.Tensor:
        return th.stack([distribution.log_prob(actions[:, k]) for k in range(n_actions)], dim=1)

    if tried is None:
        advantages = q_values - q_values.mean(dim=1, keepdim=True)
        if normalize_advantage:
            advantages = advantages / (reducer.moments(advantages)[1] + STD_EPSILON)

        def ratios_of(log_probs: th.Tensor) -> th.Tensor:
            return th.exp(log_probs - old_log_probs)

        def weight_sums(ratios: th.Tensor) -> th.Tensor:
            return ratios.sum(dim=1)

    else:
        weights = tried.to(q_values.dtype)
        baseline = (q_values * weights).sum(dim=1, keepdim=True) / weights.sum(dim=1, keepdim=True).clamp(min=1.0)
        advantages = (q_values - baseline) * weights
        if normalize_advantage and int(tried.sum()) > 1:
            advantages = advantages / (reducer.moments(advantages[tried])[1] + STD_EPSILON)

        def ratios_of(log_probs: th.Tensor) -> th.Tensor:
            return th.exp(log_probs - old_log_probs) * weights

        def weight_sums(ratios: th.Tensor) -> th.Tensor:
            return ratios.sum(dim=1).clamp(min=1e-12)

    def surrogate(distribution: Distribution) -> th.Tensor:
        log_probs = log_probs_of(distribution)
        if enumerated:
            return (log_probs.exp() * advantages).sum(dim=1).mean()
        ratios = ratios_of(log_probs)
        return ((ratios * advantages).sum(dim=1) / weight_sums(ratios)).mean()

    return surrogate
