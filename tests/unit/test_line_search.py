"""The trust region holds: accepted steps satisfy the true-KL bound and improve the surrogate;
a failed line search leaves the actor bit-identical."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from reduce_helpers import step
from stable_baselines3.common.type_aliases import RolloutBufferSamples

from sb3_trpo_ext import TRPO
from sb3_trpo_ext.common.line_search import backtracking_line_search


class _BoxEnv(gym.Env):
    """Only the spaces matter here: the tests feed random batches to the update directly."""

    def __init__(self, action_dim=3, discrete=False):
        self.observation_space = spaces.Box(-1, 1, (4,), np.float32)
        self.action_space = spaces.Discrete(5) if discrete else spaces.Box(-1, 1, (action_dim,), np.float32)

    def reset(self, *, seed=None, options=None):
        return np.zeros(4, np.float32), {}

    def step(self, action):
        return np.zeros(4, np.float32), 0.0, False, False, {}


def _random_batch(model, seed, n=64):
    gen = th.Generator().manual_seed(seed)
    obs = th.randn(n, 4, generator=gen)
    with th.no_grad():
        actions = model.policy.get_distribution(obs).get_actions()
        if isinstance(model.action_space, spaces.Discrete):
            actions = actions.float().view(-1, 1)
        _, log_prob, _ = model.policy.evaluate_actions(
            obs, actions.long().flatten() if isinstance(model.action_space, spaces.Discrete) else actions
        )
    advantages = th.randn(n, generator=gen)
    return RolloutBufferSamples(obs, actions, th.zeros(n), log_prob, advantages, th.zeros(n))


def _independent_kl_and_surrogate(model, batch, old_torch_dist):
    """KL(old || new) from torch.distributions (summed over action dims) and the surrogate, by hand."""
    with th.no_grad():
        new = model.policy.get_distribution(batch.observations)
        kl = th.distributions.kl_divergence(old_torch_dist, new.distribution)
        if kl.dim() == 2:
            kl = kl.sum(dim=1)
        actions = batch.actions
        if isinstance(model.action_space, spaces.Discrete):
            actions = actions.long().flatten()
        adv = batch.advantages
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        surrogate = (adv * th.exp(new.log_prob(actions) - batch.old_log_prob)).mean()
    return kl.mean().item(), surrogate.item()


@pytest.mark.parametrize("discrete", [False, True])
def test_accepted_steps_respect_true_kl_and_failed_ones_change_nothing(discrete):
    outcomes = set()
    for seed in range(8):
        # Without damping, CG on the (singular) Fisher gives steps the quadratic model misjudges: rejections.
        target_kl = [0.001, 0.3, 3.0, 30.0][seed % 4]
        model = TRPO(
            "MlpPolicy",
            _BoxEnv(discrete=discrete),
            n_steps=64,
            batch_size=64,
            seed=seed,
            target_kl=target_kl,
            cg_damping=[0.1, 0.0][seed % 2],
            line_search_max_iter=1 + seed % 3,
            line_search_shrinking_factor=0.3,
            policy_kwargs=dict(net_arch=[8], log_std_init=-1.0 + seed % 3),
        )
        batch = _random_batch(model, seed)
        before = [p.detach().clone() for p in model.policy.parameters()]
        with th.no_grad():
            dist = model.policy.get_distribution(batch.observations).distribution
            old = (
                type(dist)(**{k: getattr(dist, k).clone() for k in ("loc", "scale")})
                if not discrete
                else th.distributions.Categorical(logits=dist.logits.clone())
            )
        _, surrogate_before = _independent_kl_and_surrogate(model, batch, old)
        stats = step(model, batch)
        kl, surrogate_after = _independent_kl_and_surrogate(model, batch, old)
        if stats["is_line_search_success"]:
            outcomes.add("accepted")
            assert kl <= target_kl * (1 + 1e-5), (seed, kl, target_kl)
            assert surrogate_after > surrogate_before
            assert stats["kl"] == pytest.approx(kl, rel=1e-4, abs=1e-7)
        else:
            outcomes.add("rejected")
            for p, q in zip(before, model.policy.parameters(), strict=True):
                assert th.equal(p, q)
            assert stats["kl"] == 0.0
        # the critic is never touched by the actor's step
        critic_ids = {id(p) for p in model._critic_params}
        for p, q in zip(before, model.policy.parameters(), strict=True):
            if id(q) in critic_ids:
                assert th.equal(p, q)
    assert outcomes == {"accepted", "rejected"}, outcomes  # both branches were exercised


def test_full_step_lands_near_the_trust_region_boundary():
    """beta = sqrt(2 delta / s^T F s): for a small delta the quadratic model is accurate, so the first
    candidate is accepted with a KL close to (and within) target_kl; light damping keeps CG well posed
    in float32 and makes the step slightly conservative."""
    model = TRPO(
        "MlpPolicy",
        _BoxEnv(),
        n_steps=64,
        batch_size=64,
        seed=0,
        target_kl=1e-4,
        cg_damping=1e-3,
        cg_max_steps=200,
        cg_rtol=1e-12,
        policy_kwargs=dict(net_arch=[8]),
    )
    stats = step(model, _random_batch(model, 0))
    assert stats["is_line_search_success"] == 1.0 and stats["line_search_steps"] == 1
    assert 0.85e-4 < stats["kl"] <= 1e-4


# ------------------------------------------------------------------ the line search function on its own
def _quadratic_search(full_step, max_kl=0.5, max_iter=5, objective_sign=1.0):
    """Line search on theta in R^1 from 0: KL = theta^2 / 2, surrogate = objective_sign * theta."""
    theta = th.zeros(1)

    def set_params(flat):
        theta.copy_(flat)

    def evaluate():
        return 0.5 * theta.square().sum(), objective_sign * theta.sum()

    result = backtracking_line_search(
        set_params, evaluate, th.zeros(1), th.tensor([full_step]), th.tensor(0.0), max_kl, 0.5, max_iter
    )
    return result, theta.item()


def test_line_search_accepts_the_full_step_inside_the_region():
    result, theta = _quadratic_search(1.0)
    assert (result.accepted, result.candidates, result.reason) == (0, 1, "accepted")
    assert theta == 1.0 and result.kl == 0.5 and result.objective == 1.0


def test_line_search_backtracks_until_inside_the_region():
    result, theta = _quadratic_search(4.0)  # KL 8, 2, 0.5: the third candidate
    assert (result.accepted, result.candidates, result.reason) == (2, 3, "accepted")
    assert theta == 1.0 and result.kl == 0.5


@pytest.mark.parametrize(
    ("full_step", "sign", "reason"),
    [(64.0, 1.0, "kl"), (1.0, -1.0, "no_improvement"), (float("nan"), 1.0, "non_finite")],
)
def test_line_search_without_an_acceptable_candidate_puts_theta_old_back(full_step, sign, reason):
    result, theta = _quadratic_search(full_step, max_iter=3, objective_sign=sign)
    assert (result.accepted, result.candidates, result.reason) == (None, 3, reason)
    assert theta == 0.0 and result.kl == 0.0 and result.objective == 0.0
