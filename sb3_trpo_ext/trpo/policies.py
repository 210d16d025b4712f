"""Policies for TRPO and the split of their parameters into actor and critic.

The aliases are SB3's actor-critic policies with one changed default:
``share_features_extractor=False``. With separate feature extractors the critic's regression can
never move the actor, whose every change must pass the trust-region check.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch as th
from stable_baselines3.common.policies import (
    ActorCriticCnnPolicy,
    ActorCriticPolicy,
    MultiInputActorCriticPolicy,
)
from stable_baselines3.common.utils import get_device
from torch import nn

# the hand-derived MLP's policy checks lived here before sb3_trpo_ext.common.mlp: importable from here still
from sb3_trpo_ext.common.mlp import PLAIN_DISTRIBUTIONS, flat_dict_keys, uses_sb3_methods
from sb3_trpo_ext.safe_load import load_policy_file

__all__ = [
    "PLAIN_DISTRIBUTIONS",
    "CnnPolicy",
    "MlpPolicy",
    "MultiInputPolicy",
    "SafeLoadMixin",
    "flat_dict_keys",
    "split_actor_critic",
    "uses_sb3_methods",
]


class SafeLoadMixin:
    """``load`` of a file written by ``policy.save`` without running code from it.

    SB3's ``BasePolicy.load`` reads the file with ``torch.load(weights_only=False)``; here the constructor
    arguments are rebuilt by :mod:`sb3_trpo_ext.safe_load`'s restricted unpickler (tensors through torch's
    own reader) and ``trusted=True`` is the way back to SB3's reader.
    """

    @classmethod
    def load(  # type: ignore[override]
        cls,
        path: str,
        device: th.device | str = "auto",
        *,
        trusted: bool = False,
        safe_globals: Iterable[Any] = (),
    ) -> Any:
        """Load a policy saved with ``policy.save(path)``.

        :param path: the file
        :param device: where the policy goes
        :param trusted: SB3's full unpickling (only for files you vouch for: it can run code)
        :param safe_globals: classes or ``(module, name)`` pairs to allow in this load
        :return: the policy
        :raises UnsafeCheckpointError: naming the file and the global refused
        """
        if trusted:
            return super().load(path, device)  # type: ignore[misc]
        device = get_device(device)
        saved = load_policy_file(path, device, safe_globals=safe_globals)
        policy = cls(**saved["data"])
        policy.load_state_dict(saved["state_dict"])  # type: ignore[attr-defined]
        return policy.to(device)  # type: ignore[attr-defined]


class MlpPolicy(SafeLoadMixin, ActorCriticPolicy):
    """SB3's ``ActorCriticPolicy`` with separate actor and critic feature extractors by default."""

    def __init__(self, *args: Any, share_features_extractor: bool = False, **kwargs: Any):
        super().__init__(*args, share_features_extractor=share_features_extractor, **kwargs)


class CnnPolicy(SafeLoadMixin, ActorCriticCnnPolicy):
    """SB3's ``ActorCriticCnnPolicy`` with separate actor and critic feature extractors by default."""

    def __init__(self, *args: Any, share_features_extractor: bool = False, **kwargs: Any):
        super().__init__(*args, share_features_extractor=share_features_extractor, **kwargs)


class MultiInputPolicy(SafeLoadMixin, MultiInputActorCriticPolicy):
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


def split_actor_critic(policy: ActorCriticPolicy) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split the policy's parameters into the actor's and the critic's.

    The split follows the policy's structure: the actor is ``pi_features_extractor``,
    ``mlp_extractor.policy_net``, ``action_net`` and ``log_std``; the critic is ``vf_features_extractor``
    (unless shared with the actor), ``mlp_extractor.value_net`` and ``value_net``. A features extractor
    shared by both belongs to the actor: it moves only with the trust-region step.

    :return: the actor's parameters and the critic's parameters
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
    return actor, critic
