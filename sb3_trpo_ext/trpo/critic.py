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

from sb3_trpo_ext.common.mlp_forward import PlainMlp
from sb3_trpo_ext.trpo.policies import plain_mlp_critic

# aten's fused derivatives: one operation instead of three
_tanh_backward = th.ops.aten.tanh_backward
_relu_backward = th.ops.aten.threshold_backward


class PlainMlpCritic:
    """MSE regression gradients of ``V(obs) = head(act(... act(Linear(obs))))`` by hand.

    Built once per update: it takes detached views of the weights (see :class:`PlainMlp`) and gives every
    parameter a ``.grad`` buffer that each minibatch overwrites in place (``out=``), so a minibatch step allocates
    no gradient tensors and sets no attributes; measured 157 -> ~125 us per 128-sample minibatch of the default
    64-64 critic (CartPole-v1, one thread).

    :param linears: the Linear layers, the head (one output) last
    :param tanh: for each activation between them, True for tanh, False for ReLU
    """

    def __init__(self, linears: list[nn.Linear], tanh: list[bool]):
        self.mlp = PlainMlp(linears, tanh)
        self.weight_grads = [_grad_buffer(layer.weight) for layer in linears]
        self.bias_grads = [_grad_buffer(layer.bias) for layer in linears]

    @classmethod
    def from_policy(cls, policy: ActorCriticPolicy) -> PlainMlpCritic | None:
        """The hand-derived regression for ``policy``'s critic, or None where it does not apply (see
        :func:`sb3_trpo_ext.trpo.policies.plain_mlp_layers`: SB3's own methods, flat ``Box`` observations, Linear/Tanh/ReLU layers)."""
        chain = plain_mlp_critic(policy)
        return None if chain is None else cls(*chain)

    def set_gradients(self, obs: th.Tensor, returns: th.Tensor) -> th.Tensor:
        """Write ``d loss / d theta`` into every layer's ``.grad`` for ``loss = mean((V(obs) - returns)^2)``.

        :return: the loss (detached)
        """
        mlp = self.mlp
        inputs, values = mlp.forward(obs)
        error = values.view(-1).sub_(returns)  # the head's output is a fresh tensor: reuse it
        loss = error.square().mean()
        # backward: d loss / d V = 2 (V - R) / B, then the chain rule layer by layer
        delta = error.mul_(2.0 / len(error)).unsqueeze(1)
        for index in range(len(inputs) - 1, -1, -1):
            th.mm(delta.t(), inputs[index], out=self.weight_grads[index])
            th.sum(delta, 0, out=self.bias_grads[index])
            if index > 0:  # through the previous activation, whose output is this layer's input
                upstream = delta @ mlp.weights[index]
                out = inputs[index]
                delta = _tanh_backward(upstream, out) if mlp.tanh[index - 1] else _relu_backward(upstream, out, 0)
        return loss


def optimizer_step(optimizer: th.optim.Optimizer) -> None:
    """``optimizer.step()``: the critic's step goes through torch.optim's public call, with its hooks and profiler
    label. (An earlier shortcut called the unwrapped step when torch's private hook registries were empty; it
    saved ~30 us a step but read torch internals that a new hook kind would silently bypass. Its cost on
    ``benchmarks/speed.py``'s configurations is in docs/benchmark.md.) Kept as one function so that every
    critic regression (TRPO, RecurrentTRPO) takes its step the same way."""
    optimizer.step()


def _grad_buffer(param: th.Tensor) -> th.Tensor:
    """``param.grad``, (re)allocated where it is missing or not a plain dense buffer of ``param``'s shape."""
    grad = param.grad
    if grad is None or grad.shape != param.shape or grad.dtype != param.dtype or not grad.is_contiguous():
        grad = param.grad = th.zeros_like(param, memory_format=th.contiguous_format)
    return grad
