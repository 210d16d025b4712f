"""TRPO with invalid-action masking: :class:`MaskableTRPO`, with SB3 conventions of sb3-contrib's ``MaskablePPO``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib.common.maskable.buffers import MaskableDictRolloutBuffer, MaskableRolloutBuffer
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, PyTorchObs, RolloutBufferSamples
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo_ext.common.fisher import FISHER_PRODUCTS, ActionFamily
from sb3_trpo_ext.common.surrogate import Surrogate
from sb3_trpo_ext.maskable.distributions import MaskedObs, masked_action_family
from sb3_trpo_ext.maskable.policies import MaskableCnnPolicy, MaskableMlpPolicy, MaskableMultiInputPolicy
from sb3_trpo_ext.maskable.vine import MaskableDictVineRolloutBuffer, MaskableVineRolloutBuffer, MaskableVineSampler
from sb3_trpo_ext.trpo.hyperparams import AUTOMATIC_BUFFERS
from sb3_trpo_ext.trpo.trpo import TRPO

__all__ = ["MaskableTRPO"]

SelfMaskableTRPO = TypeVar("SelfMaskableTRPO", bound="MaskableTRPO")

#: Rollout buffers MaskableTRPO chooses itself (and saves with the model): replaced by the one that fits the
#: sampling scheme and observation space at every setup.
_AUTOMATIC_BUFFERS = (
    *AUTOMATIC_BUFFERS,
    MaskableRolloutBuffer,
    MaskableDictRolloutBuffer,
    MaskableVineRolloutBuffer,
    MaskableDictVineRolloutBuffer,
)
_MASKABLE_SPACES = (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def mask_dims(action_space: spaces.Space) -> int:
    """Entries of one action mask: ``n`` for ``Discrete(n)``, ``sum(nvec)`` for ``MultiDiscrete``, ``2 n`` for
    ``MultiBinary(n)`` (sb3-contrib's layout).

    :raises ValueError: for any other space (or a multi-dimensional ``MultiBinary``)
    """
    if isinstance(action_space, spaces.Discrete):
        return int(action_space.n)
    if isinstance(action_space, spaces.MultiDiscrete):
        return int(np.sum(action_space.nvec))
    if isinstance(action_space, spaces.MultiBinary) and isinstance(action_space.n, (int, np.integer)):
        return 2 * int(action_space.n)
    raise ValueError(
        f"Invalid action space {action_space}: MaskableTRPO supports Discrete, MultiDiscrete and one-dimensional "
        "MultiBinary action spaces"
    )


class MaskableTRPO(TRPO):
    """
    TRPO with invalid-action masking (Huang & Ontañón, 2020), used like sb3-contrib's ``MaskablePPO``.

    The masks come from the environment's ``action_masks()`` method (directly or through sb3-contrib's
    ``ActionMasker`` wrapper) at every step; an invalid action gets probability 0 (sb3-contrib's maskable policies
    and distributions). The update is :class:`~sb3_trpo_ext.TRPO`'s natural-gradient step on the masked
    distributions of the batch's states: invalid actions contribute nothing to the surrogate, the true KL of the
    trust region or the Fisher (see :mod:`sb3_trpo_ext.maskable.distributions`). ``predict(...,
    action_masks=...)``, sb3-contrib's maskable ``evaluate_policy`` and ``MaskableEvalCallback`` work with it.
    Vine sampling draws the ``K`` actions and the branches' actions from the masked policy (an enumerated
    ``Discrete`` space tries only the valid actions; see :mod:`sb3_trpo_ext.maskable.vine`).

    Collection calls the policy's ``forward`` with the step's masks (as MaskablePPO does), so ``fast_collect``
    has no effect here.

    :param policy: ``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"`` (sb3-contrib's maskable policies with
        separate actor and critic feature extractors by default) or a ``MaskableActorCriticPolicy`` subclass
    :param env: The environment to learn from (if registered in Gym, can be str); ``Discrete``, ``MultiDiscrete``
        or ``MultiBinary`` actions
    :param rollout_buffer_class: None (sb3-contrib's ``MaskableRolloutBuffer``, or the maskable vine buffers with
        ``sampling="vine"``), or a subclass of ``MaskableRolloutBuffer`` / ``MaskableDictRolloutBuffer``
    :param kwargs: every other hyperparameter of :class:`~sb3_trpo_ext.TRPO` (``use_sde`` must stay False)
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MaskableMlpPolicy,
        "CnnPolicy": MaskableCnnPolicy,
        "MultiInputPolicy": MaskableMultiInputPolicy,
    }
    policy: MaskableActorCriticPolicy  # type: ignore[assignment]  # sb3-contrib's maskable policy narrows TRPO's
    _vine: MaskableVineSampler | None

    def __init__(
        self,
        policy: str | type[MaskableActorCriticPolicy],
        env: GymEnv | str,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        _init_setup_model: bool = True,
        **kwargs: Any,
    ):
        if kwargs.get("use_sde"):
            raise ValueError(f"Invalid use_sde={kwargs['use_sde']!r}: MaskableTRPO has discrete actions, no gSDE")
        #: whether collection applies the environment's masks (``learn(use_masking=...)``)
        self._use_masking = True
        super().__init__(
            policy,  # type: ignore[arg-type]  # a maskable policy class, which TRPO's signature does not name
            env,
            rollout_buffer_class=rollout_buffer_class,
            _init_setup_model=False,
            **kwargs,
        )
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------ setup
    def _setup_model(self) -> None:
        if not isinstance(self.action_space, _MASKABLE_SPACES):
            raise ValueError(
                f"Invalid action space {self.action_space}: MaskableTRPO supports Discrete, MultiDiscrete and "
                "MultiBinary action spaces"
            )
        self._mask_dims = mask_dims(self.action_space)
        is_dict = isinstance(self.observation_space, spaces.Dict)
        if self.rollout_buffer_class in _AUTOMATIC_BUFFERS:
            if self.sampling == "vine":
                self.rollout_buffer_class = MaskableDictVineRolloutBuffer if is_dict else MaskableVineRolloutBuffer
            else:
                self.rollout_buffer_class = MaskableDictRolloutBuffer if is_dict else MaskableRolloutBuffer
        elif not (
            isinstance(self.rollout_buffer_class, type)
            and issubclass(self.rollout_buffer_class, (MaskableRolloutBuffer, MaskableDictRolloutBuffer))
        ):
            raise ValueError(
                f"Invalid rollout_buffer_class={self.rollout_buffer_class!r}: MaskableTRPO stores the action masks, "
                "so it must be a subclass of sb3-contrib's MaskableRolloutBuffer or MaskableDictRolloutBuffer"
            )
        # SB3's setup builds the policy with ``use_sde=...``, an argument sb3-contrib's maskable policies do not take
        policy_class = self.policy_class

        def build_policy(*args: Any, use_sde: bool = False, **kwargs: Any) -> BasePolicy:
            return policy_class(*args, **kwargs)

        self.policy_class = build_policy  # type: ignore[assignment]  # a builder stands for the class (docs/private_api.md)
        try:
            super()._setup_model()
        finally:
            self.policy_class = policy_class
        if not isinstance(self.policy, MaskableActorCriticPolicy):
            raise ValueError(
                f"Invalid policy {type(self.policy).__name__}: MaskableTRPO needs a subclass of sb3-contrib's "
                "MaskableActorCriticPolicy"
            )

    def _make_vine_sampler(self, **settings: Any) -> MaskableVineSampler:
        """The masked vine sampler: the K actions of a state and the branches follow the masked policy.

        :param settings: the rollout-set size, actions per state, horizon, bootstrap, gamma and seed
        :raises UnrestorableEnvError: if an environment or wrapper cannot be restored exactly
        """
        return MaskableVineSampler(self.env, mask_dims=self._mask_dims, use_masking=self._use_masking, **settings)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_mask_dims"]

    # ------------------------------------------------------------- collection
    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """Collect ``n_rollout_steps`` per environment with TRPO's collection loop and the current masked policy: the
        environments' masks are read before every step (:meth:`_action_masks`), applied to the actions drawn (the
        numpy actor's masked logits, or the policy's masked distribution) and stored in the buffer; with vine
        sampling, then run the branches of the rollout set.

        :return: True if ``n_rollout_steps`` were collected, False if a callback stopped the rollout.
        :raises ValueError: if masking is on and the environment has no ``action_masks()`` method
        """
        assert isinstance(rollout_buffer, (MaskableRolloutBuffer, MaskableDictRolloutBuffer)), (
            "MaskableTRPO's rollout buffer must store the action masks"
        )
        if self._use_masking and not is_masking_supported(env):
            raise ValueError(
                "The environment does not support action masking (no action_masks() method): wrap it in "
                "sb3-contrib's ActionMasker, or call learn(..., use_masking=False)"
            )
        if self._vine is not None:
            self._vine.use_masking = self._use_masking
        return super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)

    def _action_masks(self, env: VecEnv) -> np.ndarray | None:
        """The environments' masks before a step, as MaskablePPO reads them (None with ``use_masking=False``)."""
        return get_action_masks(env) if self._use_masking else None

    # ----------------------------------------------------------------- update
    def _single_path_surrogate(self, batch: RolloutBufferSamples) -> tuple[Any, Surrogate, int]:
        """TRPO's single-path surrogate on the batch's masked distributions: the states carry their masks."""
        observations, surrogate, n_states = super()._single_path_surrogate(batch)
        return MaskedObs(observations, batch.action_masks), surrogate, n_states  # type: ignore[attr-defined]  # the maskable buffer's samples carry action_masks

    def _policy_distribution(self, obs: PyTorchObs) -> Distribution:
        """The masked distribution at the states (with their masks, :class:`MaskedObs`) of the update."""
        if isinstance(obs, MaskedObs):
            return self.policy.get_distribution(obs.observations, action_masks=obs.action_masks)
        return self.policy.get_distribution(obs)

    def _action_family(self, distribution: Distribution) -> ActionFamily:
        return masked_action_family(distribution)

    def _fisher_product(
        self, obs: PyTorchObs, dist_params: tuple[th.Tensor, ...], family: ActionFamily
    ) -> Callable[[th.Tensor], th.Tensor]:
        """``J^T M J v`` at the masked distributions (``fisher="analytic"``: the speed layer's MLP product where it
        applies, else ``J`` from autograd; a masked logit is a constant, its ``J`` row is 0) or the Hessian of the
        KL (``"autograd"``)."""
        if self.fisher == "analytic" and isinstance(obs, MaskedObs):
            product = self._speed.fisher_product(
                self.policy, obs.observations, self._actor_params, family, self.cg_damping, obs.action_masks
            )
            if product is not None:
                return product
        return FISHER_PRODUCTS[self.fisher](dist_params, self._actor_params, family, self.cg_damping)

    # ------------------------------------------------------------ public API
    def learn(  # type: ignore[override]  # use_masking, as MaskablePPO.learn takes it
        self: SelfMaskableTRPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "MaskableTRPO_ext",
        reset_num_timesteps: bool = True,
        use_masking: bool = True,
        progress_bar: bool = False,
    ) -> SelfMaskableTRPO:
        """Train for ``total_timesteps`` environment steps, as sb3-contrib's ``MaskablePPO.learn``.

        :param total_timesteps: environment steps to train for
        :param callback: callback(s) called at every step
        :param log_interval: updates between two log dumps
        :param tb_log_name: the TensorBoard run name
        :param reset_num_timesteps: whether to reset the timestep counter
        :param use_masking: apply the environment's action masks (False: the unmasked policy)
        :param progress_bar: show a progress bar (tqdm and rich)
        """
        self._use_masking = bool(use_masking)
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """The policy's action for ``observation``, as sb3-contrib's ``MaskablePPO.predict``.

        :param observation: the observation (or a batch of them)
        :param state: unused (recurrent policies)
        :param episode_start: unused (recurrent policies)
        :param deterministic: the most probable valid action instead of a sample
        :param action_masks: the masks of the observation(s), True (or 1) where an action is valid; None: no masking
        :return: the action(s) and ``state``
        """
        actions = self._numpy_predict(observation, state, deterministic, action_masks) if state is None else None
        if actions is not None:  # the speed layer's numpy actor, masked
            return actions, state
        return self.policy.predict(observation, state, episode_start, deterministic, action_masks=action_masks)
