"""The speed layer: accelerations of what SB3 and autograd already compute, chosen once per model.

Nothing here changes the algorithm; each piece computes the same function as the plain route, faster on small
networks whose cost is Python and dispatch overhead rather than arithmetic:

* :mod:`~sb3_trpo_ext.fast.mlp`: an SB3 MLP policy's actor and critic read as a chain of layers (:class:`MlpSpec`),
  its numpy forward pass and its torch forward / Jacobian-vector / vector-Jacobian products written out;
* :mod:`~sb3_trpo_ext.fast.numpy_actor`: collection's and ``predict``'s actions from a numpy copy of the actor (or
  from the head computed in torch), drawn with the model's own generator;
* :mod:`~sb3_trpo_ext.fast.fisher`: the MLP actor's Fisher-vector product without autograd;
* :mod:`~sb3_trpo_ext.fast.critic`: the MLP critic's regression gradients without autograd;
* :mod:`~sb3_trpo_ext.fast.rollout`: the rollout buffer filled in whole-array copies, and GAE over plain floats.

:class:`Accelerations` is the one switch (``TRPO(accelerate=False)`` builds the plain one): the algorithm's code
asks it for each piece and falls back to SB3's and autograd's route where it answers None.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import ActorCriticPolicy

from sb3_trpo_ext.common.fisher import ActionFamily, GaussianFamily
from sb3_trpo_ext.fast.critic import PlainMlpCritic, predicted_values, value_function
from sb3_trpo_ext.fast.fisher import mlp_fisher_product
from sb3_trpo_ext.fast.mlp import MlpSpec, uses_sb3_methods
from sb3_trpo_ext.fast.numpy_actor import NumpyActor, SharedActorCache, TorchHeadActor, collection_actor
from sb3_trpo_ext.fast.rollout import compute_gae, fill_buffer

__all__ = ["Accelerations"]


class Accelerations:
    """Which accelerations a model uses: all that apply to its policy (``enabled``), or none (the plain algorithm:
    SB3's per-step collection loop and buffer, SB3's GAE, autograd's Fisher products and critic gradients).

    The two routes compute the same update to float precision on the same batch (``tests/unit/test_fast.py``);
    collection differs by design (the plain route draws actions from torch's generator, as SB3 does).
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def __repr__(self) -> str:
        return f"Accelerations(enabled={self.enabled})"

    # -- collection
    def collection_actor(self, policy: ActorCriticPolicy, fast_collect: bool) -> NumpyActor | TorchHeadActor | None:
        """The actor that draws collection's actions with the model's generator, or None (the policy draws)."""
        return collection_actor(policy) if self.enabled and fast_collect else None

    def evaluates_after_the_loop(self, policy: ActorCriticPolicy) -> bool:
        """Whether values and log-probabilities may be computed in one batch after the loop (a policy that uses
        SB3's own methods), instead of SB3's per-step ``policy(obs)``."""
        return self.enabled and uses_sb3_methods(policy)

    def fill_buffer(
        self,
        buffer: RolloutBuffer,
        observations: list[Any],
        actions: np.ndarray,
        rewards: list[np.ndarray],
        episode_starts: list[np.ndarray],
        values: th.Tensor,
        log_probs: th.Tensor,
        action_masks: list[np.ndarray] | None = None,
    ) -> None:
        """Add a whole rollout to ``buffer``: whole-array copies where they equal SB3's ``add``, else step by step
        (with each step's ``action_masks`` for a masked buffer)."""
        fill_buffer(
            buffer, observations, actions, rewards, episode_starts, values, log_probs, action_masks, whole=self.enabled
        )

    def compute_returns(self, buffer: RolloutBuffer, last_values: th.Tensor, dones: np.ndarray) -> None:
        """Returns and advantages (GAE) of the filled buffer: over plain floats where the buffer uses SB3's own
        recursion, else the buffer's ``compute_returns_and_advantage``."""
        if self.enabled and type(buffer).compute_returns_and_advantage is RolloutBuffer.compute_returns_and_advantage:
            compute_gae(buffer, last_values.cpu().numpy().flatten(), dones)
        else:
            buffer.compute_returns_and_advantage(last_values=last_values, dones=dones)

    # -- update
    def fisher_product(
        self,
        policy: ActorCriticPolicy,
        obs: Any,
        actor_params: Sequence[th.Tensor],
        family: ActionFamily,
        damping: float,
        action_masks: th.Tensor | None = None,
    ) -> Callable[[th.Tensor], th.Tensor] | None:
        """The MLP actor's Fisher-vector product written out (at the masked distributions, with ``action_masks``),
        or None (autograd's analytic product applies)."""
        spec = MlpSpec.actor(policy) if self.enabled else None
        if spec is None:
            return None
        log_std = policy.log_std if isinstance(family, GaussianFamily) else None
        return mlp_fisher_product(
            spec.linears, spec.tanh, log_std, spec.torch_input(obs), actor_params, family, damping, action_masks
        )

    def critic(self, policy: ActorCriticPolicy) -> tuple[PlainMlpCritic | None, Callable[[th.Tensor], th.Tensor]]:
        """The critic's hand-derived regression gradients (None: autograd's) and its value function."""
        if not self.enabled:
            return None, predicted_values(policy)
        return PlainMlpCritic.from_policy(policy), value_function(policy)

    # -- predict
    def predictor(self, cache: SharedActorCache | None, policy: ActorCriticPolicy) -> SharedActorCache | None:
        """``predict``'s numpy actor cache (rebuilt when the policy changed), or None (SB3's ``predict``)."""
        if not self.enabled:
            return None
        return cache if cache is not None and cache.valid_for(policy) else SharedActorCache(policy)
