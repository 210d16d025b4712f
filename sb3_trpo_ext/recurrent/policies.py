"""Recurrent policies for RecurrentTRPO: sb3-contrib's LSTM actor-critic policies, their actor/critic split, and
the actor's distribution on a batch of sequences (fused LSTM kernel, or the functional LSTM for the Fisher).

The aliases are sb3-contrib's classes with one changed default, ``share_features_extractor=False`` (as for
:class:`sb3_trpo_ext.TRPO`; True with ``shared_lstm=True``, which needs it): with separate feature extractors and
LSTMs the critic's regression never moves the actor, whose every change must pass the trust-region check.
"""

from __future__ import annotations

from collections.abc import Callable
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

from sb3_trpo_ext.common.fisher import ActionFamily, DistParams, flatten, unflatten
from sb3_trpo_ext.recurrent.lstm import LinearizedLSTM, fused_sequence, lstm_sequence
from sb3_trpo_ext.trpo.policies import SafeLoadMixin, SeparateExtractorsByDefault

__all__ = [
    "CnnLstmPolicy",
    "MlpLstmPolicy",
    "MultiInputLstmPolicy",
    "SequenceBatch",
    "actor_distribution",
    "call_with",
    "functional_actor",
    "linearized_fisher_product",
    "process_sequence",
    "sequence_values",
    "substitution_names",
]


class MlpLstmPolicy(SafeLoadMixin, SeparateExtractorsByDefault, RecurrentActorCriticPolicy):
    """sb3-contrib's ``MlpLstmPolicy`` with separate actor and critic feature extractors by default."""


class CnnLstmPolicy(SafeLoadMixin, SeparateExtractorsByDefault, RecurrentActorCriticCnnPolicy):
    """sb3-contrib's ``CnnLstmPolicy`` with separate actor and critic feature extractors by default."""


class MultiInputLstmPolicy(SafeLoadMixin, SeparateExtractorsByDefault, RecurrentMultiInputActorCriticPolicy):
    """sb3-contrib's ``MultiInputLstmPolicy`` with separate actor and critic feature extractors by default."""


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


def process_sequence(
    policy: RecurrentActorCriticPolicy,
    features: th.Tensor,
    lstm_states: tuple[th.Tensor, th.Tensor],
    episode_starts: th.Tensor,
    lstm: nn.LSTM,
) -> th.Tensor:
    """The LSTM output over padded sequences, as sb3-contrib's ``_process_sequence`` computes it: with one call
    of the fused kernel when episodes start only at sequence starts (always so for sb3-contrib's recurrent
    buffer, which cuts sequences there; :func:`fused_sequence`), else with ``_process_sequence`` itself (one
    fused call per time step).

    :return: ``(n_seq * max_length, hidden_size)``
    """
    latent = fused_sequence(lstm, features, lstm_states, episode_starts)
    if latent is None:
        latent, _ = policy._process_sequence(features, lstm_states, episode_starts, lstm)
    return latent


def sequence_values(
    policy: RecurrentActorCriticPolicy,
    observations: PyTorchObs,
    lstm_states: tuple[th.Tensor, th.Tensor],
    episode_starts: th.Tensor,
) -> th.Tensor:
    """The critic's values over padded sequences: sb3-contrib's ``predict_values``, its LSTM run through
    :func:`process_sequence`.

    :param policy: the recurrent policy
    :param observations: ``(n_seq * max_length, ...)`` (or a dict of them), sequence by sequence
    :param lstm_states: the critic's states at the sequence starts (the actor's with ``shared_lstm``)
    :param episode_starts: ``(n_seq * max_length,)``, 1.0 where an episode starts
    :return: ``(n_seq * max_length, 1)``
    """
    features = BaseModel.extract_features(policy, observations, policy.vf_features_extractor)
    if policy.lstm_critic is not None:
        latent = process_sequence(policy, features, lstm_states, episode_starts, policy.lstm_critic)
    elif policy.shared_lstm:
        latent = process_sequence(policy, features, lstm_states, episode_starts, policy.lstm_actor).detach()
    else:
        assert policy.critic is not None  # sb3-contrib's Linear critic when there is no critic LSTM
        latent = policy.critic(features)
    return policy.value_net(policy.mlp_extractor.forward_critic(latent))


def actor_distribution(
    policy: RecurrentActorCriticPolicy, batch: SequenceBatch, functional: bool = False
) -> Distribution:
    """The actor's distribution at ``batch.states``, the hidden states recomputed with the current parameters
    from the stored sequence starts (as sb3-contrib's ``get_distribution`` / ``evaluate_actions``).

    :param policy: the recurrent policy
    :param batch: the sequences
    :param functional: run the LSTM as :func:`lstm_sequence` (forward-mode AD capable) instead of its fused kernel
    """
    features = BaseModel.extract_features(policy, batch.observations, policy.pi_features_extractor)
    if functional:
        latent = lstm_sequence(policy.lstm_actor, features, batch.lstm_states, batch.episode_starts)
    else:
        latent = process_sequence(policy, features, batch.lstm_states, batch.episode_starts, policy.lstm_actor)
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
    """``tensors -> distribution parameters at batch.states`` with ``tensors`` in place of ``actor_params`` (for
    the ``"autograd"`` reference product, whose double backprop cannot go through the fused LSTM kernels).

    :param policy: the recurrent policy
    :param actor_params: the actor's parameters, in the order of the tensors the function takes
    :param family: the action distribution family
    :param batch: the sequences
    """
    module = _FunctionalActor(policy, family)
    actor_names = substitution_names(module, actor_params)

    def forward(tensors: Any) -> DistParams:
        return call_with(module, actor_names, tensors, batch)

    return forward


def substitution_names(root: nn.Module, params: list[nn.Parameter]) -> list[list[str]]:
    """For each of ``params``, the names under which ``torch.func.functional_call(root, ..., tie_weights=False)``
    must substitute it: one name per module that holds it. A module reachable under two names (SB3 keeps the
    actor's extractor as both ``features_extractor`` and ``pi_features_extractor``) is named once: given both
    names of one module, torch's reparametrization saves the first substitute as the "original" of the second and
    leaves a plain tensor in the policy on exit (tested). A parameter held by two modules (weight tying) is named
    once per module, so each one sees the substitute."""
    holders: dict[int, dict[tuple[int, str], str]] = {}
    for name, param in root.named_parameters(remove_duplicate=False):
        module_name, _, attribute = name.rpartition(".")
        holder = root.get_submodule(module_name)
        holders.setdefault(id(param), {}).setdefault((id(holder), attribute), name)
    return [list(holders[id(param)].values()) for param in params]


def call_with(module: nn.Module, names: list[list[str]], tensors: Any, argument: Any) -> Any:
    """``module(argument)`` with ``tensors`` in place of the parameters that ``names`` (from
    :func:`substitution_names`) name, the module's own parameters untouched afterwards."""
    substituted = {name: tensor for group, tensor in zip(names, tensors, strict=True) for name in group}
    return th.func.functional_call(module, substituted, (argument,), tie_weights=False)


class _Features(nn.Module):
    """``observations -> features`` of the actor's feature extractor, for ``torch.func.functional_call``."""

    def __init__(self, policy: RecurrentActorCriticPolicy):
        super().__init__()
        self.policy = policy

    def forward(self, observations: PyTorchObs) -> th.Tensor:
        return BaseModel.extract_features(self.policy, observations, self.policy.pi_features_extractor)


class _Head(nn.Module):
    """``LSTM output -> distribution parameters`` of the actor (its MLP and action head), for
    ``torch.func.functional_call``."""

    def __init__(self, policy: RecurrentActorCriticPolicy, family: ActionFamily):
        super().__init__()
        self.policy = policy
        self.family = family

    def forward(self, latent: th.Tensor) -> DistParams:
        latent = self.policy.mlp_extractor.forward_actor(latent)
        return self.family.params(self.policy._get_action_dist_from_latent(latent))


def linearized_fisher_product(
    policy: RecurrentActorCriticPolicy,
    actor_params: list[nn.Parameter],
    family: ActionFamily,
    batch: SequenceBatch,
    dist_params: DistParams,
    damping: float = 0.0,
) -> Callable[[th.Tensor], th.Tensor]:
    """``v -> (mean_s J_s^T M_s J_s) v + damping * v`` on the sequences, with first derivatives only and the
    actor's recurrence linearized once per update.

    ``J v`` goes in three pieces: the feature extractor by ``torch.func.jvp`` (batched over every step; skipped
    when it has no parameters), the LSTM by :class:`~sb3_trpo_ext.recurrent.lstm.LinearizedLSTM` (its forward
    pass and gates computed once, here; each product pushes the tangents through the recurrence by hand), the
    MLP and action head by ``torch.func.jvp`` at the real states. ``J^T u`` is one backward pass of the graph of
    ``dist_params`` (built by the caller with the fused kernel, retained). The same product as
    forward-mode AD through the functional actor (``tests/fisher_reference.py``, tested).

    :param policy: the recurrent policy
    :param actor_params: the actor's parameters, in the order of the flat vectors
    :param family: the action distribution family
    :param batch: the sequences (and the states the Fisher averages over)
    :param dist_params: the distribution parameters at ``batch.states`` at ``theta_old``, with their graph to
        ``actor_params``
    :param damping: Tikhonov damping added to the product
    """
    lstm = policy.lstm_actor
    lstm_names = {id(p): name for name, p in lstm.named_parameters()}
    extractor_ids = {id(p) for p in policy.pi_features_extractor.parameters()}
    lstm_at = [i for i, p in enumerate(actor_params) if id(p) in lstm_names]
    extractor_at = [i for i, p in enumerate(actor_params) if id(p) in extractor_ids]
    head_at = [i for i in range(len(actor_params)) if i not in set(lstm_at) | set(extractor_at)]

    features_module, head_module = _Features(policy), _Head(policy, family)
    extractor_names = substitution_names(features_module, [actor_params[i] for i in extractor_at])
    head_names = substitution_names(head_module, [actor_params[i] for i in head_at])

    with th.no_grad():
        features = features_module(batch.observations)
    linearized = LinearizedLSTM(lstm, features, batch.lstm_states, batch.episode_starts)
    latent = linearized.output[batch.states]
    primals = [p.detach() for p in actor_params]
    dist_at = tuple(t.detach() for t in dist_params)
    n_states = dist_at[0].shape[0]

    def product(vector: th.Tensor) -> th.Tensor:
        tangents = unflatten(vector, actor_params)
        features_tangent = None
        if extractor_at:
            features_tangent = th.func.jvp(
                lambda *tensors: call_with(features_module, extractor_names, tensors, batch.observations),
                tuple(primals[i] for i in extractor_at),
                tuple(tangents[i] for i in extractor_at),
            )[1]
        latent_tangent = linearized.jvp(
            {lstm_names[id(actor_params[i])]: tangents[i] for i in lstm_at}, features_tangent
        )[batch.states]
        jv = th.func.jvp(
            lambda latent_in, *tensors: tuple(call_with(head_module, head_names, tensors, latent_in)),
            (latent, *(primals[i] for i in head_at)),
            (latent_tangent, *(tangents[i] for i in head_at)),
        )[1]
        weighted = tuple(t / n_states for t in family.fisher_times(dist_at, jv))
        grads = th.autograd.grad(
            dist_params, actor_params, weighted, retain_graph=True, allow_unused=True, materialize_grads=True
        )
        return flatten(grads) + damping * vector

    return product
