"""Vine sampling (Schulman et al., 2015, Sec. 5.2 and Appendix C).

From the trunk trajectories (collected as in single path) a *rollout set* of ``N`` states is chosen; from each
state ``K`` actions are tried, each followed by a short *branch* rollout of the current policy from the restored
simulator state, whose discounted return estimates ``Q(s, a_k)``. The ``K`` branches of one state share one
stream of random numbers (common random numbers): the same environment randomness (restored with the state) and
the same policy noise, which cuts the variance of the differences between their Q estimates.

Pieces:

* :class:`RolloutSet`, the data of one update, and its surrogate (discrete: ``sum_k pi_theta(a_k|s) A_k`` over all
  actions; otherwise self-normalised importance sampling ``sum_k r_k A_k / sum_k r_k``);
* :class:`VineRolloutBuffer` / :class:`DictVineRolloutBuffer`: SB3's rollout buffers (the trunk) plus the rollout set;
* :class:`VineSampler`: chooses the rollout-set positions, snapshots the environments when the trunk passes them,
  and runs the branches afterwards, with the policy's forward pass batched over all live branches of a step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    Distribution,
    MultiCategoricalDistribution,
    StateDependentNoiseDistribution,
)
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    VecCheckNan,
    VecEnv,
    VecEnvWrapper,
    VecMonitor,
    VecNormalize,
    VecTransposeImage,
)

from sb3_trpo_ext import sim_state

Surrogate = Callable[[Distribution], th.Tensor]

#: Action distributions whose samples vine draws itself (with common random numbers).
SUPPORTED_DISTRIBUTIONS = (
    DiagGaussianDistribution,
    StateDependentNoiseDistribution,
    CategoricalDistribution,
    MultiCategoricalDistribution,
    BernoulliDistribution,
)
#: VecEnv wrappers that keep no state a branch could change: branches see their observation/reward transforms.
_STATELESS_VEC_WRAPPERS = (VecNormalize, VecTransposeImage, VecMonitor, VecCheckNan)


# --------------------------------------------------------------------------------------------- rollout set
@dataclass
class RolloutSet:
    """The vine data of one update: ``N`` states, ``K`` actions each, with their old log-probabilities and Q.

    :param observations: the states, batch first (``N``)
    :param actions: ``(N, K, *action_shape)``, in the form the policy's distribution scores
    :param old_log_probs: ``(N, K)``, ``log pi_old(a_k | s)``
    :param q_values: ``(N, K)``, the branch estimates of ``Q(s, a_k)``
    :param enumerated: whether the ``K`` actions are every action of a discrete space (uniform ``q``)
    """

    observations: PyTorchObs
    actions: th.Tensor
    old_log_probs: th.Tensor
    q_values: th.Tensor
    enumerated: bool

    def surrogate(self, normalize_advantage: bool) -> tuple[PyTorchObs, Surrogate]:
        """The vine surrogate on the rollout-set states (paper Sec. 5.2).

        ``A_k = Q_k - mean_k Q_k`` (a per-state baseline, which leaves the gradient unchanged); with
        ``normalize_advantage`` divided by their standard deviation over the whole set. Enumerated discrete
        actions: ``mean_s sum_k pi_theta(a_k|s) A_k``; sampled actions: self-normalised importance sampling
        ``mean_s sum_k r_k A_k / sum_k r_k`` with ``r_k = pi_theta(a_k|s) / pi_old(a_k|s)``.
        """
        advantages = self.q_values - self.q_values.mean(dim=1, keepdim=True)
        if normalize_advantage:
            advantages = advantages / (advantages.std() + 1e-8)
        n_actions = self.actions.shape[1]

        def surrogate(distribution: Distribution) -> th.Tensor:
            log_probs = th.stack([distribution.log_prob(self.actions[:, k]) for k in range(n_actions)], dim=1)
            if self.enumerated:
                return (log_probs.exp() * advantages).sum(dim=1).mean()
            ratios = th.exp(log_probs - self.old_log_probs)
            return ((ratios * advantages).sum(dim=1) / ratios.sum(dim=1)).mean()

        return self.observations, surrogate


class VineBufferMixin:
    """Adds the rollout set to an SB3 rollout buffer (the trunk); ``reset`` clears both."""

    rollout_set: RolloutSet | None = None

    def reset(self) -> None:
        super().reset()  # type: ignore[misc]
        self.rollout_set = None


class VineRolloutBuffer(VineBufferMixin, RolloutBuffer):
    """SB3's ``RolloutBuffer`` holding the trunk (for the critic and the logs) plus the vine ``rollout_set``."""


class DictVineRolloutBuffer(VineBufferMixin, DictRolloutBuffer):
    """SB3's ``DictRolloutBuffer`` (dict observations) holding the trunk plus the vine ``rollout_set``."""


# ------------------------------------------------------------------------------------------ environments
def _unwrap(venv: VecEnv) -> tuple[list[VecEnvWrapper], VecEnv]:
    """The VecEnv wrappers from the innermost to the outermost, and the base VecEnv."""
    wrappers: list[VecEnvWrapper] = []
    while isinstance(venv, VecEnvWrapper):
        wrappers.append(venv)
        venv = venv.venv
    return wrappers[::-1], venv


def check_vine_env(venv: VecEnv) -> None:
    """Raise, before any training, if vine cannot branch from ``venv``'s states.

    :raises sim_state.UnrestorableEnvError: for an environment or a wrapper (gym- or VecEnv-level) whose state
        cannot be restored exactly
    :raises ValueError: for a VecEnv class vine cannot run branches in
    """
    wrappers, base = _unwrap(venv)
    for wrapper in wrappers:
        if not isinstance(wrapper, _STATELESS_VEC_WRAPPERS):
            raise sim_state.UnrestorableEnvError(
                f"sampling='vine' cannot branch through the VecEnv wrapper {type(wrapper).__name__}: its state "
                "(e.g. VecFrameStack's frame buffer) is not restored. Supported VecEnv wrappers: "
                f"{', '.join(w.__name__ for w in _STATELESS_VEC_WRAPPERS)}; stack frames with a gymnasium wrapper "
                "(FrameStackObservation) inside the VecEnv instead."
            )
    if not isinstance(base, DummyVecEnv):
        raise ValueError(f"sampling='vine' runs its branches in a DummyVecEnv; got {type(base).__name__}")
    for env in base.envs:
        sim_state.check_restorable(env)


# ---------------------------------------------------------------------------------------------- sampling
def _sample_with_noise(distribution: Distribution, noise: th.Tensor) -> th.Tensor:
    """Draw actions from ``distribution`` as a deterministic function of ``noise`` (uniforms in (0, 1), one row
    per state), so that branches given the same noise row draw with common random numbers."""
    if isinstance(distribution, (DiagGaussianDistribution, StateDependentNoiseDistribution)):
        normal = distribution.distribution
        gaussian = normal.loc + normal.scale * th.special.ndtri(noise)
        bijector = getattr(distribution, "bijector", None)
        return bijector.forward(gaussian) if bijector is not None else gaussian
    if isinstance(distribution, CategoricalDistribution):
        return _gumbel_argmax(distribution.distribution.logits, noise)
    if isinstance(distribution, MultiCategoricalDistribution):
        blocks = th.split(noise, list(distribution.action_dims), dim=1)
        return th.stack(
            [_gumbel_argmax(c.logits, u) for c, u in zip(distribution.distribution, blocks, strict=True)], dim=1
        )
    if isinstance(distribution, BernoulliDistribution):
        return (noise < distribution.distribution.probs).to(th.float32)
    raise TypeError(f"sampling='vine' does not support the action distribution {type(distribution).__name__}")


def _gumbel_argmax(logits: th.Tensor, uniforms: th.Tensor) -> th.Tensor:
    """Gumbel-max: ``argmax(logits - log(-log u))`` is a draw from ``softmax(logits)``."""
    return th.argmax(logits - th.log(-th.log(uniforms)), dim=-1)


def noise_width(action_space: spaces.Space) -> int:
    """How many uniforms one action draw takes (see :func:`_sample_with_noise`)."""
    if isinstance(action_space, spaces.Discrete):
        return int(action_space.n)
    if isinstance(action_space, spaces.MultiDiscrete):
        return int(np.sum(action_space.nvec))
    return int(np.prod(action_space.shape))


def _stack(observations: list[Any]) -> Any:
    if isinstance(observations[0], dict):
        return {key: np.stack([obs[key] for obs in observations]) for key in observations[0]}
    return np.stack(observations)


def _take(observations: Any, index: int) -> Any:
    if isinstance(observations, dict):
        return {key: np.array(value[index]) for key, value in observations.items()}
    return np.array(observations[index])


@dataclass
class _Snapshot:
    env_index: int
    observation: Any  # as the policy saw it
    state: Any  # sim_state snapshot of the gymnasium environment


class VineSampler:
    """Chooses the rollout set, snapshots it during the trunk, and runs the branch rollouts.

    :param venv: the training VecEnv (checked with :func:`check_vine_env`)
    :param n_states: rollout-set size ``N`` per update (at most the trunk's ``n_steps * n_envs`` states)
    :param n_actions: actions ``K`` per state; a ``Discrete`` space with at most ``K`` actions uses each
        action once instead
    :param horizon: branch length ``H`` (the first action included)
    :param bootstrap: add ``gamma^H V(s_H)`` to branches that run the whole horizon
    :param gamma: discount factor
    :param seed: seed of the sampler's own random numbers (rollout-set positions, actions, branch noise)
    """

    def __init__(
        self,
        venv: VecEnv,
        n_states: int,
        n_actions: int,
        horizon: int,
        bootstrap: bool,
        gamma: float,
        seed: int | None,
    ):
        check_vine_env(venv)
        self.wrappers, base = _unwrap(venv)
        assert isinstance(base, DummyVecEnv)
        self.envs = base.envs
        self.observation_space = venv.observation_space
        self.action_space = venv.action_space
        self.n_states = n_states
        self.n_actions = n_actions
        self.horizon = horizon
        self.bootstrap = bootstrap
        self.gamma = gamma
        self.rng = np.random.default_rng(seed)
        self.enumerate_actions = isinstance(self.action_space, spaces.Discrete) and self.action_space.n <= n_actions
        self._plan: dict[int, list[int]] = {}
        self._snapshots: list[_Snapshot] = []
        self.branch_steps_total = 0

    # ------------------------------------------------------------------ trunk
    def plan(self, n_steps: int) -> None:
        """Choose this rollout's set: ``N`` distinct (step, env) positions of the trunk, uniformly at random."""
        n_envs = len(self.envs)
        n_positions = n_steps * n_envs
        chosen = np.sort(self.rng.choice(n_positions, size=min(self.n_states, n_positions), replace=False))
        self._plan = {}
        for position in chosen:
            self._plan.setdefault(int(position // n_envs), []).append(int(position % n_envs))
        self._snapshots = []

    def on_trunk_step(self, step: int, last_obs: Any) -> None:
        """Called before the trunk acts at ``step``: snapshot the environments chosen for it."""
        for env_index in self._plan.get(step, ()):
            self._snapshots.append(
                _Snapshot(env_index, _take(last_obs, env_index), sim_state.get_state(self.envs[env_index]))
            )

    # --------------------------------------------------------------- branches
    def _observe(self, raw: list[Any]) -> Any:
        """Branch observations as the policy sees the trunk's: cast like DummyVecEnv, then the VecEnv wrappers'
        transforms with their statistics frozen."""
        if isinstance(self.observation_space, spaces.Dict):
            obs: Any = {
                key: np.stack([np.asarray(o[key], dtype=space.dtype) for o in raw])
                for key, space in self.observation_space.spaces.items()
            }
        else:
            obs = np.stack([np.asarray(o, dtype=self.observation_space.dtype) for o in raw])
        for wrapper in self.wrappers:
            if isinstance(wrapper, VecNormalize):
                obs = wrapper.normalize_obs(obs)
            elif isinstance(wrapper, VecTransposeImage):
                obs = wrapper.transpose_observations(obs)
        return obs

    def _reward(self, rewards: np.ndarray) -> np.ndarray:
        for wrapper in self.wrappers:
            if isinstance(wrapper, VecNormalize):
                rewards = wrapper.normalize_reward(rewards)
        return rewards

    def run_branches(
        self,
        policy: ActorCriticPolicy,
        to_env_action: Callable[[np.ndarray], np.ndarray],
    ) -> tuple[RolloutSet, int]:
        """Run ``K`` branches of ``H`` steps from every snapshot, then put every environment back into the state
        the trunk left it in.

        :param policy: the current policy (branches follow it; values bootstrap the cut-off branches)
        :param to_env_action: the trunk's map from the policy's actions to the environment's (clip or unscale)
        :return: the rollout set and the number of branch steps taken
        """
        device = policy.device
        snapshots = self._snapshots
        n_states = len(snapshots)
        trunk_states = {i: sim_state.get_state(env) for i, env in enumerate(self.envs)}
        with th.no_grad():
            set_obs = obs_as_tensor(_stack([s.observation for s in snapshots]), device)
            distribution = policy.get_distribution(set_obs)
            actions = self._initial_actions(distribution, n_states, device)
            n_actions = actions.shape[1]
            old_log_probs = th.stack([distribution.log_prob(actions[:, k]) for k in range(n_actions)], dim=1)

        # Branch b = (state i, action k), b = i * K + k. Each branch carries its own simulator state.
        n_branches = n_states * n_actions
        state_of = [snapshots[b // n_actions].state for b in range(n_branches)]
        env_of = [snapshots[b // n_actions].env_index for b in range(n_branches)]
        returns = np.zeros(n_branches)
        discount = np.ones(n_branches)
        live = np.ones(n_branches, dtype=bool)
        bootstrap_obs: dict[int, Any] = {}
        last_raw: dict[int, Any] = {}  # each branch's latest raw observation
        branch_steps = 0
        step_actions = actions.reshape(n_branches, *actions.shape[2:]).cpu().numpy()
        with contextlib.ExitStack() as stack:
            for env in self.envs:
                stack.enter_context(sim_state.no_monitor_writes(env))
            for h in range(self.horizon):
                branches = np.flatnonzero(live)
                if branches.size == 0:
                    break
                if h > 0:  # follow the current policy, one forward pass for all live branches
                    with th.no_grad():
                        obs = obs_as_tensor(self._observe([last_raw[b] for b in branches]), device)
                        noise = self._branch_noise(n_states, n_actions, device)[branches]
                        drawn = _sample_with_noise(policy.get_distribution(obs), noise)
                    step_actions[branches] = drawn.cpu().numpy().reshape(len(branches), *step_actions.shape[1:])
                env_actions = to_env_action(step_actions[branches])
                rewards = np.zeros(len(branches), dtype=np.float32)
                for j, b in enumerate(branches):
                    env = self.envs[env_of[b]]
                    sim_state.set_state(env, state_of[b])
                    raw_obs, reward, terminated, truncated, _ = env.step(env_actions[j])
                    state_of[b] = sim_state.get_state(env)
                    rewards[j] = reward
                    last_raw[b] = raw_obs
                    if terminated or truncated:
                        live[b] = False
                        if truncated and not terminated:  # time limit: bootstrap, as the trunk does
                            bootstrap_obs[b] = raw_obs
                branch_steps += len(branches)
                returns[branches] += discount[branches] * self._reward(rewards)
                discount[branches] *= self.gamma
            if self.bootstrap:
                for b in np.flatnonzero(live):
                    bootstrap_obs[b] = last_raw[b]
            for i, env in enumerate(self.envs):
                sim_state.set_state(env, trunk_states[i])

        if bootstrap_obs:
            cut = sorted(bootstrap_obs)
            with th.no_grad():
                obs = obs_as_tensor(self._observe([bootstrap_obs[b] for b in cut]), device)
                values = policy.predict_values(obs).flatten().cpu().numpy()
            returns[cut] += discount[cut] * values
        self.branch_steps_total += branch_steps
        rollout_set = RolloutSet(
            observations=set_obs,
            actions=actions,
            old_log_probs=old_log_probs,
            q_values=th.as_tensor(returns.reshape(n_states, n_actions), dtype=th.float32, device=device),
            enumerated=self.enumerate_actions,
        )
        return rollout_set, branch_steps

    def _initial_actions(self, distribution: Distribution, n_states: int, device: th.device) -> th.Tensor:
        """The ``K`` actions tried from each rollout-set state, ``(N, K, *action_shape)``: every action of a small
        discrete space (uniform ``q``), else independent draws from the current policy."""
        if self.enumerate_actions:
            return th.arange(int(self.action_space.n), device=device).repeat(n_states, 1)  # type: ignore[attr-defined]
        width = noise_width(self.action_space)
        draws = [
            _sample_with_noise(distribution, self._uniforms(n_states, width, device)) for _ in range(self.n_actions)
        ]
        return th.stack(draws, dim=1)

    def _branch_noise(self, n_states: int, n_actions: int, device: th.device) -> th.Tensor:
        """One step's policy noise for every branch: common random numbers, the ``K`` branches of a state
        (rows ``i * K .. i * K + K - 1``) share one row."""
        return self._uniforms(n_states, noise_width(self.action_space), device).repeat_interleave(n_actions, dim=0)

    def _uniforms(self, n_rows: int, width: int, device: th.device) -> th.Tensor:
        # open interval (0, 1): the Gaussian and Gumbel transforms are finite
        uniforms = self.rng.uniform(np.finfo(np.float32).tiny, 1.0, size=(n_rows, width)).astype(np.float32)
        return th.as_tensor(uniforms, device=device)
