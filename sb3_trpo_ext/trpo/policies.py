"""Policies for TRPO and the split of their parameters into actor and critic.

The aliases are SB3's actor-critic policies with one changed default:
``share_features_extractor=False``. With separate feature extractors the critic's regression can
never move the actor, whose every change must pass the trust-region check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch as th
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    MultiCategoricalDistribution,
)
from stable_baselines3.common.policies import (
    ActorCriticCnnPolicy,
    ActorCriticPolicy,
    MultiInputActorCriticPolicy,
)
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import CombinedExtractor, FlattenExtractor, MlpExtractor
from stable_baselines3.common.utils import get_device
from torch import nn

from sb3_trpo_ext.safe_load import load_policy_file


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


#: The ActorCriticPolicy methods that decide actions, values and log-probabilities. A subclass that overrides
#: any of them computes something else, which only its own methods reproduce.
_POLICY_METHODS = (
    "forward",
    "_predict",
    "get_distribution",
    "evaluate_actions",
    "predict_values",
    "extract_features",
    "_get_action_dist_from_latent",
)


def uses_sb3_methods(policy: ActorCriticPolicy) -> bool:
    """Whether ``policy`` computes actions, values and log-probabilities with SB3's own ``ActorCriticPolicy``
    methods and ``MlpExtractor`` (only then may a lean function chain stand in for them)."""
    policy_class = type(policy)
    return type(policy.mlp_extractor) is MlpExtractor and all(
        getattr(policy_class, name) is getattr(ActorCriticPolicy, name) for name in _POLICY_METHODS
    )


_FUNCTIONAL_LAYERS: dict[type[nn.Module], Callable[[nn.Module, th.Tensor], th.Tensor]] = {
    nn.Linear: lambda layer, x: F.linear(x, layer.weight, layer.bias),
    nn.Tanh: lambda _, x: th.tanh(x),
    nn.ReLU: lambda _, x: F.relu(x),
}


def flat_dict_keys(policy: ActorCriticPolicy, features_extractor: nn.Module) -> list[str] | None:
    """For a ``Dict`` observation read by SB3's ``CombinedExtractor`` as a concatenation of flattened non-image
    ``Box`` entries (preprocessing is a float cast): the keys in the order it concatenates them; else None."""
    space = policy.observation_space
    if not isinstance(space, spaces.Dict) or type(features_extractor) is not CombinedExtractor:
        return None
    extractors = features_extractor.extractors
    keys = list(space.spaces)
    if list(extractors) != keys:
        return None
    plain = all(
        isinstance(sub, spaces.Box) and not is_image_space(sub) and type(extractors[key]) is nn.Flatten
        for key, sub in space.spaces.items()
    )
    return keys if plain else None


def plain_mlp_layers(
    policy: ActorCriticPolicy,
    features_extractor: nn.Module,
    net: nn.Module | None,
    head: nn.Module,
    dict_observations: bool = False,
) -> list[nn.Module] | None:
    """The layers of ``obs -> head(net(features_extractor(preprocess(obs))))``, or None where a plain chain of
    them would not compute exactly what the policy does.

    Supported: a policy that uses SB3's own methods (:func:`uses_sb3_methods`), a flat ``Box`` observation
    (preprocessing is a float cast), SB3's ``FlattenExtractor``, and ``net`` an ``nn.Sequential`` of
    Linear/Tanh/ReLU layers followed by a Linear ``head``. With ``dict_observations``, also a ``Dict`` of flat
    ``Box`` entries concatenated by SB3's ``CombinedExtractor`` (:func:`flat_dict_keys`): the caller then
    concatenates the entries itself (the numpy actor does; the torch chains take flat tensors only).
    """
    layers = [*net, head] if isinstance(net, nn.Sequential) else []
    flat_box = (
        isinstance(policy.observation_space, spaces.Box)
        and not is_image_space(policy.observation_space)
        and type(features_extractor) is FlattenExtractor
    )
    supported = (
        uses_sb3_methods(policy)
        and (flat_box or (dict_observations and flat_dict_keys(policy, features_extractor) is not None))
        and len(layers) > 0
        and all(type(layer) in _FUNCTIONAL_LAYERS for layer in layers)
    )
    return layers if supported else None


def linear_chain(layers: list[nn.Module] | None) -> tuple[list[nn.Linear], list[bool]] | None:
    """``Linear, activation, Linear, ..., Linear`` (from :func:`plain_mlp_layers`) as its Linear layers and, for
    each activation, True for tanh and False for ReLU; None for any other arrangement or a Linear without bias."""
    if layers is None:
        return None
    linears, activations = layers[::2], layers[1::2]
    if not all(type(layer) is nn.Linear and layer.bias is not None for layer in linears):
        return None
    if len(activations) != len(linears) - 1 or not all(type(a) in (nn.Tanh, nn.ReLU) for a in activations):
        return None
    return linears, [type(a) is nn.Tanh for a in activations]  # type: ignore[return-value]


#: SB3 distribution class -> family, for the actor's fast paths (numpy collection, Fisher products written out):
#: the exact classes, whose parameters are the head's raw outputs (and ``log_std``); gSDE takes the torch paths.
PLAIN_DISTRIBUTIONS = {
    DiagGaussianDistribution: "gaussian",
    CategoricalDistribution: "categorical",
    MultiCategoricalDistribution: "multicategorical",
    BernoulliDistribution: "bernoulli",
}


def plain_mlp_actor(
    policy: ActorCriticPolicy, dict_observations: bool = False
) -> tuple[list[nn.Linear], list[bool], str] | None:
    """The actor as a :func:`linear_chain` and its distribution family (:data:`PLAIN_DISTRIBUTIONS`), or None
    where the actor's fast paths do not apply (see :func:`plain_mlp_layers`, also for ``dict_observations``)."""
    family = PLAIN_DISTRIBUTIONS.get(type(policy.action_dist))
    chain = linear_chain(
        plain_mlp_layers(
            policy,
            policy.pi_features_extractor,
            getattr(policy.mlp_extractor, "policy_net", None),
            policy.action_net,
            dict_observations=dict_observations,
        )
    )
    return None if family is None or chain is None else (*chain, family)


def plain_mlp_critic(policy: ActorCriticPolicy) -> tuple[list[nn.Linear], list[bool]] | None:
    """The critic as a :func:`linear_chain`, or None (see :func:`plain_mlp_layers`)."""
    return linear_chain(
        plain_mlp_layers(
            policy, policy.vf_features_extractor, getattr(policy.mlp_extractor, "value_net", None), policy.value_net
        )
    )


def _lean_mlp(
    policy: ActorCriticPolicy, features_extractor: nn.Module, net: nn.Module | None, head: nn.Module
) -> Callable[[th.Tensor], th.Tensor] | None:
    """``obs -> head(net(features_extractor(preprocess(obs))))`` as a plain function chain of torch operations
    where :func:`plain_mlp_layers` supports it, else None. The chain runs the same operations as the modules, so
    the same values, without module dispatch (forward hooks on these modules are not called)."""
    layers = plain_mlp_layers(policy, features_extractor, net, head)
    if layers is None:
        return None
    steps = [(_FUNCTIONAL_LAYERS[type(layer)], layer) for layer in layers]

    def forward(obs: th.Tensor) -> th.Tensor:
        x = obs.float().flatten(1)
        for apply, layer in steps:
            x = apply(layer, x)
        return x

    return forward


def lean_value_function(policy: ActorCriticPolicy) -> Callable[[th.Tensor], th.Tensor]:
    """``obs -> V(obs)`` (flat), as ``policy.predict_values(obs).flatten()``; a plain function chain where
    :func:`_lean_mlp` supports the critic (the critic's regression calls it 160 times per update by default)."""
    critic = _lean_mlp(
        policy, policy.vf_features_extractor, getattr(policy.mlp_extractor, "value_net", None), policy.value_net
    )
    if critic is None:
        return lambda obs: policy.predict_values(obs).flatten()
    return lambda obs: critic(obs).flatten()
