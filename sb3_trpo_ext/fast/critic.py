"""The critic's regression gradients written out for plain MLP critics (the speed layer's part of
:func:`sb3_trpo_ext.trpo.critic.fit_critic`).

The critic's regression takes ``n_critic_updates * n_steps * n_envs / batch_size`` minibatch steps per update on a
network of a few thousand weights, where autograd's graph building and module dispatch cost more than the
arithmetic. :class:`PlainMlpCritic` computes the mean squared error and its gradient for a chain ``Linear,
activation, ..., Linear`` by hand (the chain rule written out, no graph) and stores the gradient in each parameter's
``.grad``, leaving the step to the configured optimizer: the regression's semantics (minibatches, optimizer,
learning-rate schedule) are unchanged. Its measured cost is in docs/benchmark.md ("Speed layer measurements").
"""

from __future__ import annotations

from collections.abc import Callable

import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from sb3_trpo_ext.fast.mlp import MlpSpec, TorchMlp

__all__ = ["PlainMlpCritic", "predicted_values", "value_function"]


class PlainMlpCritic:
    """MSE regression gradients of ``V(obs) = head(act(... act(Linear(obs))))`` by hand.

    Built once per update: it takes detached views of the weights (see :class:`TorchMlp`) and gives every
    parameter a ``.grad`` buffer that each minibatch overwrites in place (``out=``), so a minibatch step allocates
    no gradient tensors and sets no attributes.

    :param linears: the Linear layers, the head (one output) last
    :param tanh: for each activation between them, True for tanh, False for ReLU
    """

    def __init__(self, linears: list[nn.Linear], tanh: list[bool], spec: MlpSpec | None = None):
        self.mlp = TorchMlp(linears, tanh)
        self.spec = spec  # its torch_input preprocesses the observations (one-hot encodings), where given
        self.weight_grads = [_grad_buffer(layer.weight) for layer in linears]
        self.bias_grads = [_grad_buffer(layer.bias) for layer in linears]

    @classmethod
    def from_policy(cls, policy: ActorCriticPolicy) -> PlainMlpCritic | None:
        """The hand-derived regression for ``policy``'s critic, or None where it does not apply (see
        :meth:`sb3_trpo_ext.fast.mlp.MlpSpec.read`: SB3's own methods, flat ``Box`` observations, Linear/Tanh/ReLU
        layers)."""
        spec = MlpSpec.critic(policy)
        return None if spec is None else cls(spec.linears, spec.tanh, spec)

    def set_gradients(self, obs: th.Tensor, returns: th.Tensor) -> th.Tensor:
        """Write ``d loss / d theta`` into every layer's ``.grad`` for ``loss = mean((V(obs) - returns)^2)``.

        :return: the loss (detached)
        """
        mlp = self.mlp
        inputs, values = mlp.forward(obs if self.spec is None else self.spec.torch_input(obs))
        error = values.view(-1).sub_(returns)  # the head's output is a fresh tensor: reuse it
        loss = error.square().mean()
        # backward: d loss / d V = 2 (V - R) / B, then the chain rule layer by layer (into the .grad buffers)
        delta = error.mul_(2.0 / len(error)).unsqueeze(1)
        mlp.vjp(inputs, delta, weight_grads=self.weight_grads, bias_grads=self.bias_grads)
        return loss


def value_function(policy: ActorCriticPolicy) -> Callable[[th.Tensor], th.Tensor]:
    """``obs -> V(obs)`` (flat), as ``policy.predict_values(obs).flatten()``; the plain torch chain
    (:meth:`MlpSpec.torch_function`) where the critic is a plain MLP."""
    spec = MlpSpec.critic(policy)
    if spec is None:
        return predicted_values(policy)
    critic = spec.torch_function()
    return lambda obs: critic(obs).flatten()


def _grad_buffer(param: th.Tensor) -> th.Tensor:
    """``param.grad``, (re)allocated where it is missing or not a plain dense buffer of ``param``'s shape."""
    grad = param.grad
    if grad is None or grad.shape != param.shape or grad.dtype != param.dtype or not grad.is_contiguous():
        grad = param.grad = th.zeros_like(param, memory_format=th.contiguous_format)
    return grad


def predicted_values(policy: ActorCriticPolicy) -> Callable[[th.Tensor], th.Tensor]:
    """``obs -> policy.predict_values(obs).flatten()``: SB3's own value function (the plain route)."""
    return lambda obs: policy.predict_values(obs).flatten()
