"""Recurrent (LSTM) TRPO: TRPO's natural-gradient step on whole sequences."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer, RecurrentRolloutBuffer
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RecurrentRolloutBufferSamples, RNNStates
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo_ext.common.fisher import ActionFamily, autograd_fisher_product
from sb3_trpo_ext.common.surrogate import Surrogate, single_path_surrogate
from sb3_trpo_ext.recurrent.lstm import check_functional_lstm
from sb3_trpo_ext.recurrent.policies import (
    CnnLstmPolicy,
    MlpLstmPolicy,
    MultiInputLstmPolicy,
    SequenceBatch,
    actor_distribution,
    functional_actor,
    linearized_fisher_product,
    sequence_values,
)
from sb3_trpo_ext.trpo.critic import average_gradients, guarded_regression, set_gradients
from sb3_trpo_ext.trpo.hyperparams import AUTOMATIC_BUFFERS, is_int, require
from sb3_trpo_ext.trpo.policies import default_share_features_extractor
from sb3_trpo_ext.trpo.rollout import fast_distributions
from sb3_trpo_ext.trpo.trpo import TRPO

SelfRecurrentTRPO = TypeVar("SelfRecurrentTRPO", bound="RecurrentTRPO")


class _BufferAfterPolicy:
    """Stands in for the rollout buffer while SB3's ``_setup_model`` builds the policy: the recurrent buffer
    needs the policy's LSTM shape, so it is built afterwards."""

    def __init__(self, *args: Any, **kwargs: Any):
        pass


class RecurrentTRPO(TRPO):
    """
    Trust Region Policy Optimization with recurrent (LSTM) policies: sb3-contrib's recurrent actor-critic policies
    and rollout buffer, with TRPO's update.

    Each update maximises the surrogate ``mean(A * pi_theta(a|s) / pi_old(a|s))`` over the rollout's steps
    subject to the mean true KL ``<= target_kl``, through the same natural-gradient step as :class:`TRPO`. The
    policy's distribution at each step is recomputed with the candidate parameters over whole sequences, from the
    hidden states stored at the sequence starts (as sb3-contrib's ``RecurrentPPO.evaluate_actions``). The Fisher
    product takes first derivatives only: ``J v`` by forward-mode AD through a functional LSTM built from the
    actor's own weights, ``J^T u`` by one backward pass (fused LSTM kernels have neither a forward-mode formula
    nor, on cuDNN, a double backward). The critic regresses on sequence minibatches of the returns.

    Vine sampling is not supported (``sampling="vine"`` raises ``ValueError``): a branch would have to start
    from the trunk's LSTM state at the snapshot.

    :param policy: ``"MlpLstmPolicy"``, ``"CnnLstmPolicy"``, ``"MultiInputLstmPolicy"`` or a subclass of
        sb3-contrib's ``RecurrentActorCriticPolicy``. The aliases default to separate actor and critic feature
        extractors (``share_features_extractor=False``); ``policy_kwargs`` take sb3-contrib's recurrent arguments
        ``lstm_hidden_size``, ``n_lstm_layers``, ``shared_lstm``, ``enable_critic_lstm`` and ``lstm_kwargs``
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate of the critic's optimizer, a float or a schedule
    :param n_steps: The number of steps to run for each environment per update
    :param batch_size: Minibatch size of the critic's regression (steps; sequences are cut at its boundaries and
        padded, as in sb3-contrib's recurrent buffer)
    :param gamma: Discount factor
    :param cg_max_steps: Maximum number of conjugate gradient iterations (Fisher-vector products)
    :param cg_damping: Damping added to the Fisher matrix (``F + cg_damping * I``)
    :param line_search_shrinking_factor: Step-size reduction factor of the backtracking line search, in (0, 1)
    :param line_search_max_iter: Maximum number of candidates of the line search
    :param n_critic_updates: Number of epochs of the critic's minibatch regression per update
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE (-1: once per rollout)
    :param rollout_buffer_class: Rollout buffer class, a subclass of sb3-contrib's ``RecurrentRolloutBuffer`` or
        ``RecurrentDictRolloutBuffer`` (None: chosen from the observation space)
    :param rollout_buffer_kwargs: Keyword arguments to pass to the rollout buffer on creation
    :param normalize_advantage: Whether to normalize the advantages of the batch
    :param target_kl: Trust-region size: bound on the mean over steps of the true KL ``KL(pi_old || pi_new)``
    :param sub_sampling_factor: Use every ``sub_sampling_factor``-th step for the Fisher-vector products only
    :param cg_rtol: Relative residual tolerance of conjugate gradient
    :param fisher: ``"analytic"`` (``J^T M J v``, first derivatives only) or ``"autograd"`` (Hessian of the KL by
        double backprop through the functional LSTM, the reference)
    :param sampling: ``"single_path"`` only (``"vine"`` raises ``ValueError``)
    :param num_threads: torch intra-op threads while ``learn()`` runs (see :class:`TRPO`)
    :param stats_window_size: Window size for the rollout logging
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: the verbosity level: 0 no output, 1 info, 2 debug
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpLstmPolicy": MlpLstmPolicy,
        "CnnLstmPolicy": CnnLstmPolicy,
        "MultiInputLstmPolicy": MultiInputLstmPolicy,
    }
    policy: RecurrentActorCriticPolicy

    def __init__(
        self,
        policy: str | type[RecurrentActorCriticPolicy],
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
        num_threads: int | str | None = "auto",
        distributed_timeout: float = 300.0,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        self._last_lstm_states: RNNStates | None = None
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            gamma=gamma,
            cg_max_steps=cg_max_steps,
            cg_damping=cg_damping,
            line_search_shrinking_factor=line_search_shrinking_factor,
            line_search_max_iter=line_search_max_iter,
            n_critic_updates=n_critic_updates,
            gae_lambda=gae_lambda,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            normalize_advantage=normalize_advantage,
            target_kl=target_kl,
            sub_sampling_factor=sub_sampling_factor,
            cg_rtol=cg_rtol,
            fisher=fisher,
            sampling=sampling,
            num_threads=num_threads,
            fast_collect=False,  # the policy is called per step (its LSTM state moves with every step)
            distributed_timeout=distributed_timeout,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )

    # ------------------------------------------------------------------ setup
    def _validate_recurrent(self) -> None:
        """Raise ``ValueError`` naming the first bad recurrent setting (sampling, policy, LSTM arguments)."""
        if self.sampling != "single_path":
            raise ValueError(
                f"Invalid sampling={self.sampling!r}: RecurrentTRPO supports 'single_path' only. Vine branches "
                "would have to restart from the trunk's LSTM state at each snapshot, which is not implemented; "
                "use TRPO(sampling='vine') with a feed-forward policy"
            )
        if not (isinstance(self.policy_class, type) and issubclass(self.policy_class, RecurrentActorCriticPolicy)):
            raise ValueError(
                f"Invalid policy={self.policy_class!r}: RecurrentTRPO needs 'MlpLstmPolicy', 'CnnLstmPolicy', "
                "'MultiInputLstmPolicy' or a subclass of sb3-contrib's RecurrentActorCriticPolicy"
            )
        kwargs = self.policy_kwargs

        def check(name: str, ok: bool, allowed: str) -> None:
            if name in kwargs:
                require(ok, f"policy_kwargs {name}", kwargs[name], allowed)

        check(
            "lstm_hidden_size",
            is_int(kwargs.get("lstm_hidden_size")) and kwargs.get("lstm_hidden_size", 0) >= 1,
            "an integer >= 1",
        )
        check(
            "n_lstm_layers",
            is_int(kwargs.get("n_lstm_layers")) and kwargs.get("n_lstm_layers", 0) >= 1,
            "an integer >= 1",
        )
        check("shared_lstm", isinstance(kwargs.get("shared_lstm"), (bool, np.bool_)), "True or False")
        check("enable_critic_lstm", isinstance(kwargs.get("enable_critic_lstm"), (bool, np.bool_)), "True or False")
        check(
            "lstm_kwargs",
            kwargs.get("lstm_kwargs") is None or isinstance(kwargs.get("lstm_kwargs"), dict),
            "a dict or None",
        )
        if kwargs.get("shared_lstm", False):
            if kwargs.get("enable_critic_lstm", True):
                raise ValueError(
                    "Invalid policy_kwargs shared_lstm=True with enable_critic_lstm=True: a shared LSTM and a "
                    "critic LSTM exclude each other; pass enable_critic_lstm=False with shared_lstm=True"
                )
            if not kwargs.get("share_features_extractor", default_share_features_extractor(self.policy_class, kwargs)):
                raise ValueError(
                    "Invalid policy_kwargs shared_lstm=True with share_features_extractor=False: the LSTM can "
                    "only be shared with the feature extractor; leave share_features_extractor unset or True"
                )

    def _setup_model(self) -> None:
        self._validate_hyperparameters()
        self._validate_recurrent()
        buffer_class = self.rollout_buffer_class
        if buffer_class in AUTOMATIC_BUFFERS:  # SB3's choice, or an older save's: the recurrent one
            dict_obs = isinstance(self.observation_space, spaces.Dict)
            buffer_class = RecurrentDictRolloutBuffer if dict_obs else RecurrentRolloutBuffer
        if not (
            isinstance(buffer_class, type)
            and issubclass(buffer_class, (RecurrentRolloutBuffer, RecurrentDictRolloutBuffer))
        ):
            raise ValueError(
                f"Invalid rollout_buffer_class={buffer_class!r}: must be None or a subclass of sb3-contrib's "
                "RecurrentRolloutBuffer or RecurrentDictRolloutBuffer"
            )
        self.rollout_buffer_class = _BufferAfterPolicy  # type: ignore[assignment]  # swapped around super()._setup_model (docs/private_api.md)
        try:
            super()._setup_model()
        finally:
            self.rollout_buffer_class = buffer_class
        lstm = self.policy.lstm_actor
        check_functional_lstm(lstm)
        state_shape = (lstm.num_layers, self.n_envs, lstm.hidden_size)
        self.rollout_buffer = buffer_class(
            self.n_steps,
            self.observation_space,
            self.action_space,
            (self.n_steps, *state_shape),
            device=self.device,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            n_envs=self.n_envs,
            **self.rollout_buffer_kwargs,
        )
        zeros = lambda: th.zeros(state_shape, device=self.device)  # noqa: E731
        self._last_lstm_states = RNNStates((zeros(), zeros()), (zeros(), zeros()))

    def _excluded_save_params(self) -> list[str]:
        # the LSTM states of the last rollout step: reset to zeros with the environment on load, as at construction
        return [*super()._excluded_save_params(), "_last_lstm_states"]

    # ------------------------------------------------------------- collection
    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """Collect ``n_rollout_steps`` per environment with sb3-contrib's recurrent collection loop
        (``RecurrentPPO.collect_rollouts``, reused as is: it reads only the attributes SB3's on-policy algorithms
        and this class share). The policy is called per step; the LSTM states before each step are stored with it
        and reset at episode starts; time-limit truncations bootstrap with the critic's value.

        :return: True if ``n_rollout_steps`` were collected, False if a callback stopped the rollout.
        """
        with fast_distributions():
            return RecurrentPPO.collect_rollouts(self, env, callback, rollout_buffer, n_rollout_steps)  # type: ignore[arg-type]  # RecurrentPPO's loop on a TRPO (docs/private_api.md)

    # ----------------------------------------------------------------- update
    def _single_path_surrogate(  # type: ignore[override]  # sequences: recurrent samples in, SequenceBatch out
        self, batch: RecurrentRolloutBufferSamples
    ) -> tuple[SequenceBatch, Surrogate, int]:
        """TRPO's single-path surrogate over the rollout's steps (the padding of the sequences left out), and the
        sequences the policy's distribution is recomputed on."""
        states = th.nonzero(batch.mask > 0.5).flatten()
        hidden, cell = batch.lstm_states.pi  # the actor's (h, c) at each sequence start
        sequences = SequenceBatch(batch.observations, (hidden, cell), batch.episode_starts, states)
        actions = batch.actions[states]
        if isinstance(self.action_space, spaces.Discrete):
            actions = actions.long().flatten()
        elif isinstance(self.action_space, spaces.MultiBinary):
            actions = actions.float()  # stored as the space's int8: Bernoulli's log_prob takes floats
        surrogate = single_path_surrogate(
            actions, batch.advantages[states], batch.old_log_prob[states], self.normalize_advantage, self._reducer
        )
        return sequences, surrogate, len(states)

    def _policy_distribution(self, obs: SequenceBatch) -> Distribution:  # type: ignore[override]  # the states are sequences (SequenceBatch)
        return actor_distribution(self.policy, obs)

    def _every_kth_state(self, obs: SequenceBatch, k: int) -> SequenceBatch:  # type: ignore[override]  # the states are sequences (SequenceBatch)
        return obs.every_kth_state(k)

    def _fisher_product(  # type: ignore[override]  # the states are sequences (SequenceBatch)
        self, obs: SequenceBatch, dist_params: tuple[th.Tensor, ...], family: ActionFamily
    ) -> Callable[[th.Tensor], th.Tensor]:
        """The damped Fisher-vector product on the sequences: ``"analytic"`` with first derivatives only, the
        actor's recurrence linearized once per update (:func:`linearized_fisher_product`: ``J v`` through the
        functional LSTM's derivative written out, ``J^T u`` by one backward pass of ``dist_params``' graph),
        ``"autograd"`` the Hessian of the KL through the functional LSTM."""
        if self.fisher == "autograd":
            forward = functional_actor(self.policy, self._actor_params, family, obs)
            return autograd_fisher_product(forward(self._actor_params), self._actor_params, family, self.cg_damping)
        return linearized_fisher_product(self.policy, self._actor_params, family, obs, dist_params, self.cg_damping)

    def _update_critic(self, batch: RecurrentRolloutBufferSamples) -> float:  # type: ignore[override]  # sb3-contrib's recurrent samples
        """``n_critic_updates`` epochs of regression of the values on the returns, over sequence minibatches of
        ``batch_size`` steps from the recurrent buffer (the critic's LSTM runs from the stored states at each
        sequence start; padding is left out of the loss). Data-parallel ranks each take a minibatch of
        ``batch_size`` steps of their own sequences and step on the mean gradient over every rank's steps (one
        all-reduce a step: a sequence cannot be split across ranks). A non-finite loss or weight puts the critic back as it
        was before the update.

        :return: the mean minibatch loss
        """

        def gradient_steps() -> Iterator[th.Tensor]:
            for _ in range(self.n_critic_updates):
                minibatch: Any  # sb3-contrib's RecurrentRolloutBufferSamples (the buffer is typed as SB3's)
                for minibatch in self.rollout_buffer.get(self.batch_size):
                    real = minibatch.mask > 0.5
                    values = sequence_values(
                        self.policy, minibatch.observations, minibatch.lstm_states.vf, minibatch.episode_starts
                    ).flatten()
                    loss = set_gradients((values - minibatch.returns)[real].square().mean(), self._critic_params)
                    if self._ranks is not None:  # sequences stay on their rank: the gradient's mean is global
                        average_gradients(self._reducer, self._critic_params, int(real.sum()))
                    yield loss

        all_ranks = None if self._ranks is None else self._ranks.all_true
        return guarded_regression(
            self.policy.optimizer, self._critic_params, gradient_steps(), "RecurrentTRPO", all_ranks
        )

    # ------------------------------------------------------------ public API
    def learn(
        self: SelfRecurrentTRPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "RecurrentTRPO_ext",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfRecurrentTRPO:
        """Train for ``total_timesteps`` environment steps (see :meth:`TRPO.learn`)."""
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
