"""A numpy copy of an MLP actor for collection.

Collection calls the actor once per environment step, where a small network's cost in torch is call overhead
(tensor creation, module dispatch, SB3's distribution objects), not arithmetic. :class:`NumpyActor` is a
snapshot of the actor's weights taken at the start of a rollout that evaluates the same layers in numpy and
draws actions with a numpy generator: a few microseconds a step. It is picklable (plain arrays), so it can
travel to worker processes. Values and log-probabilities are still computed by the policy, in torch, in one
batch after the rollout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy

from sb3_trpo_ext.trpo.policies import plain_mlp_actor


def _numpy(tensor: th.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().astype(np.float32, copy=True)


@dataclass
class NumpyActor:
    """The actor ``obs -> action distribution parameters`` as numpy arrays, and sampling from it.

    :param weights: ``(W, b)`` of every Linear layer, the action head last (``W`` transposed: ``x @ W + b``)
    :param activations: ``"tanh"`` or ``"relu"`` after each Linear layer but the head
    :param family: ``"gaussian"``, ``"categorical"``, ``"multicategorical"`` or ``"bernoulli"``
    :param std: the Gaussian's standard deviations (``exp(log_std)``), else None
    :param action_dims: the sizes of a multi-categorical's blocks, else None
    """

    weights: list[tuple[np.ndarray, np.ndarray]]
    activations: list[str]
    family: str
    std: np.ndarray | None = None
    action_dims: list[int] | None = None

    @classmethod
    def from_policy(cls, policy: ActorCriticPolicy) -> NumpyActor | None:
        """A snapshot of ``policy``'s actor, or None where numpy would not compute exactly what the policy does
        (see :func:`sb3_trpo_ext.trpo.policies.plain_mlp_layers`; gSDE, squashed and other distributions)."""
        plain = plain_mlp_actor(policy)
        if plain is None:
            return None
        linears, tanh, family = plain
        activations = ["tanh" if is_tanh else "relu" for is_tanh in tanh]
        weights = [(_numpy(layer.weight).T.copy(), _numpy(layer.bias)) for layer in linears]
        std = _numpy(policy.log_std.exp()) if family == "gaussian" else None
        action_dims = list(policy.action_dist.action_dims) if family == "multicategorical" else None
        return cls(weights, activations, family, std, action_dims)

    def distribution_params(self, obs: np.ndarray) -> np.ndarray:
        """The head's output for a batch of observations: the Gaussian's mean, or the logits."""
        x = np.asarray(obs, dtype=np.float32).reshape(len(obs), -1)
        for (weight, bias), activation in zip(self.weights, [*self.activations, None]):
            x = x @ weight + bias
            if activation == "tanh":
                x = np.tanh(x)
            elif activation == "relu":
                x = np.maximum(x, 0)
        return x

    def sample(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Actions for a batch of observations, drawn with ``rng`` (int64 for discrete families, else float32)."""
        params = self.distribution_params(obs)
        if self.family == "gaussian":
            return params + self.std * rng.standard_normal(params.shape, dtype=np.float32)
        if self.family == "bernoulli":
            return (rng.random(params.shape, dtype=np.float32) < 1 / (1 + np.exp(-params))).astype(np.float32)
        if self.family == "categorical":
            return _sample_categorical(params, rng)
        blocks = np.split(params, np.cumsum(self.action_dims)[:-1], axis=1)
        return np.stack([_sample_categorical(block, rng) for block in blocks], axis=1)


def _sample_categorical(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw per row from ``softmax(logits)`` by inverting the cumulative distribution."""
    probs = np.exp(logits - logits.max(axis=1, keepdims=True), dtype=np.float64)
    cumulative = np.cumsum(probs, axis=1)
    uniforms = rng.random((len(logits), 1)) * cumulative[:, -1:]
    return np.minimum((cumulative <= uniforms).sum(axis=1), logits.shape[1] - 1).astype(np.int64)
