"""Policies for TRPO and the split of their parameters into actor and critic.

The aliases are SB3's actor-critic policies with one changed default:
``share_features_extractor=False``. With separate feature extractors the critic's regression can
never move the actor, whose every change must pass the trust-region check.
"""

from __future__ import annotations

from typing import Any

import torch as th
from stable_baselines3.common.policies import (
    ActorCriticCnnPolicy,
    ActorCriticPolicy,
    MultiInputActorCriticPolicy,
)
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn

from sb3_trpo_ext.common.fisher import ActionFamily, DistParams


class MlpPolicy(ActorCriticPolicy):
    """SB3's ``ActorCriticPolicy`` with separate actor and critic feature extractors by default."""

    def __init__(self, *args: Any, share_features_extractor: bool = False, **kwargs: Any):
        super().__init__(*args, share_features_extractor=share_features_extractor, **kwargs)


class CnnPolicy(ActorCriticCnnPolicy):
    """SB3's ``ActorCriticCnnPolicy`` with separate actor and critic feature extractors by default."""

    def __init__(self, *args: Any, share_features_extractor: bool = False, **kwargs: Any):
        super().__init__(*args, share_features_extractor=share_features_extractor, **kwargs)


class MultiInputPolicy(MultiInputActorCriticPolicy):
    """SB3's ``MultiInputActorCriticPolicy`` with separate actor and critic feature extractors by default."""

    def __init__(self, *args: Any, share_features_extractor: bool = False, **kwargs: Any):
        super().__init__(*args, share_features_extractor=share_features_extractor, **kwargs)


def _module_parameters(*parts: nn.Module | nn.Parameter | None) -> list[nn.Parameter]:
    params: list[nn.Parameter] = []
    for part in parts:
        if isinstance(part, nn.Parameter):
            params.append(part)
        elif isinstance(part, nn.Module):
            params.extend(part.parameters())
    return params


def split_actor_critic(policy: ActorCriticPolicy) -> tuple[dict[str, nn.Parameter], list[nn.Parameter]]:
    """Split the policy's parameters into the actor's (named) and the critic's.

    The split follows the policy's structure: the actor is ``pi_features_extractor``,
    ``mlp_extractor.policy_net``, ``action_net`` and ``log_std``; the critic is ``vf_features_extractor``
    (unless shared with the actor), ``mlp_extractor.value_net`` and ``value_net``. A features extractor
    shared by both belongs to the actor: it moves only with the trust-region step.

    :return: the actor's parameters keyed by their names in ``policy.named_parameters()``, and the
        critic's parameters
    :raises ValueError: if the policy does not have that structure, or has parameters in neither part
    """
    mlp_extractor = getattr(policy, "mlp_extractor", None)
    if not all(hasattr(mlp_extractor, name) for name in ("policy_net", "value_net")):
        raise ValueError(
            f"TRPO needs a policy whose mlp_extractor has `policy_net` and `value_net` (like SB3's MlpExtractor), "
            f"got {type(mlp_extractor).__name__} in {type(policy).__name__}"
        )
    actor = _module_parameters(
        policy.pi_features_extractor, mlp_extractor.policy_net, policy.action_net, getattr(policy, "log_std", None)
    )
    shared = policy.vf_features_extractor is policy.pi_features_extractor
    critic = _module_parameters(
        None if shared else policy.vf_features_extractor, mlp_extractor.value_net, policy.value_net
    )
    actor_ids = {id(p) for p in actor}
    critic_ids = {id(p) for p in critic}
    names = {id(p): name for name, p in policy.named_parameters()}
    unassigned = [name for pid, name in names.items() if pid not in actor_ids | critic_ids]
    if unassigned or actor_ids & critic_ids:
        raise ValueError(
            f"Cannot split the parameters of {type(policy).__name__} into actor and critic: "
            f"unassigned {unassigned}, in both {[names[i] for i in actor_ids & critic_ids]}"
        )
    return {names[id(p)]: p for p in actor}, critic


class _DistributionHead(nn.Module):
    """``obs -> parameters of the action distribution``: the function whose Jacobian the Fisher uses."""

    def __init__(self, policy: ActorCriticPolicy, family: ActionFamily):
        super().__init__()
        self.policy = policy
        self.family = family

    def forward(self, obs: PyTorchObs) -> DistParams:
        return self.family.params(self.policy.get_distribution(obs))


def params_to_dist_fn(policy: ActorCriticPolicy, actor_names: list[str], obs: PyTorchObs, family: ActionFamily):
    """Return ``f(actor_tensors) -> distribution parameters at obs``, evaluating ``policy`` with the given
    tensors in place of its actor parameters (``torch.func.functional_call``)."""
    head = _DistributionHead(policy, family)
    prefixed = [f"policy.{name}" for name in actor_names]

    def params_to_dist(actor_tensors: tuple[th.Tensor, ...]) -> DistParams:
        return th.func.functional_call(head, dict(zip(prefixed, actor_tensors, strict=True)), (obs,))

    return params_to_dist
