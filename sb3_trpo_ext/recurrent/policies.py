"""Recurrent policies for RecurrentTRPO: sb3-contrib's LSTM actor-critic policies, their actor/critic split, and
the actor's distribution on a batch of sequences (fused LSTM kernel, or the functional LSTM for the Fisher).

The aliases are sb3-contrib's classes with one changed default, ``share_features_extractor=False`` (as for
:class:`sb3_trpo_ext.TRPO`): with separate feature extractors and LSTMs the critic's regression never moves the
actor, whose every change must pass the trust-region check.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch as th
from sb3_contrib.common.recurrent.policies import (
    RecurrentActorCriticCnnPolicy,
    RecurrentActorCriticPolicy,
    RecurrentMultiInputActorCriticPolicy,
)
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import BaseModel
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn

from sb3_trpo_ext.common.fisher import ActionFamily, DistParams
from sb3_trpo_ext.recurrent.lstm import lstm_sequence
from sb3_trpo_ext.trpo.policies import _module_parameters

__all__ = [
    "CnnLstmPolicy",
    "MlpLstmPolicy",
    "MultiInputLstmPolicy",
    "SequenceBatch",
    "actor_distribution",
    "functional_actor",
    "split_recurrent_actor_critic",
]


class MlpLstmPolicy(RecurrentActorCriticPolicy):
    """sb3-contrib's ``MlpLstmPolicy`` with separate actor and critic feature extractors by default."""

    def __init__(self, *args: Any, share_features_extractor: bool = False, **kwargs: Any):
        super().__init__(*args, share_features_extractor=share_features_extractor, **kwargs)


class CnnLstmPolicy(RecurrentActorCriticCnnPolicy):
    """sb3-contrib's ``CnnLstmPolicy`` with separate actor and critic feature extractors by default."""

    def __init__(self, *args: Any, share_features_extractor: bool = False, **kwargs: Any):
        super().__init__(*args, share_features_extractor=share_features_extractor, **kwargs)


class MultiInputLstmPolicy(RecurrentMultiInputActorCriticPolicy):
    """sb3-contrib's ``MultiInputLstmPolicy`` with separate actor and critic feature extractors by default."""

    def __init__(self, *args: Any, share_features_extractor: bool = False, **kwargs: Any):
        super().__init__(*args, share_features_extractor=share_features_extractor, **kwargs)


def split_recurrent_actor_critic(policy: RecurrentActorCriticPolicy) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split a recurrent policy's parameters into the actor's and the critic's, from its structure.

    The actor is ``pi_features_extractor``, ``lstm_actor``, ``mlp_extractor.policy_net``, ``action_net`` and
    ``log_std``; the critic is ``vf_features_extractor`` (unless shared), ``lstm_critic`` or the ``critic`` Linear
    (whichever exists), ``mlp_extractor.value_net`` and ``value_net``. A shared LSTM (``shared_lstm=True``) is
    the actor's, as a shared feature extractor is: the critic reads it detached and trains its own head.

    :return: the actor's parameters and the critic's parameters
    :raises ValueError: if a parameter belongs to neither or to both
    """
    actor = _module_parameters(
        policy.pi_features_extractor,
        policy.lstm_actor,
        policy.mlp_extractor.policy_net,
        policy.action_net,
        getattr(policy, "log_std", None),
    )
    shared = policy.vf_features_extractor is policy.pi_features_extractor
    critic = _module_parameters(
        None if shared else policy.vf_features_extractor,
        policy.lstm_critic,
        policy.critic,
        policy.mlp_extractor.value_net,
        policy.value_net,
    )
    actor_ids, critic_ids = {id(p) for p in actor}, {id(p) for p in critic}
    names = {id(p): name for name, p in policy.named_parameters()}
    unassigned = [name for pid, name in names.items() if pid not in actor_ids | critic_ids]
    if unassigned or actor_ids & critic_ids:
        raise ValueError(
            f"Cannot split the parameters of {type(policy).__name__} into actor and critic: "
            f"unassigned {unassigned}, in both {[names[i] for i in actor_ids & critic_ids]}"
        )
    return actor, critic


@dataclass(frozen=True)
class SequenceBatch:
    """The states of an update as sequences, in the padded layout of sb3-contrib's recurrent rollout buffer.

    :param observations: ``(n_seq * max_length, ...)`` (or a dict of them), sequence by sequence, zero-padded
    :param lstm_states: the actor's hidden and cell states stored at the sequence starts,
        ``(num_layers, n_seq, hidden_size)`` each
    :param episode_starts: ``(n_seq * max_length,)``, 1.0 where an episode starts (0 in the padding)
    :param states: positions in the padded layout of the states the update uses (the real steps, or a subset)
    """

    observations: PyTorchObs
    lstm_states: tuple[th.Tensor, th.Tensor]
    episode_starts: th.Tensor
    states: th.Tensor

    def every_kth_state(self, k: int) -> SequenceBatch:
        """The same sequences, with every ``k``-th of the states (the LSTM still runs over whole sequences)."""
        return replace(self, states=self.states[::k])


def actor_distribution(
    policy: RecurrentActorCriticPolicy, batch: SequenceBatch, functional: bool = False
) -> Distribution:
    """The actor's distribution at ``batch.states``, the hidden states recomputed with the current parameters
    from the stored sequence starts (as sb3-contrib's ``get_distribution`` / ``evaluate_actions``).

    :param policy: the recurrent policy
    :param batch: the sequences
    :param functional: run the LSTM as :func:`lstm_sequence` (forward-mode AD capable) instead of its fused kernel
    """
    features = BaseModel.extract_features(policy, batch.observations, policy.pi_features_extractor)  # type: ignore[arg-type]
    if functional:
        latent = lstm_sequence(policy.lstm_actor, features, batch.lstm_states, batch.episode_starts)
    else:
        latent, _ = policy._process_sequence(features, batch.lstm_states, batch.episode_starts, policy.lstm_actor)
    latent = policy.mlp_extractor.forward_actor(latent[batch.states])
    return policy._get_action_dist_from_latent(latent)


class _FunctionalActor(nn.Module):
    """``batch -> distribution parameters`` through :func:`actor_distribution` with the functional LSTM, as a
    module, so that ``torch.func.functional_call`` can run it with substituted actor parameters."""

    def __init__(self, policy: RecurrentActorCriticPolicy, family: ActionFamily):
        super().__init__()
        self.policy = policy
        self.family = family

    def forward(self, batch: SequenceBatch) -> DistParams:
        return self.family.params(actor_distribution(self.policy, batch, functional=True))


def functional_actor(
    policy: RecurrentActorCriticPolicy, actor_params: list[nn.Parameter], family: ActionFamily, batch: SequenceBatch
) -> Any:
    """``tensors -> distribution parameters at batch.states`` with ``tensors`` in place of ``actor_params`` (the
    ``forward`` of :func:`sb3_trpo_ext.common.fisher.forward_mode_fisher_product`).

    :param policy: the recurrent policy
    :param actor_params: the actor's parameters, in the order of the tensors the function takes
    :param family: the action distribution family
    :param batch: the sequences
    """
    module = _FunctionalActor(policy, family)
    names = {id(p): f"policy.{name}" for name, p in policy.named_parameters()}
    actor_names = [names[id(p)] for p in actor_params]

    def forward(tensors: Any) -> DistParams:
        return th.func.functional_call(module, dict(zip(actor_names, tensors, strict=True)), (batch,))

    return forward
