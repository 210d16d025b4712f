"""The hand-derived MLP: one home for every fast path that evaluates an SB3 policy's actor or critic by hand.

An SB3 ``ActorCriticPolicy`` that uses SB3's own methods computes its actor (and its critic) as
``head(net(features_extractor(preprocess(obs))))``; on flat ``Box`` observations with SB3's ``FlattenExtractor``
and an ``MlpExtractor`` of Linear/Tanh/ReLU layers, that is a chain ``Linear, activation, ..., Linear``. Here:

* :class:`MlpSpec`: that chain, read from the policy (the one place that decides whether a fast path applies);
* numpy forward (:func:`numpy_forward`): collection's and ``predict``'s actor;
* torch (:class:`TorchMlp`): the forward pass keeping each layer's input, its Jacobian-vector product (``J v``,
  tangents pushed forward) and its vector-Jacobian product (``J^T u``, the chain rule backwards), shared by the
  critic's regression (:mod:`sb3_trpo_ext.fast.critic`) and the Fisher product
  (:func:`sb3_trpo_ext.fast.fisher.mlp_fisher_product`); and :meth:`MlpSpec.torch_function`, the same chain
  as plain autograd-capable torch calls.

Exactness against SB3's own modules is tested in ``tests/unit/test_policies.py``, ``tests/unit/test_numpy_actor.py``,
``tests/unit/test_critic.py`` and ``tests/unit/test_fisher.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch as th
import torch.nn.functional as F
from gymnasium import spaces
from sb3_contrib.common.maskable.distributions import (
    MaskableBernoulliDistribution,
    MaskableCategoricalDistribution,
    MaskableMultiCategoricalDistribution,
)
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    MultiCategoricalDistribution,
)
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import CombinedExtractor, FlattenExtractor, MlpExtractor
from torch import nn

#: SB3 distribution class -> family, for the actor's fast paths (numpy collection, Fisher products written out):
#: the exact classes, whose parameters are the head's raw outputs (and ``log_std``); gSDE takes the torch paths.
#: sb3-contrib's masked distributions are categorical over the head's logits (a masked Bernoulli is a
#: multi-categorical of two choices per dimension): the fast paths apply the masks (:func:`masked_logits`).
PLAIN_DISTRIBUTIONS: dict[type, str] = {
    DiagGaussianDistribution: "gaussian",
    CategoricalDistribution: "categorical",
    MultiCategoricalDistribution: "multicategorical",
    BernoulliDistribution: "bernoulli",
    MaskableCategoricalDistribution: "categorical",
    MaskableMultiCategoricalDistribution: "multicategorical",
    MaskableBernoulliDistribution: "multicategorical",
}

#: The logit sb3-contrib's masked distributions give an invalid action (``MaskableCategorical.apply_masking``).
MASKED_LOGIT = -1e8

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

# aten's fused activation derivatives (from the activation's output): one operation instead of three
_tanh_backward = th.ops.aten.tanh_backward
_relu_backward = th.ops.aten.threshold_backward


def uses_sb3_methods(policy: ActorCriticPolicy | MaskableActorCriticPolicy) -> bool:
    """Whether ``policy`` computes actions, values and log-probabilities with SB3's own ``ActorCriticPolicy``
    methods (sb3-contrib's ``MaskableActorCriticPolicy``'s for a masked policy) and ``MlpExtractor``: only then may a
    hand-derived chain stand in for them."""
    base = MaskableActorCriticPolicy if isinstance(policy, MaskableActorCriticPolicy) else ActorCriticPolicy
    if not isinstance(policy, base):
        return False
    policy_class = type(policy)
    return type(policy.mlp_extractor) is MlpExtractor and all(
        getattr(policy_class, name) is getattr(base, name) for name in _POLICY_METHODS
    )


def masked_logits(logits: np.ndarray, action_masks: np.ndarray | None) -> np.ndarray:
    """``logits`` with every invalid action's logit replaced by :data:`MASKED_LOGIT`, as sb3-contrib's masked
    distributions do (``action_masks``: True where valid, one row per state, or None: no masking)."""
    if action_masks is None:
        return logits
    return np.where(np.asarray(action_masks, dtype=bool).reshape(logits.shape), logits, np.float32(MASKED_LOGIT))


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


@dataclass(frozen=True)
class MlpSpec:
    """``obs -> Linear, activation, ..., Linear`` (the head last): what the hand-derived passes evaluate.

    :param linears: the Linear layers (each with a bias), the head last
    :param tanh: for each activation between them, True for tanh, False for ReLU
    :param keys: for a ``Dict`` observation, its entries in the order SB3's ``CombinedExtractor`` concatenates
        them (flattened; numpy forward only), else None
    :param family: the actor's distribution family (:data:`PLAIN_DISTRIBUTIONS`), None for a critic
    """

    linears: list[nn.Linear]
    tanh: list[bool]
    keys: list[str] | None = None
    family: str | None = None
    #: for a ``Discrete`` or ``MultiDiscrete`` observation, the number of categories of each entry (SB3 one-hot
    #: encodes them), else None
    one_hot: tuple[int, ...] | None = None

    @classmethod
    def read(
        cls,
        policy: ActorCriticPolicy,
        features_extractor: nn.Module,
        net: nn.Module | None,
        head: nn.Module,
        dict_observations: bool = False,
    ) -> MlpSpec | None:
        """The chain computing ``obs -> head(net(features_extractor(preprocess(obs))))``, or None where it would
        not compute exactly what the policy does.

        Supported: a policy that uses SB3's own methods (:func:`uses_sb3_methods`), a flat ``Box`` or ``MultiBinary``
        observation (preprocessing is a float cast) or a ``Discrete`` / ``MultiDiscrete`` one (one-hot encoded), SB3's
        ``FlattenExtractor``, and ``net`` an ``nn.Sequential`` of
        alternating Linear and Tanh/ReLU layers followed by a Linear ``head``. With ``dict_observations``, also a
        ``Dict`` of flat ``Box`` entries concatenated by SB3's ``CombinedExtractor`` (:func:`flat_dict_keys`): the
        numpy forward concatenates them itself (the torch passes take flat tensors only).
        """
        if not uses_sb3_methods(policy) or not isinstance(net, nn.Sequential):
            return None
        keys = None
        space = policy.observation_space
        one_hot = _one_hot_sizes(space)
        # SB3 preprocesses a non-image Box and a MultiBinary by a float cast, Discrete entries by one-hot encoding
        flat = isinstance(space, spaces.MultiBinary) or (isinstance(space, spaces.Box) and not is_image_space(space))
        flat = flat or one_hot is not None
        if not (flat and type(features_extractor) is FlattenExtractor):
            keys = flat_dict_keys(policy, features_extractor) if dict_observations else None
            if keys is None:
                return None
        layers = [*net, head]
        linears, activations = layers[::2], layers[1::2]
        if not all(type(layer) is nn.Linear and layer.bias is not None for layer in linears):
            return None
        if len(activations) != len(linears) - 1 or not all(type(a) in (nn.Tanh, nn.ReLU) for a in activations):
            return None
        return cls(linears, [type(a) is nn.Tanh for a in activations], keys, one_hot=one_hot)

    @classmethod
    def actor(cls, policy: ActorCriticPolicy, dict_observations: bool = False) -> MlpSpec | None:
        """The actor's chain and distribution family, or None where its fast paths do not apply (:meth:`read`;
        a distribution other than :data:`PLAIN_DISTRIBUTIONS`, e.g. gSDE)."""
        family = PLAIN_DISTRIBUTIONS.get(type(policy.action_dist))
        spec = cls.read(
            policy,
            policy.pi_features_extractor,
            getattr(policy.mlp_extractor, "policy_net", None),
            policy.action_net,
            dict_observations=dict_observations,
        )
        return None if family is None or spec is None else cls(spec.linears, spec.tanh, spec.keys, family, spec.one_hot)

    @classmethod
    def critic(cls, policy: ActorCriticPolicy) -> MlpSpec | None:
        """The critic's chain (one output), or None (see :meth:`read`)."""
        net = getattr(policy.mlp_extractor, "value_net", None)
        return cls.read(policy, policy.vf_features_extractor, net, policy.value_net)

    def torch_function(self) -> Callable[[th.Tensor], th.Tensor]:
        """The chain as plain torch calls (autograd works through it): the same operations as the modules, so the
        same values bit for bit, without module dispatch (forward hooks on these modules are not called)."""
        steps = [
            (linear, None if index == len(self.tanh) else self.tanh[index]) for index, linear in enumerate(self.linears)
        ]

        def forward(obs: th.Tensor) -> th.Tensor:
            x = self.torch_input(obs)
            for linear, is_tanh in steps:
                x = F.linear(x, linear.weight, linear.bias)
                if is_tanh is not None:
                    x = th.tanh(x) if is_tanh else F.relu(x)
            return x

        return forward

    def torch_input(self, obs: th.Tensor) -> th.Tensor:
        """The chain's input for a batch of (flat) observations as SB3 preprocesses them: a float cast, or the
        one-hot encoding of ``Discrete`` / ``MultiDiscrete`` entries; one row per sample."""
        if self.one_hot is None:
            return obs.float().flatten(1)
        if len(self.one_hot) == 1:
            return F.one_hot(obs.long().reshape(-1), self.one_hot[0]).float()
        columns = obs.long().reshape(len(obs), len(self.one_hot)).unbind(dim=1)
        return th.cat([F.one_hot(column, n).float() for column, n in zip(columns, self.one_hot)], dim=1)

    def numpy_input(self, obs: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        """The chain's input in numpy (:func:`numpy_input`)."""
        return numpy_input(obs, self.keys, self.one_hot)

    def numpy_weights(self, share_memory: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(W^T, b)`` of every Linear as float32 arrays (``x @ W^T + b``): copies, or with ``share_memory``
        views of the parameters (CPU float32 parameters only), through which in-place updates show."""
        if share_memory:
            return [(layer.weight.detach().numpy().T, layer.bias.detach().numpy()) for layer in self.linears]
        return [(to_numpy(layer.weight).T.copy(), to_numpy(layer.bias)) for layer in self.linears]


def to_numpy(tensor: th.Tensor) -> np.ndarray:
    """A float32 numpy copy of ``tensor``."""
    return tensor.detach().cpu().numpy().astype(np.float32, copy=True)


# ------------------------------------------------------------------------------------------------ numpy
def _one_hot_sizes(space: spaces.Space) -> tuple[int, ...] | None:
    """The categories of each entry of a ``Discrete`` / one-dimensional ``MultiDiscrete`` space (SB3 one-hot encodes
    them before its ``FlattenExtractor``), else None."""
    if isinstance(space, spaces.Discrete) and int(space.start) == 0:
        return (int(space.n),)
    if isinstance(space, spaces.MultiDiscrete) and space.nvec.ndim == 1:
        return tuple(int(n) for n in space.nvec)
    return None


def numpy_input(
    obs: np.ndarray | dict[str, np.ndarray], keys: list[str] | None, one_hot: tuple[int, ...] | None = None
) -> np.ndarray:
    """The chain's input for a batch of observations: flattened float32 rows; a ``Dict``'s entries (``keys``)
    flattened and concatenated in the order SB3's ``CombinedExtractor`` does; ``Discrete`` / ``MultiDiscrete``
    entries (``one_hot``: their categories) one-hot encoded, as SB3's ``preprocess_obs`` does."""
    if one_hot is not None:
        indices = np.asarray(obs, dtype=np.int64).reshape(-1, len(one_hot))
        return np.concatenate([np.eye(n, dtype=np.float32)[indices[:, i]] for i, n in enumerate(one_hot)], axis=1)
    if keys is not None:
        assert isinstance(obs, dict)
        n = len(obs[keys[0]])
        return np.concatenate([np.asarray(obs[key], dtype=np.float32).reshape(n, -1) for key in keys], axis=1)
    return np.asarray(obs, dtype=np.float32).reshape(len(obs), -1)


def numpy_forward(
    weights: Sequence[tuple[np.ndarray, np.ndarray]], activations: Sequence[str], x: np.ndarray
) -> np.ndarray:
    """``head(act(... act(x @ W^T + b)))`` in numpy.

    :param weights: ``(W^T, b)`` of every Linear (:meth:`MlpSpec.numpy_weights`), the head last
    :param activations: ``"tanh"`` or ``"relu"`` after each Linear but the head
    """
    for (weight, bias), activation in zip(weights, [*activations, None]):
        x = x @ weight + bias
        if activation == "tanh":
            x = np.tanh(x)
        elif activation == "relu":
            x = np.maximum(x, 0)
    return x


# ------------------------------------------------------------------------------------------------ torch
def tanh_(x: th.Tensor) -> th.Tensor:
    """``tanh(x)``, written over ``x`` where autograd does not need it: ``x`` must be a fresh intermediate.

    On CPU, NumPy's vectorised tanh is several times faster than torch's on a minibatch-sized tensor (measured in
    docs/benchmark.md, "Speed layer measurements"; ``benchmarks/speed.py`` prints it), and tanh was the largest
    single cost of the critic's minibatch step. A CPU tensor outside autograd is therefore overwritten through its
    NumPy view; anything else (another device, a tensor in an autograd graph) takes ``torch.tanh``.
    """
    if x.device.type == "cpu" and not x.requires_grad and x.dtype in (th.float32, th.float64) and x.is_contiguous():
        array = x.numpy()
        np.tanh(array, out=array)
        return x
    return th.tanh(x)


class TorchMlp:
    """A chain ``Linear, activation, ..., Linear`` for the hand-written passes (critic regression, Fisher
    product): detached views of the weights, biases and transposed weights, taken once and shared with the
    parameters, so in-place optimizer steps show through. No autograd graph is built on them.

    :param linears: the Linear layers, the head last
    :param tanh: for each activation between them, True for tanh, False for ReLU
    """

    def __init__(self, linears: Sequence[nn.Linear], tanh: Sequence[bool]):
        self.weights = [layer.weight.detach() for layer in linears]
        self.weights_t = [weight.t() for weight in self.weights]
        self.biases = [layer.bias.detach() for layer in linears]
        self.tanh = list(tanh)

    def forward(self, obs: th.Tensor) -> tuple[list[th.Tensor], th.Tensor]:
        """``head(act(... act(Linear(obs))))``, keeping what the products need.

        :param obs: the inputs, flattened to one row per sample
        :return: each Linear's input (the activations' outputs after the first), and the head's output
        """
        inputs = []
        x = obs.detach().float().flatten(1)
        for index, (bias, weight_t) in enumerate(zip(self.biases, self.weights_t, strict=True)):
            inputs.append(x)
            x = th.addmm(bias, x, weight_t)
            if index < len(self.tanh):
                x = tanh_(x) if self.tanh[index] else th.relu(x)
        return inputs, x

    def slopes(self, inputs: Sequence[th.Tensor]) -> list[th.Tensor]:
        """Each activation's derivative at the forward pass's point (its output is the next Linear's input):
        computed once where many products are taken at the same point (the Fisher's conjugate gradient)."""
        dtype = inputs[-1].dtype
        return [
            1 - inputs[i + 1] ** 2 if is_tanh else (inputs[i + 1] > 0).to(dtype) for i, is_tanh in enumerate(self.tanh)
        ]

    def jvp(
        self,
        inputs: Sequence[th.Tensor],
        slopes: Sequence[th.Tensor],
        d_weights: Sequence[th.Tensor],
        d_biases: Sequence[th.Tensor],
    ) -> th.Tensor:
        """``J v``: the head's tangent for a tangent ``(d_weights, d_biases)`` of the parameters, pushed forward
        layer by layer at the point of ``inputs`` (the observations have no tangent)."""
        incoming = None  # the tangent of the layer's input
        for index, weight_t in enumerate(self.weights_t):
            tangent = th.addmm(d_biases[index], inputs[index], d_weights[index].t())
            if incoming is not None:
                tangent = th.addmm(tangent, incoming, weight_t)
            if index < len(self.tanh):
                incoming = tangent * slopes[index]
        return tangent

    def vjp(
        self,
        inputs: Sequence[th.Tensor],
        delta: th.Tensor,
        slopes: Sequence[th.Tensor] | None = None,
        weight_grads: Sequence[th.Tensor] | None = None,
        bias_grads: Sequence[th.Tensor] | None = None,
    ) -> tuple[list[th.Tensor], list[th.Tensor]]:
        """``J^T u``: the parameters' cotangents for the head's cotangent ``delta`` (the chain rule backwards).

        :param slopes: the activations' derivatives (:meth:`slopes`); None: aten's fused backward from the
            activations' outputs, cheaper for a single product at a point (the critic's minibatch step)
        :param weight_grads: buffers the weights' cotangents are written into (``out=``), else new tensors
        :param bias_grads: the same for the biases
        :return: the cotangents of the weights and of the biases, in layer order
        """
        n_layers = len(inputs)
        d_weights: list[th.Tensor] = [th.empty(0)] * n_layers
        d_biases: list[th.Tensor] = [th.empty(0)] * n_layers
        for index in range(n_layers - 1, -1, -1):
            if weight_grads is not None and bias_grads is not None:
                d_weights[index] = th.mm(delta.t(), inputs[index], out=weight_grads[index])
                d_biases[index] = th.sum(delta, 0, out=bias_grads[index])
            else:
                d_weights[index] = delta.t() @ inputs[index]
                d_biases[index] = delta.sum(dim=0)
            if index > 0:  # through the previous activation, whose output is this layer's input
                upstream = delta @ self.weights[index]
                if slopes is not None:
                    delta = upstream * slopes[index - 1]
                elif self.tanh[index - 1]:
                    delta = _tanh_backward(upstream, inputs[index])
                else:
                    delta = _relu_backward(upstream, inputs[index], 0)
        return d_weights, d_biases
