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

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
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
    SubprocVecEnv,
    VecCheckNan,
    VecEnv,
    VecEnvWrapper,
    VecMonitor,
    VecNormalize,
    VecTransposeImage,
    subproc_vec_env,
)

from sb3_trpo_ext import sim_state
from sb3_trpo_ext.common.observations import as_batch_of_one, index_obs, stack_obs
from sb3_trpo_ext.common.reduce import LOCAL, Reducer
from sb3_trpo_ext.common.sampling import noise_width, sample_with_noise
from sb3_trpo_ext.common.surrogate import Surrogate, vine_surrogate

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

    def surrogate(self, normalize_advantage: bool, reducer: Reducer = LOCAL) -> tuple[Any, Surrogate, int]:
        """The vine surrogate on the rollout-set states (:func:`~sb3_trpo_ext.common.surrogate.vine_surrogate`,
        paper Sec. 5.2), the states, and their count."""
        surrogate = vine_surrogate(
            self.actions, self.old_log_probs, self.q_values, self.enumerated, normalize_advantage, reducer=reducer
        )
        return self.observations, surrogate, len(self.q_values)


class VineBufferMixin:
    """Adds the rollout set to an SB3 rollout buffer (the trunk); ``reset`` clears both."""

    rollout_set: RolloutSet | None = None

    def reset(self) -> None:
        super().reset()  # type: ignore[misc]  # a mixin: the buffer class it is mixed into defines reset
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


def check_vine_wrappers(venv: VecEnv) -> tuple[list[VecEnvWrapper], VecEnv]:
    """The VecEnv wrappers (innermost first) and base VecEnv of ``venv``, if vine can branch through them.

    :raises sim_state.UnrestorableEnvError: for a VecEnv wrapper whose state branches would change
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
    if type(base) not in (DummyVecEnv, SubprocVecEnv):
        raise ValueError(
            f"sampling='vine' runs its branches in a DummyVecEnv or a SubprocVecEnv; got {type(base).__name__}"
        )
    return wrappers, base


class BranchRunner:
    """Runs branch steps on one environment: keeps the trunk's snapshots and each branch's latest state where the
    environment lives, so only actions and observations travel.

    In a ``DummyVecEnv`` it holds the environment itself. In a ``SubprocVecEnv`` it is set as an attribute of the
    worker's environment (``set_attr``) and called through ``env_method``: by the :class:`VineBranchWrapper` of
    that environment, which passes itself (the public route), or, for environments without it, directly, and it
    then takes the environment of the SB3 worker loop that calls it (:func:`_subprocess_worker_env`, checked when
    the model is built).
    """

    def __init__(self, env_index: int, env: gym.Env | None = None):
        self.env_index = env_index
        self.env = env
        self._snapshots: dict[int, sim_state.EnvState] = {}
        self._branches: dict[int, sim_state.EnvState] = {}
        self._spent: list[sim_state.EnvState] = []  # branch states of earlier rollouts: buffers to reuse
        self._trunk: sim_state.EnvState | None = None

    def __getstate__(self) -> dict[str, Any]:
        # the worker's environment is the worker's own; snapshots are not sent
        return {**self.__dict__, "env": None, "_snapshots": {}, "_branches": {}, "_spent": [], "_trunk": None}

    def __call__(self, command: str, per_env: dict[int, Any], env: gym.Env | None = None) -> Any:
        if self.env is not None:
            return getattr(self, "_" + command)(self.env, per_env[self.env_index])
        try:  # in a worker: an exception would end the worker loop, so it travels back as the result
            worker_env = env if env is not None else _subprocess_worker_env()
            return getattr(self, "_" + command)(worker_env, per_env[self.env_index])
        except Exception as error:
            return _WorkerError(error)

    def _check(self, env: gym.Env, _: Any) -> float:
        """Whether vine can branch from ``env``: the dispatch, then one restore-and-replay round trip (bit-identical
        observations and rewards); the seconds the round trip took."""
        sim_state.check_restorable(env)
        return sim_state.check_round_trip(env)

    def _snapshot(self, env: gym.Env, key: int) -> None:
        self._snapshots[key] = sim_state.get_state(env)

    def _begin(self, env: gym.Env, _: Any) -> None:
        self._trunk = sim_state.get_state(env)
        self._branches = {}

    def _step(self, env: gym.Env, branches: list[tuple[int, int, np.ndarray]]) -> list[tuple[Any, float, bool, bool]]:
        """One step of each ``(branch, snapshot key, action)``: from the branch's latest state, or the snapshot
        for its first step."""
        results = []
        with sim_state.no_monitor_writes(env):
            for branch, key, action in branches:
                sim_state.set_state(env, self._branches.get(branch) or self._snapshots[key])
                obs, reward, terminated, truncated, _ = env.step(action)
                # the branch's previous state is spent: its buffers take the new one (a MuJoCo MjData costs
                # ~0.5 ms to allocate, more than the step)
                spent = self._branches.get(branch) or (self._spent.pop() if self._spent else None)
                self._branches[branch] = sim_state.get_state(env, reuse=spent)
                results.append((obs, float(reward), bool(terminated), bool(truncated)))
        return results

    def _call_at_branches(self, env: gym.Env, request: tuple[str, list[int]]) -> list[Any]:
        """``env``'s method ``name`` (looked up through its wrappers, as ``VecEnv.env_method`` does) called at the
        latest state of each listed branch, e.g. ``action_masks`` for MaskableTRPO's branches."""
        name, branches = request
        results = []
        for branch in branches:
            sim_state.set_state(env, self._branches[branch])
            results.append(env.get_wrapper_attr(name)())
        return results

    def _end(self, env: gym.Env, _: Any) -> None:
        """Put the environment back into the trunk's state and forget the rollout's snapshots."""
        if self._trunk is not None:
            sim_state.set_state(env, self._trunk)
        self._spent.extend(self._branches.values())
        self._trunk, self._snapshots, self._branches = None, {}, {}


#: The method :class:`VineBranchWrapper` offers to ``VecEnv.env_method``.
BRANCH_METHOD = "sb3_trpo_ext_vine_branch"


class VineBranchWrapper(gym.Wrapper):
    """The public route for vine's branches into a ``SubprocVecEnv`` worker: install it as the **outermost** wrapper
    of every environment (``make_vec_env(..., vec_env_cls=SubprocVecEnv, wrapper_class=VineBranchWrapper)``, or
    :func:`vine_subproc_vec_env`). ``env_method`` then calls :meth:`sb3_trpo_ext_vine_branch` on the worker's
    environment itself. It changes nothing else (no state: snapshots see through it).

    Without it, vine reaches a plain ``SubprocVecEnv`` worker's environment through the worker's frame
    (:func:`_subprocess_worker_env`), which depends on SB3's private worker loop and is checked when the model is
    built.
    """

    def sb3_trpo_ext_vine_branch(self, command: str, per_env: dict[int, Any]) -> Any:
        """Run a branch command of vine's :class:`BranchRunner` on this environment (called by ``env_method``)."""
        # SB3's set_attr sets the runner on the worker's outermost layer: found here only if this wrapper is it
        runner = vars(self).get(sim_state.BRANCH_RUNNER_ATTRIBUTE)
        if runner is None:
            return _WorkerError(
                RuntimeError(
                    "VineBranchWrapper must be the outermost wrapper of each environment of the SubprocVecEnv "
                    "(another wrapper was applied on top of it): apply it last, e.g. with "
                    "sb3_trpo_ext.common.vine.vine_subproc_vec_env"
                )
            )
        return runner(command, per_env, env=self)


def vine_subproc_vec_env(env_fns: Sequence[Callable[[], gym.Env]], **kwargs: Any) -> SubprocVecEnv:
    """A ``SubprocVecEnv`` of ``env_fns`` whose environments each get :class:`VineBranchWrapper` as their outermost
    wrapper, so that vine's branches reach them through public API only.

    :param env_fns: functions that create the environments, as for ``SubprocVecEnv``
    :param kwargs: passed on to ``SubprocVecEnv`` (e.g. ``start_method``)
    """
    return SubprocVecEnv([_WrappedEnvFn(env_fn) for env_fn in env_fns], **kwargs)


@dataclass
class _WrappedEnvFn:
    """``lambda: VineBranchWrapper(env_fn())`` that pickles whenever ``env_fn`` does (SubprocVecEnv cloudpickles it)."""

    env_fn: Callable[[], gym.Env]

    def __call__(self) -> gym.Env:
        return VineBranchWrapper(self.env_fn())


def _subprocess_worker_env() -> gym.Env:
    """The environment of the SB3 ``SubprocVecEnv`` worker loop that is calling us through ``env_method``, for
    environments without :class:`VineBranchWrapper`.

    SB3's worker (``stable_baselines3.common.vec_env.subproc_vec_env._worker``) calls the method in its own
    frame, where its environment is the local ``env``; ``env_method`` offers no other way to reach it. This reads
    a private frame, so it is checked once when the model is built (the ``check`` command), and
    tests/unit/test_vine.py pins SB3's worker loop.
    """
    frame = sys._getframe(2)  # _worker -> BranchRunner.__call__ -> here
    if frame.f_code is not subproc_vec_env._worker.__code__ or "env" not in frame.f_locals:
        raise RuntimeError(
            "sampling='vine' cannot reach the environments of this SubprocVecEnv: this SB3 version's worker loop "
            "differs from the one vine knows. Wrap each environment in sb3_trpo_ext.common.vine.VineBranchWrapper "
            "(outermost; e.g. vine_subproc_vec_env(env_fns) or make_vec_env(..., wrapper_class=VineBranchWrapper)), "
            "or use a DummyVecEnv."
        )
    return frame.f_locals["env"]


class _WorkerError:
    """An exception raised in a worker process, re-raised in the main process."""

    def __init__(self, error: Exception):
        self.error = error


class _Workers:
    """The branch runners of a VecEnv's environments, addressed by environment index, one call for all."""

    def __init__(self, base: VecEnv):
        if isinstance(base, DummyVecEnv):
            self.runners: list[BranchRunner] | None = [BranchRunner(i, env) for i, env in enumerate(base.envs)]
        else:
            self.runners = None
            for i in range(base.num_envs):
                base.set_attr(sim_state.BRANCH_RUNNER_ATTRIBUTE, BranchRunner(i), indices=[i])
        self.base = base
        # the public route where every environment has the wrapper, else the runner itself (worker frame lookup)
        public = self.runners is None and base.has_attr(BRANCH_METHOD)
        self.method = BRANCH_METHOD if public else sim_state.BRANCH_RUNNER_ATTRIBUTE

    def call(self, command: str, per_env: dict[int, Any]) -> dict[int, Any]:
        """Run ``command`` on every environment named in ``per_env`` (in parallel in subprocesses)."""
        if self.runners is not None:
            return {i: self.runners[i](command, per_env) for i in per_env}
        indices = sorted(per_env)
        results = self.base.env_method(self.method, command, per_env, indices=indices)
        for result in results:
            if isinstance(result, _WorkerError):
                raise result.error
        return dict(zip(indices, results, strict=True))


class VineSampler:
    """Chooses the rollout set, snapshots it during the trunk, and runs the branch rollouts.

    :param venv: the training VecEnv: a ``DummyVecEnv`` or ``SubprocVecEnv`` (whose workers run the branches of
        their environment in parallel), possibly wrapped in ``VecNormalize``, ``VecTransposeImage``,
        ``VecMonitor`` or ``VecCheckNan``
    :param n_states: rollout-set size ``N`` per update (at most the trunk's ``n_steps * n_envs`` states)
    :param n_actions: actions ``K`` per state; a ``Discrete`` space with at most ``K`` actions uses each
        action once instead
    :param horizon: branch length ``H`` (the first action included)
    :param bootstrap: add ``gamma^H V(s_H)`` to branches that run the whole horizon
    :param gamma: discount factor
    :param seed: seed of the sampler's own random numbers (rollout-set positions, actions, branch noise)
    :raises sim_state.UnrestorableEnvError: if an environment or wrapper cannot be restored exactly
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
        self.wrappers, base = check_vine_wrappers(venv)
        self.n_envs = base.num_envs
        self.workers = _Workers(base)
        started = time.perf_counter()
        self.workers.call("check", dict.fromkeys(range(self.n_envs)))
        #: the construction-time restore-and-replay check's wall seconds
        self.check_seconds = time.perf_counter() - started
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
        self._states: list[tuple[int, Any]] = []  # (env index, observation as the policy saw it), snapshot key = index

    # ------------------------------------------------------------------ trunk
    def plan(self, n_steps: int) -> None:
        """Choose this rollout's set: ``N`` distinct (step, env) positions of the trunk, uniformly at random."""
        n_positions = n_steps * self.n_envs
        chosen = np.sort(self.rng.choice(n_positions, size=min(self.n_states, n_positions), replace=False))
        self._plan = {}
        for position in chosen:
            self._plan.setdefault(int(position // self.n_envs), []).append(int(position % self.n_envs))
        self._states = []

    def on_trunk_step(self, step: int, last_obs: Any) -> None:
        """Called before the trunk acts at ``step``: snapshot the environments chosen for it."""
        chosen = self._plan.get(step)
        if not chosen:
            return
        keys = {}
        for env_index in chosen:
            keys[env_index] = len(self._states)
            self._states.append((env_index, as_batch_of_one(index_obs(last_obs, int(env_index)))))
        self.workers.call("snapshot", keys)

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
        n_states = len(self._states)
        with th.no_grad():
            set_obs = obs_as_tensor(stack_obs([obs for _, obs in self._states]), device)
            distribution = self._distribution(policy, set_obs, None)
            actions = self._initial_actions(distribution, n_states, device)
            n_actions = actions.shape[1]
            old_log_probs = th.stack([distribution.log_prob(actions[:, k]) for k in range(n_actions)], dim=1)

        # Branch b = (state i, action k), b = i * K + k, runs where the environment of state i lives.
        n_branches = n_states * n_actions
        env_of = np.array([self._states[b // n_actions][0] for b in range(n_branches)])
        returns = np.zeros(n_branches)
        discount = np.ones(n_branches)
        live = self._tried(actions)  # all branches, except invalid enumerated actions (masked subclass)
        # keyed by branch index (numpy integers from np.flatnonzero hash and compare as the ints they are)
        bootstrap_obs: dict[Any, Any] = {}
        last_raw: dict[Any, Any] = {}  # each branch's latest raw observation
        branch_steps = 0
        # a copy: the rollout set keeps the first actions while the branches overwrite theirs step by step
        step_actions = actions.reshape(n_branches, *actions.shape[2:]).cpu().numpy().copy()
        all_envs = dict.fromkeys(range(self.n_envs))
        self.workers.call("begin", all_envs)
        try:
            for h in range(self.horizon):
                branches = np.flatnonzero(live)
                if branches.size == 0:
                    break
                if h > 0:  # follow the current policy, one forward pass for all live branches
                    with th.no_grad():
                        obs = obs_as_tensor(self._observe([last_raw[b] for b in branches]), device)
                        noise = self._branch_noise(n_states, n_actions, device)[branches]
                        drawn = self._sample(self._distribution(policy, obs, branches), noise)
                    step_actions[branches] = drawn.cpu().numpy().reshape(len(branches), *step_actions.shape[1:])
                env_actions = to_env_action(step_actions[branches])
                per_env: dict[int, list[tuple[int, int, np.ndarray]]] = {}
                for b, action in zip(branches, env_actions):
                    per_env.setdefault(int(env_of[b]), []).append((int(b), int(b) // n_actions, action))
                results = self.workers.call("step", per_env)
                rewards = np.zeros(len(branches), dtype=np.float32)
                outcome: dict[Any, Any] = {
                    b: result
                    for env_index, steps in per_env.items()
                    for (b, _, _), result in zip(steps, results[env_index])
                }  # keyed by int branch indices, looked up with the numpy integers of `branches`
                for j, b in enumerate(branches):
                    raw_obs, rewards[j], terminated, truncated = outcome[b]
                    last_raw[b] = raw_obs
                    if terminated or truncated:
                        live[b] = False
                        if truncated and not terminated:  # time limit: bootstrap, as the trunk does
                            bootstrap_obs[b] = raw_obs
                branch_steps += len(branches)
                returns[branches] += discount[branches] * self._reward(rewards)
                discount[branches] *= self.gamma
        finally:
            self.workers.call("end", all_envs)
        if self.bootstrap:
            for b in np.flatnonzero(live):
                bootstrap_obs[b] = last_raw[b]

        if bootstrap_obs:
            cut = sorted(bootstrap_obs)
            with th.no_grad():
                obs = obs_as_tensor(self._observe([bootstrap_obs[b] for b in cut]), device)
                values = policy.predict_values(obs).flatten().cpu().numpy()
            returns[cut] += discount[cut] * values
        rollout_set = RolloutSet(
            observations=set_obs,
            actions=actions,
            old_log_probs=old_log_probs,
            q_values=th.as_tensor(returns.reshape(n_states, n_actions), dtype=th.float32, device=device),
            enumerated=self.enumerate_actions,
        )
        return rollout_set, branch_steps

    # Vine's draws are functions of given uniforms (common random numbers): sb3_trpo_ext.common.sampling, where
    # collection's sampler lives too, says why the two draw differently.
    def _initial_actions(self, distribution: Distribution, n_states: int, device: th.device) -> th.Tensor:
        """The ``K`` actions tried from each rollout-set state, ``(N, K, *action_shape)``: every action of a small
        discrete space (uniform ``q``), else independent draws from the current policy."""
        if self.enumerate_actions:
            return th.arange(int(self.action_space.n), device=device).repeat(n_states, 1)  # type: ignore[attr-defined]  # enumerated only for a Discrete space
        width = noise_width(self.action_space)
        draws = [self._sample(distribution, self._uniforms(n_states, width, device)) for _ in range(self.n_actions)]
        return th.stack(draws, dim=1)

    def _branch_noise(self, n_states: int, n_actions: int, device: th.device) -> th.Tensor:
        """One step's policy noise for every branch: common random numbers, the ``K`` branches of a state
        (rows ``i * K .. i * K + K - 1``) share one row."""
        return self._uniforms(n_states, noise_width(self.action_space), device).repeat_interleave(n_actions, dim=0)

    # Hooks: a subclass whose policy needs more than the observations (MaskableTRPO's masks) overrides them.
    def _distribution(self, policy: Any, obs: PyTorchObs, branches: np.ndarray | None) -> Distribution:
        """The policy's distribution at ``obs``: the rollout-set states (``branches`` None), or the latest states
        of the live ``branches`` (indices ``i * K + k``)."""
        return policy.get_distribution(obs)

    def _sample(self, distribution: Distribution, noise: th.Tensor) -> th.Tensor:
        """Actions drawn from ``distribution`` as a deterministic function of ``noise`` (see
        :func:`sb3_trpo_ext.common.sampling.sample_with_noise`)."""
        return sample_with_noise(distribution, noise)

    def _tried(self, actions: th.Tensor) -> np.ndarray:
        """Which of the ``N * K`` first actions (``(N, K, ...)``, branch ``i * K + k``) get a branch: all."""
        return np.ones(actions.shape[0] * actions.shape[1], dtype=bool)

    def _uniforms(self, n_rows: int, width: int, device: th.device) -> th.Tensor:
        # open interval (0, 1): the Gaussian and Gumbel transforms are finite
        uniforms = self.rng.uniform(np.finfo(np.float32).tiny, 1.0, size=(n_rows, width)).astype(np.float32)
        return th.as_tensor(uniforms, device=device)
