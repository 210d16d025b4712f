"""Vine sampling with action masks (see :mod:`sb3_trpo_ext.common.vine`).

* The ``K`` actions of a rollout-set state are drawn from the masked policy at that state (its mask as the trunk
  saw it); an enumerated ``Discrete`` space (at most ``K`` actions) tries only the state's valid actions: the
  branches of invalid ones are never run.
* Branches follow the masked policy: after each branch step the environment's ``action_masks()`` is read at the
  branch's state (where the environment lives, in its worker for a ``SubprocVecEnv``).
* The rollout set keeps the masks of its states, so the surrogate, the KL check and the Fisher of the update use
  the same masked distributions; the per-state baseline of the enumerated surrogate is the mean over the valid
  actions, and invalid actions contribute nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th
from sb3_contrib.common.maskable.buffers import MaskableDictRolloutBuffer, MaskableRolloutBuffer
from sb3_contrib.common.maskable.utils import EXPECTED_METHOD_NAME
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.type_aliases import PyTorchObs

from sb3_trpo_ext.common.reduce import LOCAL, Reducer
from sb3_trpo_ext.common.surrogate import Surrogate, vine_surrogate
from sb3_trpo_ext.common.vine import RolloutSet, VineBufferMixin, VineSampler
from sb3_trpo_ext.maskable.distributions import MaskedObs, as_mask_array, masked_sample_with_noise

__all__ = ["MaskableDictVineRolloutBuffer", "MaskableVineRolloutBuffer", "MaskableVineSampler", "MaskedRolloutSet"]


class MaskableVineRolloutBuffer(VineBufferMixin, MaskableRolloutBuffer):
    """sb3-contrib's ``MaskableRolloutBuffer`` (the trunk, with its masks) plus the vine ``rollout_set``."""


class MaskableDictVineRolloutBuffer(VineBufferMixin, MaskableDictRolloutBuffer):
    """sb3-contrib's ``MaskableDictRolloutBuffer`` (dict observations) plus the vine ``rollout_set``."""


@dataclass
class MaskedRolloutSet(RolloutSet):
    """A :class:`~sb3_trpo_ext.common.vine.RolloutSet` with the action masks of its states.

    :param action_masks: ``(N, mask_dims)`` bool, the masks of the rollout-set states (None: no masking)
    :param tried: ``(N, K)`` bool, which of the ``K`` actions got a branch (False: an invalid enumerated action,
        whose Q estimate is meaningless)
    """

    action_masks: th.Tensor | None = None
    tried: th.Tensor | None = None

    def surrogate(self, normalize_advantage: bool, reducer: Reducer = LOCAL) -> tuple[Any, Surrogate, int]:
        """The vine surrogate on the valid actions (:func:`~sb3_trpo_ext.common.surrogate.vine_surrogate` with
        ``tried``: an action that was not tried has advantage 0 and no importance weight). The states returned carry
        their masks (:class:`~sb3_trpo_ext.maskable.distributions.MaskedObs`)."""
        surrogate = vine_surrogate(
            self.actions, self.old_log_probs, self.q_values, self.enumerated, normalize_advantage, self.tried, reducer
        )
        return MaskedObs(self.observations, self.action_masks), surrogate, len(self.q_values)


class MaskableVineSampler(VineSampler):
    """:class:`~sb3_trpo_ext.common.vine.VineSampler` whose actions (first actions and branch steps) are drawn from
    the masked policy. Arguments as for ``VineSampler``, plus:

    :param mask_dims: entries of one action mask (``n`` for ``Discrete(n)``, ``sum(nvec)``, ``2 n`` for
        ``MultiBinary(n)``)
    :param use_masking: False: no masks anywhere (the unmasked policy, as ``learn(use_masking=False)``)
    """

    def __init__(self, *args: Any, mask_dims: int, use_masking: bool = True, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.mask_dims = mask_dims
        self.use_masking = use_masking
        self._set_masks: list[np.ndarray] = []  # the masks of the rollout-set states, as the trunk saw them
        self._env_of_branch: np.ndarray = np.zeros(0, dtype=int)
        #: every action mask the branches were given, (branch, mask), for tests and diagnostics
        self.last_branch_masks: list[tuple[int, np.ndarray]] = []

    def plan(self, n_steps: int) -> None:
        super().plan(n_steps)
        self._set_masks = []

    def on_trunk_step(self, step: int, last_obs: Any, action_masks: np.ndarray | None = None) -> None:
        """Called before the trunk acts at ``step``, with the masks of that step (``(n_envs, mask_dims)``)."""
        chosen = self._plan.get(step)
        if chosen and self.use_masking:
            assert action_masks is not None, "MaskableVineSampler needs the trunk's action masks"
            masks = as_mask_array(action_masks, self.mask_dims)
            self._set_masks.extend(masks[env_index] for env_index in chosen)
        super().on_trunk_step(step, last_obs)

    def _set_mask_tensor(self, device: th.device) -> th.Tensor | None:
        if not self.use_masking:
            return None
        return th.as_tensor(np.stack(self._set_masks), dtype=th.bool, device=device)

    # ----------------------------------------------------------------- hooks
    def _distribution(self, policy: Any, obs: PyTorchObs, branches: np.ndarray | None) -> Distribution:
        if not self.use_masking:
            return policy.get_distribution(obs)
        if branches is None:  # the rollout-set states
            n_states = len(self._states)
            n_actions = int(self.action_space.n) if self.enumerate_actions else self.n_actions  # type: ignore[attr-defined]  # enumerated only for a Discrete space
            self._env_of_branch = np.repeat([env_index for env_index, _ in self._states], n_actions)
            self.last_branch_masks = []
            masks = self._set_mask_tensor(policy.device)
            assert masks is not None and masks.shape[0] == n_states
            return policy.get_distribution(obs, action_masks=masks)
        per_env: dict[int, tuple[str, list[int]]] = {}
        for b in branches:
            per_env.setdefault(int(self._env_of_branch[b]), (EXPECTED_METHOD_NAME, []))[1].append(int(b))
        results = self.workers.call("call_at_branches", per_env)
        by_branch = {
            b: mask for env_index, (_, listed) in per_env.items() for b, mask in zip(listed, results[env_index])
        }
        branch_masks = as_mask_array([np.asarray(by_branch[int(b)]).reshape(-1) for b in branches], self.mask_dims)
        self.last_branch_masks.extend(zip((int(b) for b in branches), branch_masks))
        return policy.get_distribution(obs, action_masks=th.as_tensor(branch_masks, device=policy.device))

    def _sample(self, distribution: Distribution, noise: th.Tensor) -> th.Tensor:
        return masked_sample_with_noise(distribution, noise)

    def _tried(self, actions: th.Tensor) -> np.ndarray:
        if not (self.enumerate_actions and self.use_masking):
            return super()._tried(actions)
        masks = np.stack(self._set_masks)  # (N, n): every action of the space, in order
        return masks.reshape(-1).copy()

    def run_branches(self, policy: Any, to_env_action: Any) -> tuple[MaskedRolloutSet, int]:
        """See :meth:`VineSampler.run_branches`; the rollout set also holds the states' masks and which actions
        were tried."""
        rollout_set, branch_steps = super().run_branches(policy, to_env_action)
        device = rollout_set.q_values.device
        masks = self._set_mask_tensor(device)
        tried = None
        if self.enumerate_actions and masks is not None:
            tried = masks.clone()
        masked = MaskedRolloutSet(**vars(rollout_set), action_masks=masks, tried=tried)
        return masked, branch_steps
