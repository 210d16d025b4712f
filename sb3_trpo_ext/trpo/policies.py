"""Policies for the TRPO family and the split of their parameters into actor and critic.

Every policy alias of TRPO, MaskableTRPO and RecurrentTRPO is its upstream class with one changed default
(:class:`SeparateExtractorsByDefault`): separate actor and critic feature extractors. With separate extractors the
critic's regression can never move the actor, whose every change must pass the trust-region check.
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

from sb3_trpo_ext.safe_load import load_policy_file

__all__ = [
    "CnnPolicy",
    "MlpPolicy",
    "MultiInputPolicy",
    "SafeLoadMixin",
    "SeparateExtractorsByDefault",
    "default_share_features_extractor",
    "split_actor_critic",
]


class SafeLoadMixin:
    """``load`` of a file written by ``policy.save`` without running code from it.

    SB3's ``BasePolicy.load`` reads the file with ``torch.load(weights_only=False)``; here the constructor
    arguments are rebuilt by :mod:`sb3_trpo_ext.safe_load`'s restricted unpickler (tensors through torch's
    own reader) and ``trusted=True`` is the way back to SB3's reader.
    """

    @classmethod
    def load(
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
            return super().load(path, device)  # type: ignore[misc]  # a mixin: super() is SB3's BasePolicy
        device = get_device(device)
        saved = load_policy_file(path, device, safe_globals=safe_globals)
        policy = cls(**saved["data"])
        policy.load_state_dict(saved["state_dict"])  # type: ignore[attr-defined]  # a mixin: instances are nn.Modules
        return policy.to(device)  # type: ignore[attr-defined]  # a mixin: instances are nn.Modules


class SeparateExtractorsByDefault:
    """The aliases' one changed default: ``share_features_extractor`` left unset means separate actor and critic
    feature extractors, except for a recurrent policy with ``shared_lstm=True``, which shares the extractor as
    sb3-contrib requires (so ``policy_kwargs`` written for ``RecurrentPPO`` work unchanged)."""

    def __init__(self, *args: Any, share_features_extractor: bool | None = None, **kwargs: Any):
        if share_features_extractor is None:
            share_features_extractor = default_share_features_extractor(type(self), kwargs)
        super().__init__(*args, share_features_extractor=share_features_extractor, **kwargs)  # type: ignore[call-arg]  # a mixin: super() is the policy class, which takes it


def default_share_features_extractor(policy_class: type, policy_kwargs: dict[str, Any]) -> bool:
    """``share_features_extractor`` when ``policy_kwargs`` do not set it: the upstream default (True) for upstream
    classes; ours (:class:`SeparateExtractorsByDefault`) share only with ``shared_lstm=True``."""
    if issubclass(policy_class, SeparateExtractorsByDefault):
        return bool(policy_kwargs.get("shared_lstm", False))
    return True


class MlpPolicy(SafeLoadMixin, SeparateExtractorsByDefault, ActorCriticPolicy):
    """SB3's ``ActorCriticPolicy`` with separate actor and critic feature extractors by default."""


class CnnPolicy(SafeLoadMixin, SeparateExtractorsByDefault, ActorCriticCnnPolicy):
    """SB3's ``ActorCriticCnnPolicy`` with separate actor and critic feature extractors by default."""


class MultiInputPolicy(SafeLoadMixin, SeparateExtractorsByDefault, MultiInputActorCriticPolicy):
    """SB3's ``MultiInputActorCriticPolicy`` with separate actor and critic feature extractors by default."""


def _module_parameters(*parts: nn.Module | nn.Parameter | None) -> list[nn.Parameter]:
    params: list[nn.Parameter] = []
    for part in parts:
        if isinstance(part, nn.Parameter):
            params.append(part)
        elif isinstance(part, nn.Module):
            params.extend(part.parameters())
    return params


def split_actor_critic(policy: ActorCriticPolicy) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split the policy's parameters into the actor's and the critic's, from its structure.

    The actor is ``pi_features_extractor``, ``lstm_actor`` (recurrent policies), ``mlp_extractor.policy_net``,
    ``action_net`` and ``log_std``; the critic is ``vf_features_extractor`` (unless shared with the actor),
    ``lstm_critic`` or the ``critic`` Linear (recurrent policies, whichever exists), ``mlp_extractor.value_net``
    and ``value_net``. A feature extractor or LSTM shared by both belongs to the actor: it moves only with the
    trust-region step (the critic reads it detached and trains its own head).

    :return: the actor's parameters and the critic's parameters
    :raises ValueError: if the policy does not have that structure, or has parameters in neither or both parts
    """
    mlp_extractor: Any = getattr(policy, "mlp_extractor", None)  # checked just below
    if not all(hasattr(mlp_extractor, name) for name in ("policy_net", "value_net")):
        raise ValueError(
            f"TRPO needs a policy whose mlp_extractor has `policy_net` and `value_net` (like SB3's MlpExtractor), "
            f"got {type(mlp_extractor).__name__} in {type(policy).__name__}"
        )
    recurrent = hasattr(policy, "lstm_actor")  # sb3-contrib's RecurrentActorCriticPolicy and its subclasses
    actor = _module_parameters(
        policy.pi_features_extractor,
        getattr(policy, "lstm_actor", None),
        mlp_extractor.policy_net,
        policy.action_net,
        getattr(policy, "log_std", None),
    )
    shared = policy.vf_features_extractor is policy.pi_features_extractor
    critic = _module_parameters(
        None if shared else policy.vf_features_extractor,
        getattr(policy, "lstm_critic", None) if recurrent else None,
        getattr(policy, "critic", None) if recurrent else None,
        mlp_extractor.value_net,
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
