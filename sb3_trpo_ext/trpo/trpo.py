"""Trust Region Policy Optimization (Schulman et al., 2015), single-path sampling."""

from __future__ import annotations

import io
import math
import pathlib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, PyTorchObs, RolloutBufferSamples, Schedule
from stable_baselines3.common.utils import explained_variance, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from sb3_trpo_ext.common.cg import CGResult, conjugate_gradient
from sb3_trpo_ext.common.fisher import (
    GaussianFamily,
    action_family,
    analytic_fisher_product,
    autograd_fisher_product,
    flatten,
    unflatten,
)
from sb3_trpo_ext.trpo.policies import (
    CnnPolicy,
    MlpPolicy,
    MultiInputPolicy,
    lean_action_sampler,
    lean_value_function,
    split_actor_critic,
)

SelfTRPO = TypeVar("SelfTRPO", bound="TRPO")

FISHER_PRODUCTS = {"analytic": analytic_fisher_product, "autograd": autograd_fisher_product}
#: Hyperparameters every TRPO checkpoint (ours or sb3-contrib's) holds.
_TRPO_SAVED_KEYS = ("target_kl", "cg_max_steps", "cg_damping", "line_search_max_iter", "n_critic_updates")


@contextmanager
def _fast_distributions() -> Iterator[None]:
    """Skip torch.distributions' argument validation: SB3 builds a distribution per policy call, and the
    data-dependent checks cost more than a small policy's forward pass. Our own inputs are always valid."""
    previous = th.distributions.Distribution._validate_args
    th.distributions.Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        th.distributions.Distribution.set_default_validate_args(previous)


def _index_obs(obs: PyTorchObs, index: th.Tensor | slice) -> PyTorchObs:
    if isinstance(obs, dict):
        return {key: value[index] for key, value in obs.items()}
    return obs[index]


def _stack_obs(observations: list[Any]) -> Any:
    """Stack per-step ``(n_envs, ...)`` observations (arrays or dicts of arrays) into ``(n_steps * n_envs, ...)``."""
    if isinstance(observations[0], dict):
        return {key: _stack_obs([obs[key] for obs in observations]) for key in observations[0]}
    stacked = np.stack(observations)
    return stacked.reshape(-1, *stacked.shape[2:])


def _as_batch_of_one(observation: Any) -> Any:
    if isinstance(observation, dict):
        return {key: np.asarray(value)[None] for key, value in observation.items()}
    return np.asarray(observation)[None]


class TRPO(OnPolicyAlgorithm):
    """
    Trust Region Policy Optimization (TRPO), single-path sampling.

    Paper: https://arxiv.org/abs/1502.05477. Each update maximises the surrogate advantage
    ``mean(A * pi_theta(a|s) / pi_old(a|s))`` subject to ``mean_s KL(pi_old(.|s) || pi_theta(.|s)) <= target_kl``
    (Sec. 4-6): the natural-gradient direction ``F^-1 g`` is found by conjugate gradient on exact
    Fisher-vector products (Appendix C), scaled to the trust-region boundary and backtracked until the
    true KL (summed over action dimensions) and a surrogate improvement are both satisfied.
    The critic is then fitted by minibatch regression on the returns.

    Hyperparameter names and defaults follow sb3-contrib's TRPO, so code and RL Zoo files carry over.
    Note that ``target_kl`` bounds the *true* KL, which for diagonal Gaussian and Bernoulli policies is
    ``action_dim`` times the per-dimension mean that sb3-contrib bounds.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy). The aliases
        default to separate actor and critic feature extractors (``share_features_extractor=False``).
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate of the critic's optimizer, a float or a schedule of the
        remaining progress (from 1 to 0). The actor's step size is set by ``target_kl``.
    :param n_steps: The number of steps to run for each environment per update
        (the batch of an update is ``n_steps * n_envs``)
    :param batch_size: Minibatch size of the critic's regression
    :param gamma: Discount factor
    :param cg_max_steps: Maximum number of conjugate gradient iterations (Fisher-vector products)
    :param cg_damping: Damping added to the Fisher matrix (``F + cg_damping * I``)
    :param line_search_shrinking_factor: Step-size reduction factor of the backtracking line search,
        in (0, 1) (candidates are ``theta_old + factor**i * full_step``)
    :param line_search_max_iter: Maximum number of candidates of the line search
    :param n_critic_updates: Number of epochs of the critic's minibatch regression per update
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE)
        instead of action noise exploration (default: False)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE
        Default: -1 (only sample at the beginning of the rollout)
    :param rollout_buffer_class: Rollout buffer class to use. If ``None``, it will be automatically selected.
    :param rollout_buffer_kwargs: Keyword arguments to pass to the rollout buffer on creation
    :param normalize_advantage: Whether to normalize the advantages of the batch
    :param target_kl: Trust-region size: bound on the mean over states of the true KL divergence
        ``KL(pi_old || pi_new)`` of an accepted step
    :param sub_sampling_factor: Use every ``sub_sampling_factor``-th state for the Fisher-vector products
        only (paper, Appendix C); the surrogate and the KL check use the whole batch
    :param cg_rtol: Relative residual tolerance of conjugate gradient (``||r|| <= cg_rtol * ||g||``)
    :param fisher: How Fisher-vector products are computed: ``"analytic"`` (``J^T M J v`` with the
        closed-form Fisher ``M`` of the action distribution, forward- and reverse-mode products) or
        ``"autograd"`` (Hessian of the KL by double backprop, the reference)
    :param stats_window_size: Window size for the rollout logging, specifying the number of episodes to average
        the reported success rate, mean episode length, and mean reward over
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: the verbosity level: 0 no output, 1 info, 2 debug
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
        Setting it to auto, the code will be run on the GPU if possible.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    policy: ActorCriticPolicy

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-3,
        n_steps: int = 2048,
        batch_size: int = 128,
        gamma: float = 0.99,
        cg_max_steps: int = 15,
        cg_damping: float = 0.1,
        line_search_shrinking_factor: float = 0.8,
        line_search_max_iter: int = 10,
        n_critic_updates: int = 10,
        gae_lambda: float = 0.95,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        normalize_advantage: bool = True,
        target_kl: float = 0.01,
        sub_sampling_factor: int = 1,
        cg_rtol: float = 1e-10,
        fisher: str = "analytic",
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=0.0,  # TRPO has no entropy bonus
            vf_coef=0.0,  # the critic has its own regression
            max_grad_norm=0.0,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            device=device,
            seed=seed,
            _init_setup_model=False,
            supported_action_spaces=(spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary),
        )
        self.batch_size = batch_size
        self.cg_max_steps = cg_max_steps
        self.cg_damping = cg_damping
        self.cg_rtol = cg_rtol
        self.fisher = fisher
        self.line_search_shrinking_factor = line_search_shrinking_factor
        self.line_search_max_iter = line_search_max_iter
        self.n_critic_updates = n_critic_updates
        self.normalize_advantage = normalize_advantage
        self.target_kl = target_kl
        self.sub_sampling_factor = sub_sampling_factor
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------ setup
    def _validate_hyperparameters(self) -> None:
        """Raise ``ValueError`` naming the first bad hyperparameter. Runs in ``_setup_model``, so values
        restored or overridden by ``TRPO.load(..., **kwargs)`` are checked too."""

        def check(name: str, ok: bool, allowed: str) -> None:
            if not ok:
                raise ValueError(f"Invalid {name}={getattr(self, name)!r}: must be {allowed}")

        def is_int(value: Any) -> bool:
            return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

        def is_real(value: Any) -> bool:
            return isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)

        check("n_steps", is_int(self.n_steps) and self.n_steps >= 1, "an integer >= 1")
        check("batch_size", is_int(self.batch_size) and self.batch_size >= 1, "an integer >= 1")
        check("gamma", is_real(self.gamma) and 0 <= self.gamma <= 1, "in [0, 1]")
        check("gae_lambda", is_real(self.gae_lambda) and 0 <= self.gae_lambda <= 1, "in [0, 1]")
        check("target_kl", is_real(self.target_kl) and 0 < self.target_kl < math.inf, "a finite number > 0")
        check("cg_max_steps", is_int(self.cg_max_steps) and self.cg_max_steps >= 1, "an integer >= 1")
        check("cg_damping", is_real(self.cg_damping) and 0 <= self.cg_damping < math.inf, "a finite number >= 0")
        check("cg_rtol", is_real(self.cg_rtol) and 0 <= self.cg_rtol < math.inf, "a finite number >= 0")
        check(
            "line_search_shrinking_factor",
            is_real(self.line_search_shrinking_factor) and 0 < self.line_search_shrinking_factor < 1,
            "in the open interval (0, 1)",
        )
        check(
            "line_search_max_iter",
            is_int(self.line_search_max_iter) and self.line_search_max_iter >= 1,
            "an integer >= 1",
        )
        check("n_critic_updates", is_int(self.n_critic_updates) and self.n_critic_updates >= 1, "an integer >= 1")
        check(
            "sub_sampling_factor", is_int(self.sub_sampling_factor) and self.sub_sampling_factor >= 1, "an integer >= 1"
        )
        check(
            "fisher",
            isinstance(self.fisher, str) and self.fisher in FISHER_PRODUCTS,
            f"one of {sorted(FISHER_PRODUCTS)}",
        )
        check(
            "learning_rate",
            callable(self.learning_rate) or (is_real(self.learning_rate) and 0 <= self.learning_rate < math.inf),
            "a finite number >= 0 or a schedule",
        )
        n_envs = getattr(self, "n_envs", None)
        if n_envs:
            buffer_size = self.n_steps * n_envs
            check(
                "batch_size",
                self.batch_size <= buffer_size,
                f"<= n_steps * n_envs = {self.n_steps} * {n_envs} = {buffer_size}",
            )
            if self.normalize_advantage:
                check(
                    "n_steps",
                    buffer_size > 1,
                    f"such that n_steps * n_envs > 1 to normalize advantages (n_envs={n_envs})",
                )

    def _setup_model(self) -> None:
        self._validate_hyperparameters()
        super()._setup_model()
        self._actor_params, self._critic_params = split_actor_critic(self.policy)
        # The critic gets an optimizer of its own: the actor moves only through the trust-region step.
        optimizer_kwargs = dict(self.policy.optimizer_kwargs)
        if self.policy.optimizer_class is th.optim.Adam and not {"fused", "foreach"} & optimizer_kwargs.keys():
            # On CPU, Adam defaults to its per-tensor loop; the fused kernel halves the step's cost.
            optimizer_kwargs["fused"] = True
        self.policy.optimizer = self.policy.optimizer_class(
            self._critic_params, lr=self.lr_schedule(1), **optimizer_kwargs
        )

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_actor_params", "_critic_params"]

    # ------------------------------------------------------------- collection
    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """Collect ``n_rollout_steps`` per environment with the current policy and fill ``rollout_buffer``.

        Same contract as SB3's ``collect_rollouts`` (per-step callbacks that may stop training, episode
        statistics, bootstrapping on time-limit truncation, gSDE noise resets, any ``rollout_buffer_class``),
        but each step runs only the actor to sample actions: values and log-probabilities are computed in
        one batch after the loop, then the buffer is filled. Callbacks therefore see ``new_obs``, ``actions``,
        ``clipped_actions``, ``rewards``, ``dones`` and ``infos`` as locals, but no per-step ``values``.

        :return: True if ``n_rollout_steps`` were collected, False if a callback stopped the rollout.
        """
        assert self._last_obs is not None, "No previous observation was provided"
        self.policy.set_training_mode(False)
        rollout_buffer.reset()
        if self.use_sde:
            self.policy.reset_noise(env.num_envs)
        callback.on_rollout_start()
        sample_actions = lean_action_sampler(self.policy) or (
            lambda obs: self.policy.get_distribution(obs).get_actions()
        )

        observations: list[Any] = []
        sampled_actions: list[th.Tensor] = []
        step_rewards: list[np.ndarray] = []
        episode_starts: list[np.ndarray] = []
        truncated: list[tuple[int, int, Any]] = []  # (step, env, terminal observation)
        n_steps = 0
        while n_steps < n_rollout_steps:
            if self.use_sde and self.sde_sample_freq > 0 and n_steps % self.sde_sample_freq == 0:
                self.policy.reset_noise(env.num_envs)
            with th.no_grad(), _fast_distributions():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                action_tensor = sample_actions(obs_tensor)
            actions = action_tensor.cpu().numpy().reshape((-1, *self.action_space.shape))
            clipped_actions = actions
            if isinstance(self.action_space, spaces.Box):
                if self.policy.squash_output:
                    clipped_actions = self.policy.unscale_action(clipped_actions)
                else:
                    clipped_actions = np.clip(actions, self.action_space.low, self.action_space.high)

            new_obs, rewards, dones, infos = env.step(clipped_actions)
            self.num_timesteps += env.num_envs

            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)

            for env_idx, done in enumerate(dones):
                if done and infos[env_idx].get("TimeLimit.truncated", False):
                    terminal_obs = infos[env_idx].get("terminal_observation")
                    if terminal_obs is not None:
                        truncated.append((n_steps, env_idx, terminal_obs))
            observations.append(
                {k: np.array(v) for k, v in self._last_obs.items()}  # type: ignore[union-attr]
                if isinstance(self._last_obs, dict)
                else np.array(self._last_obs)
            )
            sampled_actions.append(action_tensor)
            step_rewards.append(np.array(rewards, dtype=np.float32))
            episode_starts.append(np.array(self._last_episode_starts))
            n_steps += 1
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones

        with th.no_grad(), _fast_distributions():
            batch_obs = obs_as_tensor(_stack_obs(observations), self.device)
            batch_actions = th.cat(sampled_actions)
            values, log_probs, _ = self.policy.evaluate_actions(batch_obs, batch_actions)
            values = values.view(n_steps, env.num_envs)
            log_probs = log_probs.view(n_steps, env.num_envs)
            if truncated:  # time-limit truncation: bootstrap with the value of the terminal state
                terminal_obs = obs_as_tensor(
                    _stack_obs([_as_batch_of_one(obs) for _, _, obs in truncated]), self.device
                )
                terminal_values = self.policy.predict_values(terminal_obs).flatten().cpu().numpy()
                for (step, env_idx, _), value in zip(truncated, terminal_values, strict=True):
                    step_rewards[step][env_idx] += self.gamma * value
            last_values = self.policy.predict_values(obs_as_tensor(new_obs, self.device))  # type: ignore[arg-type]

        buffer_actions = batch_actions.cpu().numpy().reshape(n_steps, env.num_envs, -1)
        for step in range(n_steps):
            rollout_buffer.add(
                observations[step],
                buffer_actions[step],
                step_rewards[step],
                episode_starts[step],
                values[step],
                log_probs[step],
            )
        rollout_buffer.compute_returns_and_advantage(last_values=last_values, dones=dones)

        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    # ----------------------------------------------------------------- update
    def train(self) -> None:
        """One TRPO update of the actor (natural gradient + line search), then the critic's regression."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        batch = next(self.rollout_buffer.get(batch_size=None))

        with _fast_distributions():
            actor_stats = self._update_actor(batch)
        value_loss = self._update_critic(batch)

        self._n_updates += 1
        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())
        for key, value in actor_stats.items():
            self.logger.record(f"train/{key}", value, exclude="tensorboard" if isinstance(value, str) else None)
        self.logger.record("train/value_loss", value_loss)
        self.logger.record("train/explained_variance", explained_var)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    def _update_actor(self, batch: RolloutBufferSamples) -> dict[str, Any]:
        """Natural-gradient step with backtracking line search (paper Sec. 6 and Appendix C).

        :return: the statistics to log
        """
        obs, old_log_prob = batch.observations, batch.old_log_prob
        actions = batch.actions.long().flatten() if isinstance(self.action_space, spaces.Discrete) else batch.actions
        advantages = batch.advantages
        if self.normalize_advantage:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        actor_params = self._actor_params

        # Surrogate L(theta) = mean(A * pi_theta / pi_old) and its gradient g at theta_old (Eq. 14)
        distribution = self.policy.get_distribution(obs)
        family = action_family(distribution)
        dist_params = family.params(distribution)
        dist_old = tuple(t.detach() for t in dist_params)
        surrogate = (advantages * th.exp(distribution.log_prob(actions) - old_log_prob)).mean()
        gradient = flatten(th.autograd.grad(surrogate, actor_params, retain_graph=True))

        stats: dict[str, Any] = {
            "policy_objective": surrogate.item(),
            "kl": 0.0,
            "cg_iterations": 0,
            "cg_residual": float("nan"),
            "line_search_steps": 0,
            "is_line_search_success": 0.0,
        }
        if isinstance(family, GaussianFamily):
            stats["std"] = dist_old[1].exp().mean().item()
        if not th.isfinite(gradient).all() or not th.isfinite(surrogate):
            warnings.warn("TRPO: non-finite surrogate or policy gradient, the actor update is skipped", stacklevel=2)
            return stats

        # Search direction s ~ F^-1 g by conjugate gradient, then the full step to the trust-region
        # boundary: 1/2 (beta s)^T F (beta s) = target_kl  =>  beta = sqrt(2 target_kl / s^T F s)  (Appendix C)
        # Fisher of the mean KL at theta_old, on every sub_sampling_factor-th state (Appendix C)
        if self.sub_sampling_factor > 1:
            subsample = _index_obs(obs, slice(None, None, self.sub_sampling_factor))
            dist_params = family.params(self.policy.get_distribution(subsample))
        fisher_product = FISHER_PRODUCTS[self.fisher](dist_params, actor_params, family, self.cg_damping)
        cg: CGResult = conjugate_gradient(fisher_product, gradient, max_iter=self.cg_max_steps, rtol=self.cg_rtol)
        stats.update(cg_iterations=cg.iterations, cg_residual=cg.residual_norm, cg_stop_reason=cg.reason)
        curvature = th.dot(cg.x, fisher_product(cg.x))
        if not (th.isfinite(cg.x).all() and th.isfinite(curvature) and curvature > 0):
            warnings.warn(
                f"TRPO: invalid search direction (s^T F s = {curvature.item()}), the actor update is skipped",
                stacklevel=2,
            )
            return stats
        full_step = th.sqrt(2 * self.target_kl / curvature) * cg.x

        theta_old = flatten(actor_params).detach().clone()
        with th.no_grad():
            for step in range(self.line_search_max_iter):
                self._set_actor(actor_params, theta_old + self.line_search_shrinking_factor**step * full_step)
                distribution = self.policy.get_distribution(obs)
                kl = family.kl(dist_old, family.params(distribution)).mean()
                new_surrogate = (advantages * th.exp(distribution.log_prob(actions) - old_log_prob)).mean()
                # Accept the first candidate inside the trust region that improves the surrogate.
                if kl <= self.target_kl and new_surrogate > surrogate:  # False for NaN as well
                    stats.update(
                        policy_objective=new_surrogate.item(),
                        kl=kl.item(),
                        line_search_steps=step + 1,
                        is_line_search_success=1.0,
                    )
                    return stats
            self._set_actor(actor_params, theta_old)  # no acceptable step: keep the old policy
        stats["line_search_steps"] = self.line_search_max_iter
        return stats

    @staticmethod
    def _set_actor(actor_params: list[nn.Parameter], flat: th.Tensor) -> None:
        with th.no_grad():
            for param, value in zip(actor_params, unflatten(flat, actor_params), strict=True):
                param.copy_(value)

    def _update_critic(self, batch: RolloutBufferSamples) -> float:
        """``n_critic_updates`` epochs of minibatch regression of the values on the returns.

        :return: the mean minibatch loss
        """
        n_samples = batch.returns.shape[0]
        value_of = lean_value_function(self.policy)
        losses = []
        for _ in range(self.n_critic_updates):
            permutation = th.from_numpy(np.random.permutation(n_samples)).to(self.device)
            for start in range(0, n_samples, self.batch_size):
                index = permutation[start : start + self.batch_size]
                values = value_of(_index_obs(batch.observations, index))
                loss = F.mse_loss(values, batch.returns[index])
                grads = th.autograd.grad(loss, self._critic_params)
                for param, grad in zip(self._critic_params, grads, strict=True):
                    param.grad = grad
                self.policy.optimizer.step()
                losses.append(loss.detach())
        return th.stack(losses).mean().item()

    # ------------------------------------------------------------ public API
    def learn(
        self: SelfTRPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "TRPO_ext",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfTRPO:
        """Train for ``total_timesteps`` environment steps (see SB3's ``learn``). The default TensorBoard
        run name ``TRPO_ext`` keeps our runs apart from sb3-contrib's ``TRPO`` runs in a shared folder."""
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfTRPO],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfTRPO:
        """Load a model saved by this TRPO or by sb3-contrib's TRPO (see SB3's ``load``).

        A model from sb3-contrib keeps its saved hyperparameters; since its ``target_kl`` bounded the
        per-dimension mean KL, a warning gives the equivalent true-KL value to pass as ``target_kl=...``.
        Its critic's optimizer state is remapped onto our critic-only optimizer.

        :raises ValueError: if the file is not a zip archive or was not saved by a TRPO
        """
        data, _, _ = load_from_zip_file(path, device=device, custom_objects=custom_objects)
        if isinstance(path, io.BufferedIOBase):
            path.seek(0)
        missing = [key for key in _TRPO_SAVED_KEYS if key not in (data or {})]
        if missing:
            raise ValueError(f"{path!r} was not saved by a TRPO model: it lacks the hyperparameters {missing}")
        if "fisher" not in data:  # saved by sb3-contrib
            action_dim = _kl_dimensions(data.get("action_space"))
            warnings.warn(
                f"{path!r} was saved by sb3-contrib's TRPO, whose target_kl={data['target_kl']} bounds the KL "
                f"averaged over {action_dim} action dimension(s). This TRPO bounds the true (summed) KL, so the "
                f"same trust region is target_kl={data['target_kl'] * action_dim:g}; the saved value is kept "
                "unless you pass target_kl=... to load().",
                stacklevel=2,
            )
        return super().load(path, env, device, custom_objects, print_system_info, force_reset, **kwargs)

    def set_parameters(
        self,
        load_path_or_dict: str | dict[str, Any],
        exact_match: bool = True,
        device: th.device | str = "auto",
    ) -> None:
        """See SB3's ``set_parameters``; an optimizer state over all policy parameters (sb3-contrib's layout)
        is remapped onto the critic's optimizer."""
        if isinstance(load_path_or_dict, dict):
            params = load_path_or_dict
        else:
            _, params, _ = load_from_zip_file(load_path_or_dict, device=device)
        optimizer_state = params.get("policy.optimizer")
        if optimizer_state is not None:
            params = {**params, "policy.optimizer": self._critic_optimizer_state(optimizer_state)}
        super().set_parameters(params, exact_match=exact_match, device=device)

    def _critic_optimizer_state(self, state: dict[str, Any]) -> dict[str, Any]:
        own = self.policy.optimizer.state_dict()
        saved_ids = [i for group in state["param_groups"] for i in group["params"]]
        if len(saved_ids) == len(self._critic_params):
            return state
        all_params = list(self.policy.parameters())
        if len(saved_ids) != len(all_params):
            warnings.warn(
                "The saved optimizer state does not match the critic's parameters: the critic's optimizer starts fresh",
                stacklevel=3,
            )
            return own
        critic_ids = {id(p) for p in self._critic_params}
        positions = [i for i, p in enumerate(all_params) if id(p) in critic_ids]
        remapped_state = {
            new: state["state"][saved_ids[old]] for new, old in enumerate(positions) if saved_ids[old] in state["state"]
        }
        group = {**state["param_groups"][0], "params": list(range(len(positions)))}
        for implementation in ("fused", "foreach"):  # keep our optimizer's kernel choice
            if implementation in own["param_groups"][0]:
                group[implementation] = own["param_groups"][0][implementation]
        return {"state": remapped_state, "param_groups": [group]}


def _kl_dimensions(action_space: spaces.Space | None) -> int:
    """Factor between the true KL and SB3's per-dimension mean KL (diagonal Gaussian, Bernoulli)."""
    if isinstance(action_space, (spaces.Box, spaces.MultiBinary)):
        return int(np.prod(action_space.shape))
    return 1
