"""Trust Region Policy Optimization (Schulman et al., 2015): single-path and vine sampling."""

from __future__ import annotations

import inspect
import io
import pathlib
import warnings
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib.common.maskable.utils import is_masking_supported
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback, ConvertCallback
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.save_util import load_from_zip_file, recursive_getattr
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, PyTorchObs, RolloutBufferSamples, Schedule
from stable_baselines3.common.utils import explained_variance, is_vectorized_observation, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo_ext.common.fisher import (
    FISHER_PRODUCTS,
    ActionFamily,
    action_family,
)
from sb3_trpo_ext.common.natural_gradient import ActorFunctions, TrustRegion, natural_gradient_step
from sb3_trpo_ext.common.observations import as_batch_of_one, index_obs, stack_obs
from sb3_trpo_ext.common.reduce import LOCAL, Reducer
from sb3_trpo_ext.common.surrogate import Surrogate, single_path_surrogate
from sb3_trpo_ext.common.vine import (
    SUPPORTED_DISTRIBUTIONS,
    DictVineRolloutBuffer,
    VineBufferMixin,
    VineRolloutBuffer,
    VineSampler,
)
from sb3_trpo_ext.distributed.callbacks import GlobalProgressBar, RankCallback
from sb3_trpo_ext.distributed.learn import learn_data_parallel
from sb3_trpo_ext.distributed.ranks import Ranks, join
from sb3_trpo_ext.fast import Accelerations
from sb3_trpo_ext.fast.numpy_actor import NumpyActor
from sb3_trpo_ext.safe_load import check_readable_zip, explain_weights_only_refusal, load_data
from sb3_trpo_ext.trpo.checkpoint import check_exists, check_trpo_data, critic_optimizer_state
from sb3_trpo_ext.trpo.critic import fit_critic
from sb3_trpo_ext.trpo.hyperparams import (
    AUTOMATIC_BUFFERS,
    is_int,
    require,
    validate_hyperparameters,
    warn_about_minibatches,
)
from sb3_trpo_ext.trpo.policies import CnnPolicy, MlpPolicy, MultiInputPolicy, split_actor_critic
from sb3_trpo_ext.trpo.rollout import describe_non_finite, fast_distributions, torch_threads

SelfTRPO = TypeVar("SelfTRPO", bound="TRPO")

#: The policy aliases of the family's other classes (named, not imported: they import this module), for the error
#: of an alias the class does not take.
_FAMILY_POLICIES = {
    "TRPO": ("MlpPolicy", "CnnPolicy", "MultiInputPolicy"),
    "RecurrentTRPO": ("MlpLstmPolicy", "CnnLstmPolicy", "MultiInputLstmPolicy"),
}


class TRPO(OnPolicyAlgorithm):
    """
    Trust Region Policy Optimization (TRPO), with the paper's single-path (default) or vine sampling.

    Paper: https://arxiv.org/abs/1502.05477. Each update maximises the surrogate advantage
    ``mean(A * pi_theta(a|s) / pi_old(a|s))`` subject to ``mean_s KL(pi_old(.|s) || pi_theta(.|s)) <= target_kl``
    (Sec. 4-6): the natural-gradient direction ``F^-1 g`` is found by conjugate gradient on exact
    Fisher-vector products (Appendix C), scaled to the trust-region boundary and backtracked until the
    true KL (summed over action dimensions) and a surrogate improvement are both satisfied.
    The critic is then fitted by minibatch regression on the returns.

    With ``sampling="vine"`` (Sec. 5.2) the actor's surrogate comes instead from a rollout set of trunk states,
    several actions per state and short branch rollouts from the restored simulator states with common random
    numbers (see :mod:`sb3_trpo_ext.common.vine`); the environments must be restorable
    (:mod:`sb3_trpo_ext.sim_state`), which is checked at construction.

    The class reads as SB3's algorithms do: hyperparameters and setup (:mod:`~sb3_trpo_ext.trpo.hyperparams`),
    collection (``collect_rollouts``; :mod:`~sb3_trpo_ext.trpo.rollout`, :mod:`~sb3_trpo_ext.fast.numpy_actor`),
    ``train()`` (batch -> surrogate -> :func:`~sb3_trpo_ext.common.natural_gradient.natural_gradient_step` -> ``_update_critic`` (:mod:`~sb3_trpo_ext.trpo.critic`) ->
    log), save/load compatibility (``load``, ``set_parameters``; :mod:`~sb3_trpo_ext.trpo.checkpoint`). Each SB3
    method it overrides says in its docstring why (sb3-contrib's TRPO overrides ``_setup_model``, ``train`` and
    ``learn``; ours also ``collect_rollouts``, ``predict``, ``load``, ``set_parameters``, ``set_env``,
    ``set_random_seed`` and ``_excluded_save_params``).

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
    :param sampling: ``"single_path"`` (the default) or ``"vine"``
    :param vine_n_states: Vine: size ``N`` of the rollout set, trunk states chosen at random per update
        (at most ``n_steps * n_envs``)
    :param vine_n_actions: Vine: actions ``K`` tried per state (>= 2), drawn from the current policy; a
        ``Discrete`` space with at most ``K`` actions tries each of its actions once instead
    :param vine_horizon: Vine: length ``H`` of a branch rollout, its first action included
    :param vine_bootstrap: Vine: add ``gamma^H V(s_H)`` to the return of a branch that runs its whole horizon
        (a branch cut by a time limit always bootstraps, one that terminates never does)
    :param num_threads: torch intra-op threads while ``learn()`` runs, the previous setting restored afterwards:
        ``"auto"`` (one thread for networks without an image input, whose tiny operations only lose time to a
        thread pool, all the more when other processes share the cores; torch's own setting for CNN policies),
        an integer >= 1, or None (leave torch's setting alone)
    :param fast_collect: Draw the actions of SB3's own policies (diagonal Gaussian without gSDE, categorical,
        multi-categorical or Bernoulli actions) with the model's own generator, seeded from ``seed``: from a numpy
        copy of the actor where it computes exactly what the policy does (MLP policies on flat ``Box`` or
        Dict-of-``Box`` observations), else from the actor's head computed by the policy in torch; the same
        function gives the same draws whichever policy class computes it. ``False``: every step calls the
        policy in torch
    :param accelerate: Use the speed layer (:mod:`sb3_trpo_ext.fast`) where it applies: collection's numpy actor
        (with ``fast_collect``), the whole-rollout buffer fill and GAE, the Fisher product and critic gradients
        written out for plain MLPs, ``predict``'s numpy actor. ``False``: the plain algorithm, SB3's collection
        loop and autograd throughout (the same update to float precision, slower; actions drawn from torch's
        generator)
    :param distributed_timeout: Data-parallel training (``torchrun``, see docs/distributed.md): seconds a rank may
        make no progress outside a callback before the job stops with an error naming it (a hung simulator); also
        the process group's collective timeout when this class initialises the group
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
    #: every mean over states of the update goes through it (:mod:`sb3_trpo_ext.common.reduce`): the identity in
    #: one process
    _reducer: Reducer = LOCAL

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
        sampling: str = "single_path",
        vine_n_states: int = 64,
        vine_n_actions: int = 4,
        vine_horizon: int = 20,
        vine_bootstrap: bool = True,
        num_threads: int | str | None = "auto",
        fast_collect: bool = True,
        accelerate: bool = True,
        distributed_timeout: float = 300.0,
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
        self.sampling = sampling
        self.vine_n_states = vine_n_states
        self.vine_n_actions = vine_n_actions
        self.vine_horizon = vine_horizon
        self.vine_bootstrap = vine_bootstrap
        self.num_threads = num_threads
        self.fast_collect = fast_collect
        self.accelerate = accelerate
        self.distributed_timeout = distributed_timeout
        #: simulator steps of vine's branches so far (never counted in ``num_timesteps``)
        self.vine_branch_steps = 0
        self._vine: VineSampler | None = None
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------ setup
    def _get_policy_from_name(self, policy_name: str) -> type[BasePolicy]:
        """SB3's lookup of a policy alias, with an error that lists this class's aliases and names the class of the
        family that takes a policy of another kind (SB3 says only "Policy ... unknown").

        :raises ValueError: for a name that is not one of :attr:`policy_aliases`
        """
        if policy_name in self.policy_aliases:
            return self.policy_aliases[policy_name]
        owner = next((cls for cls, names in _FAMILY_POLICIES.items() if policy_name in names), None)
        hint = (
            f"; {policy_name!r} is a policy of sb3_trpo_ext.{owner}" if owner and owner != type(self).__name__ else ""
        )
        raise ValueError(
            f"Unknown policy {policy_name!r} for {type(self).__name__}: choose one of {sorted(self.policy_aliases)}, "
            f"or pass a policy class{hint}"
        )

    def _validate_hyperparameters(self) -> None:
        """Raise ``ValueError`` naming the first bad hyperparameter (:func:`validate_hyperparameters`). Runs in
        ``_setup_model``, so values restored or overridden by ``TRPO.load(..., **kwargs)`` are checked too."""
        validate_hyperparameters(self)

    def _setup_model(self) -> None:
        """SB3's ``_setup_model`` (policy, rollout buffer), overridden to validate first, give vine its rollout
        buffer and sampler, and give the critic an optimizer of its own (the actor moves only by the
        natural-gradient step)."""
        self._validate_hyperparameters()
        #: the data-parallel ranks this model trains with (None: one process); joined by ``learn()``
        self._ranks: Ranks | None = None
        self._reducer = LOCAL
        if getattr(self, "n_envs", None):
            warn_about_minibatches(self)
        if self.sampling == "vine" and self.rollout_buffer_class in AUTOMATIC_BUFFERS:
            self.rollout_buffer_class = (
                DictVineRolloutBuffer if isinstance(self.observation_space, spaces.Dict) else VineRolloutBuffer
            )
        super()._setup_model()
        if self.env is not None and type(self)._action_masks is TRPO._action_masks and is_masking_supported(self.env):
            warnings.warn(
                f"The environment provides action_masks(), which {type(self).__name__} ignores (it may draw invalid "
                "actions): use sb3_trpo_ext.MaskableTRPO to apply the masks",
                stacklevel=3,
            )
        self._speed = Accelerations(bool(self.accelerate))
        self._setup_vine()
        self._actor_params, self._critic_params = split_actor_critic(self.policy)
        # The critic gets an optimizer of its own: the actor moves only through the trust-region step.
        optimizer_kwargs = dict(self.policy.optimizer_kwargs)
        if self.policy.optimizer_class is th.optim.Adam and not {"fused", "foreach"} & optimizer_kwargs.keys():
            # On CPU, Adam defaults to its per-tensor loop; the fused kernel halves the step's cost.
            optimizer_kwargs["fused"] = True
        self.policy.optimizer = self.policy.optimizer_class(  # type: ignore[call-arg]  # SB3 types the class as the base Optimizer, whose __init__ takes no lr
            self._critic_params, lr=self.lr_schedule(1), **optimizer_kwargs
        )

    def _join_ranks(self) -> None:
        """Under ``torchrun``, become one rank of a data-parallel job (:mod:`sb3_trpo_ext.distributed`), once, when
        ``learn()`` first runs (a model built or loaded only to predict, on some ranks, takes part in no
        collective): the update's means become global (the reducer), every rank takes rank 0's seed (drawn there
        when None) and reseeds from it, its environments and action streams its own. In one process ``_ranks``
        stays None and nothing changes."""
        if self._ranks is not None:
            return
        self._ranks = join(float(self.distributed_timeout))
        if self._ranks is None:
            return
        self._reducer = self._ranks.reducer
        self._given_seed = self.seed  # compared across ranks before training starts
        self.seed = self._ranks.broadcast_seed(self.seed)
        #: the critic's minibatch order, the same on every rank (the critic fits the gathered batch)
        self._shared_rng = np.random.default_rng([self.seed, 3])
        # this rank's episodes (return, length, time) and successes since the last rollout's end
        self._new_episodes: list[tuple[float, float, float]] = []
        self._new_successes: list[float] = []
        self.set_random_seed(self.seed)  # the rank's environment seeds and streams (applied at learn()'s reset)
        self._setup_vine()  # the vine sampler draws from the rank's own stream

    def _setup_vine(self) -> None:
        """The vine sampler for the current environment (None for single path or without an environment).

        :raises UnrestorableEnvError: if an environment or wrapper cannot be restored exactly
        """
        self._vine = None
        if self.sampling != "vine" or self.env is None:
            return
        self._vine = self._make_vine_sampler(
            n_states=self.vine_n_states,
            n_actions=self.vine_n_actions,
            horizon=self.vine_horizon,
            bootstrap=bool(self.vine_bootstrap),
            gamma=self.gamma,
            seed=self.seed if self._ranks is None or self.seed is None else [self.seed, 4, self._ranks.rank],
        )
        if self.verbose >= 1:  # the restore-and-replay check runs once per environment: say what it cost
            print(
                f"Vine: restoring the {self._vine.n_envs} environment(s) checked exact by a restore-and-replay round "
                f"trip in {self._vine.check_seconds * 1e3:.1f} ms"
            )

    def _make_vine_sampler(self, **settings: Any) -> VineSampler:
        """The vine sampler for this algorithm's policies on ``self.env`` (MaskableTRPO's draws masked actions).

        :param settings: the rollout-set size, actions per state, horizon, bootstrap, gamma and seed
        :raises ValueError: for an action distribution vine cannot branch
        """
        if not isinstance(self.policy.action_dist, SUPPORTED_DISTRIBUTIONS):
            raise ValueError(
                f"sampling='vine' does not support the action distribution {type(self.policy.action_dist).__name__}"
            )
        assert self.env is not None  # _setup_vine builds no sampler without an environment
        return VineSampler(self.env, **settings)

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """See SB3's ``set_env``; with vine sampling the new environment is checked and branched from."""
        super().set_env(env, force_reset=force_reset)
        self._setup_vine()

    def set_random_seed(self, seed: int | None = None) -> None:
        """See SB3's ``set_random_seed``; also seeds the generator that draws the actions of fast collection.

        A data-parallel rank ``r`` with ``k`` environments seeds them ``seed + r*k .. seed + r*k + k-1`` (the seeds
        of environments ``r*k ..`` in one process with every rank's environments, SB3's ``seed + i`` rule), and
        draws its actions from streams of its own (``[seed, stream, r]``); the global generators stay equal on
        every rank (the same initial parameters, the same minibatch order of the rollout buffer)."""
        super().set_random_seed(seed)
        ranks = getattr(self, "_ranks", None)
        rank_tag = [] if ranks is None else [ranks.rank]
        # a stream of its own: [seed, 1] is independent of numpy's global generator seeded with `seed`
        self._collect_rng = np.random.default_rng(None if seed is None else [seed, 1, *rank_tag])
        # predict()'s stochastic actions draw from a third stream: evaluating never changes training
        self._predict_rng = np.random.default_rng(None if seed is None else [seed, 2, *rank_tag])
        if ranks is not None and seed is not None:
            if self.env is not None:
                self.env.seed(seed + ranks.rank * self.env.num_envs)
            self.action_space.seed(seed + ranks.rank)
            # torch's generator draws the actions of the policies the numpy actor does not cover: one per rank
            # (the initial parameters, drawn from it next, are rank 0's by a broadcast when learning starts)
            th.manual_seed(int(np.random.SeedSequence([seed, 5, ranks.rank]).generate_state(1)[0]))

    def _excluded_save_params(self) -> list[str]:
        """SB3's list plus what is rebuilt, not saved: the parameter split, the vine sampler (it holds the
        environments), the generators (reseeded from ``seed``), ``predict``'s numpy actor and the speed layer."""
        return [
            *super()._excluded_save_params(),
            "_actor_params",
            "_critic_params",
            "_vine",
            "_collect_rng",
            "_predict_rng",
            "_predictor",
            "_speed",
            "_ranks",
            "_reducer",
            "_shared_rng",
            "_new_episodes",
            "_new_successes",
            "_given_seed",
        ]

    # ------------------------------------------------------------- collection
    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """Collect ``n_rollout_steps`` per environment with the current policy and fill ``rollout_buffer``; with
        vine sampling, then run the branches of the rollout set.

        Same contract as SB3's ``collect_rollouts`` (per-step callbacks that may stop training, episode
        statistics, bootstrapping on time-limit truncation, gSDE noise resets, any ``rollout_buffer_class``).
        A policy that uses SB3's own methods only samples actions per step, and values and log-probabilities
        are computed in one batch after the loop (callbacks then see ``new_obs``, ``actions``,
        ``clipped_actions``, ``rewards``, ``dones`` and ``infos`` as locals, but no per-step ``values``): with
        ``fast_collect``, the model's own generator draws them, from a numpy snapshot of an MLP actor
        (:class:`~sb3_trpo_ext.fast.numpy_actor.NumpyActor`) or from the head computed by the policy's modules
        (:class:`~sb3_trpo_ext.fast.numpy_actor.TorchHeadActor`: CNNs, Dict observations...), so that two SB3
        policy classes computing the same function draw the same actions; gSDE and ``fast_collect=False`` sample
        through ``policy.get_distribution`` (the same random draws as SB3's loop).
        Any other policy is called per step through its ``forward``, exactly as SB3 does.

        :return: True if ``n_rollout_steps`` were collected, False if a callback stopped the rollout.
        """
        assert self._last_obs is not None, "No previous observation was provided"
        self.policy.set_training_mode(False)
        rollout_buffer.reset()
        if self.use_sde:
            self.policy.reset_noise(env.num_envs)
        callback.on_rollout_start()
        numpy_actor = self._speed.collection_actor(self.policy, self.fast_collect)
        per_step_forward = numpy_actor is None and not self._speed.evaluates_after_the_loop(self.policy)
        if self._vine is not None:
            self._vine.plan(n_rollout_steps)

        observations: list[Any] = []
        sampled_actions: list[np.ndarray] = []
        step_values: list[th.Tensor] = []  # per-step path only
        step_log_probs: list[th.Tensor] = []
        step_rewards: list[np.ndarray] = []
        episode_starts: list[np.ndarray] = []
        step_masks: list[np.ndarray] = []  # masked policies only
        truncated: list[tuple[int, int, Any]] = []  # (step, env, terminal observation)
        n_steps = 0
        while n_steps < n_rollout_steps:
            if self.use_sde and self.sde_sample_freq > 0 and n_steps % self.sde_sample_freq == 0:
                self.policy.reset_noise(env.num_envs)
            action_masks = self._action_masks(env)  # read before the step, as MaskablePPO does
            masked = {} if action_masks is None else {"action_masks": action_masks}
            if self._vine is not None:
                self._vine.on_trunk_step(n_steps, self._last_obs, **masked)
            if numpy_actor is not None:
                sampled = numpy_actor.sample(self._last_obs, self._collect_rng, action_masks)  # type: ignore[arg-type]  # SB3 types _last_obs as VecEnvObs (tuples too); never a tuple here
            else:
                with th.no_grad(), fast_distributions():
                    obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]  # SB3 types _last_obs as VecEnvObs (tuples too); never a tuple here
                    if per_step_forward:
                        action_tensor, values, log_probs = self.policy(obs_tensor, **masked)
                        step_values.append(values.flatten())
                        step_log_probs.append(log_probs)
                    else:
                        action_tensor = self.policy.get_distribution(obs_tensor, **masked).get_actions()
                sampled = action_tensor.cpu().numpy()
            if action_masks is not None:
                step_masks.append(action_masks)
            actions = sampled.reshape((-1, *self.action_space.shape))  # type: ignore[misc]  # gymnasium types shape as Optional
            clipped_actions = self._to_env_actions(actions)

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
                {k: np.array(v) for k, v in self._last_obs.items()}
                if isinstance(self._last_obs, dict)
                else np.array(self._last_obs)
            )
            sampled_actions.append(sampled)
            step_rewards.append(np.array(rewards, dtype=np.float32))
            episode_starts.append(np.array(self._last_episode_starts))
            n_steps += 1
            self._last_obs = new_obs  # type: ignore[assignment]  # SB3 types _last_obs as VecEnvObs (tuples too); never a tuple here
            self._last_episode_starts = dones

        with th.no_grad(), fast_distributions():
            batch_actions = th.as_tensor(np.concatenate(sampled_actions), device=self.device)
            if per_step_forward:
                values, log_probs = th.cat(step_values), th.cat(step_log_probs)
            else:
                batch_obs = obs_as_tensor(stack_obs(observations), self.device)
                masked = {"action_masks": np.concatenate(step_masks)} if step_masks else {}
                values, log_probs, _ = self.policy.evaluate_actions(batch_obs, batch_actions, **masked)
            values = values.view(n_steps, env.num_envs)
            log_probs = log_probs.view(n_steps, env.num_envs)
            if truncated:  # time-limit truncation: bootstrap with the value of the terminal state
                terminal_obs = obs_as_tensor(stack_obs([as_batch_of_one(obs) for _, _, obs in truncated]), self.device)
                terminal_values = self.policy.predict_values(terminal_obs).flatten().cpu().numpy()
                for (step, env_idx, _), value in zip(truncated, terminal_values, strict=True):
                    step_rewards[step][env_idx] += self.gamma * value
            last_values = self.policy.predict_values(obs_as_tensor(new_obs, self.device))  # type: ignore[arg-type]  # VecEnvObs (tuples too); never a tuple here

        buffer_actions = batch_actions.cpu().numpy().reshape(n_steps, env.num_envs, -1)
        self._speed.fill_buffer(
            rollout_buffer, observations, buffer_actions, step_rewards, episode_starts, values, log_probs, step_masks
        )
        self._finish_rollout(rollout_buffer, last_values, dones)

        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _action_masks(self, env: VecEnv) -> np.ndarray | None:
        """The environments' action masks before a step (True where an action is valid), for the policy and the
        buffer; None: no masking (MaskableTRPO overrides it)."""
        return None

    def _finish_rollout(self, rollout_buffer: RolloutBuffer, last_values: th.Tensor, dones: np.ndarray) -> None:
        """What every collection loop ends with, once the buffer holds the trunk: returns and advantages (GAE),
        then with vine sampling the branches of the rollout set, and their logs."""
        self._speed.compute_returns(rollout_buffer, last_values, dones)
        if self._vine is None:
            return
        assert isinstance(rollout_buffer, VineBufferMixin)
        with fast_distributions():
            rollout_buffer.rollout_set, branch_steps = self._vine.run_branches(self.policy, self._to_env_actions)
        # branch steps are not timesteps: logged on their own (never in num_timesteps or episode statistics)
        self.vine_branch_steps += branch_steps
        self.logger.record("rollout/vine_branch_steps", branch_steps)
        self.logger.record("rollout/vine_branch_steps_total", self.vine_branch_steps)
        self.logger.record("rollout/vine_q_std", rollout_buffer.rollout_set.q_values.std(dim=1).mean().item())

    def _to_env_actions(self, actions: np.ndarray) -> np.ndarray:
        """The policy's actions as the environment takes them: unscaled (squashed policies) or clipped to a
        ``Box``'s bounds, as SB3 does."""
        if not isinstance(self.action_space, spaces.Box):
            return actions
        if self.policy.squash_output:
            return self.policy.unscale_action(actions)
        # np.clip's result, without its dispatch overhead (several times the cost on a few numbers)
        return np.minimum(np.maximum(actions, self.action_space.low), self.action_space.high)

    # ----------------------------------------------------------------- update
    def train(self) -> None:
        """One TRPO update: the natural-gradient step of the actor on the sampling scheme's surrogate, then the
        critic's regression on the trunk's returns. A batch holding non-finite data is skipped whole."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        problems = describe_non_finite(self.rollout_buffer)
        if self._ranks is not None and self._ranks.any_true(bool(problems)):  # every rank skips, or none does
            problems = problems or "data on another rank"
        if problems:
            warnings.warn(f"TRPO: the update is skipped (actor and critic): non-finite {problems}", stacklevel=2)
            self.logger.record("train/skipped_non_finite_batches", 1)
            return
        batch = next(self.rollout_buffer.get(batch_size=None))

        with fast_distributions():
            rollout_set = getattr(self.rollout_buffer, "rollout_set", None)
            if self.sampling == "vine" and rollout_set is not None:
                states, surrogate, n_states = rollout_set.surrogate(self.normalize_advantage, self._reducer)
            else:
                states, surrogate, n_states = self._single_path_surrogate(batch)
            actor_stats = natural_gradient_step(
                self._actor_params, states, surrogate, self._actor_functions(), self._trust_region(), n_states,
                self._reducer,
            )  # fmt: skip
        value_loss = self._update_critic(batch)

        self._n_updates += 1
        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())
        for key, value in actor_stats.items():
            self.logger.record(f"train/{key}", value, exclude="tensorboard" if isinstance(value, str) else None)
        self.logger.record("train/value_loss", value_loss)
        self.logger.record("train/explained_variance", explained_var)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    def _single_path_surrogate(self, batch: RolloutBufferSamples) -> tuple[Any, Surrogate, int]:
        """The single-path surrogate (:func:`single_path_surrogate`, paper Eq. 14) on the trunk's states, and their
        count."""
        actions = batch.actions.long().flatten() if isinstance(self.action_space, spaces.Discrete) else batch.actions
        surrogate = single_path_surrogate(
            actions, batch.advantages, batch.old_log_prob, self.normalize_advantage, self._reducer
        )
        return batch.observations, surrogate, len(batch.advantages)

    def _actor_functions(self) -> ActorFunctions:
        """How this algorithm's policy computes what the natural-gradient step needs (overridable pieces below)."""
        return ActorFunctions(
            self._policy_distribution, self._action_family, self._fisher_product, self._every_kth_state
        )

    def _trust_region(self) -> TrustRegion:
        """The natural-gradient step's settings."""
        return TrustRegion(
            target_kl=self.target_kl,
            cg_max_steps=self.cg_max_steps,
            cg_rtol=self.cg_rtol,
            line_search_shrinking_factor=self.line_search_shrinking_factor,
            line_search_max_iter=self.line_search_max_iter,
            sub_sampling_factor=self.sub_sampling_factor,
        )

    def _policy_distribution(self, obs: PyTorchObs) -> Distribution:
        """The policy's action distribution at the states ``obs`` of the natural-gradient step (a subclass whose
        distribution needs more than the observations, e.g. MaskableTRPO's action masks, overrides it)."""
        return self.policy.get_distribution(obs)

    def _every_kth_state(self, obs: PyTorchObs, k: int) -> PyTorchObs:
        """Every ``k``-th state of ``obs``, where the Fisher is evaluated with ``sub_sampling_factor=k`` (a subclass
        whose states are not plain observations, e.g. RecurrentTRPO's sequences, overrides it)."""
        return index_obs(obs, slice(None, None, k))

    def _action_family(self, distribution: Distribution) -> ActionFamily:
        """The closed forms (KL, Fisher) of the policy's distributions (:func:`action_family`; overridable)."""
        return action_family(distribution)

    def _fisher_product(
        self, obs: PyTorchObs, dist_params: tuple[th.Tensor, ...], family: ActionFamily
    ) -> Callable[[th.Tensor], th.Tensor]:
        """The damped Fisher-vector product at ``obs``: ``fisher="analytic"`` takes the speed layer's product for a
        plain MLP actor (``J v`` and ``J^T u`` written out) and autograd's first derivatives otherwise;
        ``"autograd"`` the Hessian of the KL (:mod:`sb3_trpo_ext.common.fisher`)."""
        if self.fisher == "analytic":
            product = self._speed.fisher_product(self.policy, obs, self._actor_params, family, self.cg_damping)
            if product is not None:
                return product
        return FISHER_PRODUCTS[self.fisher](dist_params, self._actor_params, family, self.cg_damping)

    def _update_critic(self, batch: RolloutBufferSamples) -> float:
        """``n_critic_updates`` epochs of minibatch regression of the values on the returns. A non-finite loss or
        weight puts the critic back as it was before the update (never a non-finite weight).

        :return: the mean minibatch loss
        """
        observations, returns, permutation = batch.observations, batch.returns, np.random.permutation
        if self._ranks is not None:
            # Data parallel: every rank fits the gathered batch in one shared order (docs/distributed.md: a
            # minibatch step costs about the same for 64 or 128 states, so splitting it would add one collective a
            # step and save nothing), which is the one-process regression on every rank's states.
            observations, returns = self._ranks.gather(observations), self._ranks.gather(returns)
            permutation = self._shared_rng.permutation
        return fit_critic(
            self.policy,
            self._critic_params,
            observations,
            returns,
            self.n_critic_updates,
            self.batch_size,
            *self._speed.critic(self.policy),
            permutation=permutation,
        )

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
        """Train for ``total_timesteps`` environment steps (see SB3's ``learn``), with ``num_threads`` torch
        threads. The default TensorBoard run name ``TRPO_ext`` keeps our runs apart from sb3-contrib's ``TRPO``
        runs in a shared folder.

        :raises ValueError: if ``total_timesteps`` is not a whole number >= 0 (``1e5`` is accepted, as SB3 does)
        """
        given: Any = total_timesteps  # annotated int, but users pass 1e5 (SB3 accepts it) or worse
        whole = is_int(given) or (isinstance(given, float) and given.is_integer())
        require(whole and total_timesteps >= 0, "total_timesteps", total_timesteps, "an integer >= 0")
        self._join_ranks()
        with torch_threads(self._learn_threads()):
            if self._ranks is not None:
                learn_data_parallel(
                    self, self._ranks, int(total_timesteps), callback, log_interval, tb_log_name,
                    reset_num_timesteps, progress_bar,
                )  # fmt: skip
                return self
            return super().learn(
                total_timesteps=total_timesteps,
                callback=callback,
                log_interval=log_interval,
                tb_log_name=tb_log_name,
                reset_num_timesteps=reset_num_timesteps,
                progress_bar=progress_bar,
            )

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        """See SB3's ``_setup_learn``; a data-parallel rank other than 0 writes nothing (no TensorBoard folder, a
        logger without outputs, no progress bar, none of the user's callbacks)."""
        if self._ranks is None or self._ranks.is_main:
            return super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)
        tensorboard_log, self.tensorboard_log = self.tensorboard_log, None
        try:
            total_timesteps, rank_callback = super()._setup_learn(total_timesteps, None, reset_num_timesteps)
        finally:
            self.tensorboard_log = tensorboard_log
        if not self._custom_logger:
            self._logger = Logger(folder=None, output_formats=[])
        return total_timesteps, rank_callback

    def _init_callback(self, callback: MaybeCallback, progress_bar: bool = False) -> BaseCallback:
        """See SB3's ``_init_callback``; on data-parallel ranks the callback counts global steps and only rank 0
        runs the user's callbacks and the progress bar (:class:`~sb3_trpo_ext.distributed.callbacks.RankCallback`)."""
        if self._ranks is None:
            return super()._init_callback(callback, progress_bar)
        inner = None
        if self._ranks.is_main:
            given = callback if isinstance(callback, list) else [callback]
            parts = [part if isinstance(part, BaseCallback) else ConvertCallback(part) for part in given if part]
            if progress_bar:
                parts.append(GlobalProgressBar(self._ranks.world_size))
            inner = super()._init_callback(parts, False)
        rank_callback = RankCallback(inner, self._ranks)
        rank_callback.init_callback(self)
        return rank_callback

    def _update_info_buffer(self, infos: list[dict[str, Any]], dones: np.ndarray | None = None) -> None:
        """See SB3's ``_update_info_buffer``; a data-parallel rank also keeps its new episodes for the others
        (:meth:`_share_episodes`)."""
        super()._update_info_buffer(infos, dones)
        if self._ranks is None:
            return
        # what SB3 just added to the buffers: every info's episode, the success of the episodes that ended
        ended = np.zeros(len(infos), dtype=bool) if dones is None else dones
        for info, done in zip(infos, ended, strict=True):
            episode = info.get("episode")
            if episode is not None:
                self._new_episodes.append((float(episode["r"]), float(episode["l"]), float(episode["t"])))
            if done and info.get("is_success") is not None:
                self._new_successes.append(float(info["is_success"]))

    def _share_episodes(self) -> None:
        """Give every rank the episodes the other ranks finished during the rollout, so that rank 0 logs the
        episode statistics (``rollout/ep_rew_mean``, ``rollout/ep_len_mean``, ``rollout/success_rate``) of every
        rank: return, length and time of each episode (Monitor's ``r``, ``l``, ``t``; other keys stay on their
        rank) and the successes, as numbers (two small all-gathers a rollout, not a pickled object's)."""
        assert self._ranks is not None and self.ep_info_buffer is not None and self.ep_success_buffer is not None
        # one row per episode (r, l, t, 0.0) or success (s, 0, 0, 1.0)
        rows = [(*episode, 0.0) for episode in self._new_episodes] + [(s, 0.0, 0.0, 1.0) for s in self._new_successes]
        self._new_episodes, self._new_successes = [], []
        everyone = self._ranks.gather_rows(np.array(rows, dtype=np.float64).reshape(-1, 4))
        for rank, rank_rows in enumerate(everyone):
            if rank == self._ranks.rank:
                continue
            for value, length, elapsed, is_success in rank_rows:
                if is_success:
                    self.ep_success_buffer.append(bool(value))
                else:
                    self.ep_info_buffer.append({"r": value, "l": int(length), "t": elapsed})

    def _settings(self) -> dict[str, str]:
        """What must be the same on every rank of a data-parallel job: the class, the policy, the spaces, the
        number of environments and every hyperparameter of the constructor (their ``repr``)."""
        skip = {"self", "policy", "env", "verbose", "tensorboard_log", "device", "_init_setup_model", "kwargs"}
        # every constructor's arguments from this class up to TRPO (MaskableTRPO's passes most through **kwargs)
        constructors = [cls.__init__ for cls in type(self).__mro__ if issubclass(cls, TRPO) and "__init__" in vars(cls)]
        names = sorted({name for init in constructors for name in inspect.signature(init).parameters} - skip)
        settings = {name: repr(getattr(self, name, None)) for name in names}
        settings.update(
            algorithm=f"{type(self).__module__}.{type(self).__qualname__}",
            policy_class=f"{type(self.policy).__module__}.{type(self.policy).__qualname__}",
            policy_kwargs=repr(self.policy_kwargs),
            observation_space=repr(self.observation_space),
            action_space=repr(self.action_space),
            n_envs=repr(self.n_envs),
            seed=repr(self._given_seed),
        )
        for name, value in settings.items():
            schedule = getattr(self, name, None)
            if callable(schedule) and "<function" in value:  # its name and values, not its address (per process)
                settings[name] = f"{schedule.__qualname__}: {schedule(1.0)!r} -> {schedule(0.0)!r}"
        return settings

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """See SB3's ``save``; on a data-parallel rank other than 0 it does nothing (rank 0 saves the one model
        every rank trains)."""
        if self._ranks is not None and not self._ranks.is_main:
            return
        super().save(path, exclude, include)

    def _learn_threads(self) -> int | None:
        """The torch threads ``learn()`` runs with (None: torch's setting as it is)."""
        if self.num_threads != "auto":
            return self.num_threads  # type: ignore[return-value]  # validated: an int >= 1 or None once 'auto' is handled
        spaces_in = (
            self.observation_space.spaces.values()
            if isinstance(self.observation_space, spaces.Dict)
            else [self.observation_space]
        )
        has_image = any(is_image_space(space) for space in spaces_in)
        return None if has_image else 1

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """See SB3's ``predict``. For SB3's MLP actors on flat ``Box`` observations (where :class:`NumpyActor`
        applies) the actions come from a numpy copy of the actor that shares the parameters' memory: the same
        function as the torch path (deterministic actions equal to float precision, the same argmax), at a
        fraction of the cost per call, which is most of an evaluation's time. Stochastic actions are drawn from a
        generator of their own (seeded from ``seed``), never the one collection draws from, so evaluating never
        changes training. Any other policy, observation or device takes SB3's torch path."""
        actions = self._numpy_predict(observation, state, deterministic) if state is None else None
        if actions is None:
            return super().predict(observation, state, episode_start, deterministic)
        return actions, state

    def _numpy_predict(
        self, observation: Any, state: Any, deterministic: bool, action_masks: np.ndarray | None = None
    ) -> np.ndarray | None:
        """``predict``'s actions from the speed layer's numpy actor (masked with ``action_masks``), or None where it
        does not apply (then the policy predicts in torch)."""
        actor = self._numpy_predictor() if isinstance(observation, np.ndarray) else None
        if actor is None or actor.keys is not None:
            return None
        # SB3's own check: a single observation, or a batch of them (raises on any other shape)
        vectorized = is_vectorized_observation(observation, self.observation_space)
        obs = observation.reshape((-1, *self.observation_space.shape))  # type: ignore[misc]  # shape: Optional in gymnasium
        if action_masks is not None:
            action_masks = np.asarray(action_masks, dtype=bool).reshape(len(obs), -1)
        actions = actor.mode(obs, action_masks) if deterministic else actor.sample(obs, self._predict_rng, action_masks)
        actions = self._to_env_actions(actions.reshape((-1, *self.action_space.shape)))  # type: ignore[misc]  # clipped, as SB3's
        return actions if vectorized else actions.squeeze(axis=0)

    def _numpy_predictor(self) -> NumpyActor | None:
        """The numpy actor of :meth:`predict` (the speed layer's, rebuilt when the policy changes), or None."""
        self._predictor = self._speed.predictor(getattr(self, "_predictor", None), self.policy)
        return None if self._predictor is None else self._predictor.actor

    @classmethod
    def load(
        cls: type[SelfTRPO],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        *,
        trusted: bool = False,
        safe_globals: Iterable[Any] = (),
        **kwargs: Any,
    ) -> SelfTRPO:
        """Load a model saved by this TRPO or by sb3-contrib's TRPO (see SB3's ``load``), without running code
        from the file.

        Unlike SB3's ``load``, the pickled entries of the file's ``data`` are rebuilt by
        :mod:`sb3_trpo_ext.safe_load`'s restricted unpickler, which admits only a reviewed allowlist of
        classes and functions; anything else raises :class:`~sb3_trpo_ext.UnsafeCheckpointError` before it
        runs. A learning-rate function (a lambda or closure) is refused: pass
        ``custom_objects={"learning_rate": ..., "lr_schedule": ...}``. A pickled ``lr_schedule`` is never
        read (the model rebuilds it from ``learning_rate``).

        A model from sb3-contrib keeps its saved hyperparameters; since its ``target_kl`` bounded the
        per-dimension mean KL, a warning gives the equivalent true-KL value to pass as ``target_kl=...``.
        Its critic's optimizer state is remapped onto our critic-only optimizer.

        :param trusted: unpickle everything, as SB3 does (only for files you vouch for: it can run code)
        :param safe_globals: classes or ``(module, name)`` pairs to allow in this load (your own policy class, ...)
        :raises FileNotFoundError: naming the path given (and the ``.zip`` variant tried) if neither exists
        :raises ValueError: if the file is not a zip archive or was not saved by a TRPO
        :raises UnsafeCheckpointError: naming the entry and the global refused
        """
        if isinstance(path, (str, pathlib.Path)):
            check_exists(pathlib.Path(path))
        if trusted:
            check_readable_zip(path)  # a truncated file: our message, not zipfile's "not a zip file"
            with explain_weights_only_refusal(path):  # .pth members: weights_only whatever the flag
                data, _, _ = load_from_zip_file(path, device=device, custom_objects=custom_objects)
        else:
            data, pickled = load_data(path, custom_objects, safe_globals=safe_globals)
            # SB3's load then takes every pickled entry from here and never unpickles one itself
            custom_objects = {**{key: data[key] for key in pickled}, **(custom_objects or {})}
        if isinstance(path, io.BufferedIOBase):
            path.seek(0)
        check_trpo_data(path, data)
        with explain_weights_only_refusal(path):
            return super().load(path, env, device, custom_objects, print_system_info, force_reset, **kwargs)

    def set_parameters(
        self,
        load_path_or_dict: str | dict[str, Any],
        exact_match: bool = True,
        device: th.device | str = "auto",
    ) -> None:
        """See SB3's ``set_parameters``: its contract, in its order, with the optimizer state checked last.

        1. A ``ValueError`` for an unknown object name, or (``exact_match``) for missing objects, before
           anything is loaded.
        2. The modules' state dicts (``policy``): with ``exact_match`` an incomplete one raises torch's
           ``RuntimeError``.
        3. Only then the optimizer state: a ``ValueError`` naming it if it is not an optimizer state dict;
           one over all policy parameters (sb3-contrib's layout) is remapped onto the critic's optimizer.

        SB3's loop is not called because it loads objects in the dict's order, and ours must check and remap
        the optimizer state after the policy has loaded. From a path only the ``.pth`` members are read (with
        ``torch.load(weights_only=True)``), never the pickled ``data``.
        """
        if isinstance(load_path_or_dict, dict):
            params = load_path_or_dict
        else:
            if isinstance(load_path_or_dict, (str, pathlib.Path)):
                check_exists(pathlib.Path(load_path_or_dict))
            with explain_weights_only_refusal(load_path_or_dict):
                _, params, _ = load_from_zip_file(load_path_or_dict, device=device, load_data=False)
        objects = {}
        for name in params:
            try:
                objects[name] = recursive_getattr(self, name)
            except Exception as error:  # SB3's error for any name that does not resolve
                raise ValueError(f"Key {name} is an invalid object name.") from error
        expected = set(self._get_torch_save_params()[0])
        if exact_match and set(params) != expected:
            raise ValueError(
                f"Names of parameters do not match agents' parameters: expected {expected}, got {set(params)}"
            )
        optimizers = [name for name, obj in objects.items() if isinstance(obj, th.optim.Optimizer)]
        for name, obj in objects.items():
            if name not in optimizers:
                obj.load_state_dict(params[name], strict=exact_match)
        for name in optimizers:
            state = params[name]
            if name == "policy.optimizer":
                if not (isinstance(state, dict) and {"state", "param_groups"} <= state.keys()):
                    found = sorted(state) if isinstance(state, dict) else type(state).__name__
                    raise ValueError(
                        "params['policy.optimizer'] is not an optimizer state dict: it needs the keys 'state' and "
                        f"'param_groups', got {found}"
                    )
                state = critic_optimizer_state(state, self.policy.optimizer, self.policy, self._critic_params)
            objects[name].load_state_dict(state)
