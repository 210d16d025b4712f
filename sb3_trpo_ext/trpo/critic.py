"""The critic's regression step for plain MLP critics, with a hand-derived backward pass.

The critic's regression takes ``n_critic_updates * n_steps * n_envs / batch_size`` minibatch steps per update
(160 by default) on a network of a few thousand weights, where autograd's graph building and module dispatch
cost more than the arithmetic. :class:`PlainMlpCritic` computes the mean squared error and its gradient for a
chain ``Linear, activation, ..., Linear`` by hand (the chain rule written out, no graph), stores the gradient
in each parameter's ``.grad``, and leaves the step to the configured optimizer, so the regression's semantics
(minibatches, optimizer, learning-rate schedule) are unchanged.
"""

from __future__ import annotations

import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from sb3_trpo_ext.common.mlp_forward import mlp_forward
from sb3_trpo_ext.trpo.policies import plain_mlp_critic

# aten's fused derivatives: one operation instead of three
_tanh_backward = th.ops.aten.tanh_backward
_relu_backward = th.ops.aten.threshold_backward


class PlainMlpCritic:
    """MSE regression gradients of ``V(obs) = head(act(... act(Linear(obs))))`` by hand.

    :param linears: the Linear layers, the head (one output) last
    :param tanh: for each activation between them, True for tanh, False for ReLU
    """

    def __init__(self, linears: list[nn.Linear], tanh: list[bool]):
        self.linears = linears
        self.tanh = tanh

    @classmethod
    def from_policy(cls, policy: ActorCriticPolicy) -> PlainMlpCritic | None:
        """The hand-derived regression for ``policy``'s critic, or None where it does not apply (see
        :func:`sb3_trpo_ext.trpo.policies.plain_mlp_layers`: SB3's own methods, flat ``Box`` observations, Linear/Tanh/ReLU layers)."""
        chain = plain_mlp_critic(policy)
        return None if chain is None else cls(*chain)

    def set_gradients(self, obs: th.Tensor, returns: th.Tensor) -> th.Tensor:
        """Store ``d loss / d theta`` in every layer's ``.grad`` for ``loss = mean((V(obs) - returns)^2)``.

        :return: the loss (detached)
        """
        inputs, values = mlp_forward(self.linears, self.tanh, obs)
        with th.no_grad():
            error = values.squeeze(1) - returns
            loss = error.square().mean()
            # backward: d loss / d V = 2 (V - R) / B, then the chain rule layer by layer
            delta = (error * (2.0 / len(error))).unsqueeze(1)
            for index in range(len(self.linears) - 1, -1, -1):
                layer = self.linears[index]
                layer.weight.grad = delta.t() @ inputs[index]
                layer.bias.grad = delta.sum(0)
                if index > 0:  # through the previous activation, whose output is this layer's input
                    upstream = delta @ layer.weight
                    out = inputs[index]
                    delta = _tanh_backward(upstream, out) if self.tanh[index - 1] else _relu_backward(upstream, out, 0)
        return loss
