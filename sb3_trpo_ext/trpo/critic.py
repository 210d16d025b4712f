"""The critic's regression: minibatch epochs of the values on the returns, hand-derived for plain MLP critics.

The critic's regression takes ``n_critic_updates * n_steps * n_envs / batch_size`` minibatch steps per update
(160 by default) on a network of a few thousand weights, where autograd's graph building and module dispatch
cost more than the arithmetic. :class:`PlainMlpCritic` computes the mean squared error and its gradient for a
chain ``Linear, activation, ..., Linear`` by hand (the chain rule written out, no graph), stores the gradient
in each parameter's ``.grad``, and leaves the step to the configured optimizer, so the regression's semantics
(minibatches, optimizer, learning-rate schedule) are unchanged. :func:`fit_critic` is the regression
``TRPO.train`` runs, with either gradient.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch as th
import torch.nn.functional as F
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn

from sb3_trpo_ext.common.mlp import MlpSpec, TorchMlp
from sb3_trpo_ext.common.observations import index_obs


class PlainMlpCritic:
    """MSE regression gradients of ``V(obs) = head(act(... act(Linear(obs))))`` by hand.

    Built once per update: it takes detached views of the weights (see :class:`TorchMlp`) and gives every
    parameter a ``.grad`` buffer that each minibatch overwrites in place (``out=``), so a minibatch step allocates
    no gradient tensors and sets no attributes; measured 157 -> ~125 us per 128-sample minibatch of the default
    64-64 critic (CartPole-v1, one thread).

    :param linears: the Linear layers, the head (one output) last
    :param tanh: for each activation between them, True for tanh, False for ReLU
    """

    def __init__(self, linears: list[nn.Linear], tanh: list[bool]):
        self.mlp = TorchMlp(linears, tanh)
        self.weight_grads = [_grad_buffer(layer.weight) for layer in linears]
        self.bias_grads = [_grad_buffer(layer.bias) for layer in linears]

    @classmethod
    def from_policy(cls, policy: ActorCriticPolicy) -> PlainMlpCritic | None:
        """The hand-derived regression for ``policy``'s critic, or None where it does not apply (see
        :meth:`sb3_trpo_ext.common.mlp.MlpSpec.read`: SB3's own methods, flat ``Box`` observations, Linear/Tanh/ReLU
        layers)."""
        spec = MlpSpec.critic(policy)
        return None if spec is None else cls(spec.linears, spec.tanh)

    def set_gradients(self, obs: th.Tensor, returns: th.Tensor) -> th.Tensor:
        """Write ``d loss / d theta`` into every layer's ``.grad`` for ``loss = mean((V(obs) - returns)^2)``.

        :return: the loss (detached)
        """
        mlp = self.mlp
        inputs, values = mlp.forward(obs)
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
        return lambda obs: policy.predict_values(obs).flatten()
    critic = spec.torch_function()
    return lambda obs: critic(obs).flatten()


def fit_critic(
    policy: ActorCriticPolicy,
    critic_params: Sequence[nn.Parameter],
    observations: PyTorchObs,
    returns: th.Tensor,
    n_epochs: int,
    batch_size: int,
) -> float:
    """``n_epochs`` epochs of minibatch regression of the values on ``returns`` with ``policy.optimizer`` (over
    ``critic_params``), the minibatches drawn with numpy's global generator, as SB3's algorithms draw them, through
    :func:`guarded_regression`.

    :return: the mean minibatch loss
    """
    n_samples = returns.shape[0]
    hand_derived = PlainMlpCritic.from_policy(policy)
    value_of = value_function(policy)

    def gradient_steps() -> Iterator[th.Tensor]:
        for _ in range(n_epochs):
            permutation = th.from_numpy(np.random.permutation(n_samples)).to(returns.device)
            # one gather per epoch; the minibatches are then contiguous slices of it
            epoch_obs, epoch_returns = index_obs(observations, permutation), returns[permutation]
            for start in range(0, n_samples, batch_size):
                minibatch = slice(start, start + batch_size)
                if hand_derived is not None:
                    yield hand_derived.set_gradients(epoch_obs[minibatch], epoch_returns[minibatch])  # type: ignore[index]
                else:
                    loss = F.mse_loss(value_of(index_obs(epoch_obs, minibatch)), epoch_returns[minibatch])  # type: ignore[arg-type]
                    yield set_gradients(loss, critic_params)

    return guarded_regression(policy.optimizer, critic_params, gradient_steps(), "TRPO")


def set_gradients(loss: th.Tensor, params: Sequence[nn.Parameter]) -> th.Tensor:
    """Write ``d loss / d params`` into each parameter's ``.grad`` (first derivatives, no graph kept).

    :return: ``loss``
    """
    grads = th.autograd.grad(loss, params)
    for param, grad in zip(params, grads, strict=True):
        param.grad = grad
    return loss


def guarded_regression(
    optimizer: th.optim.Optimizer,
    critic_params: Sequence[nn.Parameter],
    gradient_steps: Iterator[th.Tensor],
    algorithm: str,
) -> float:
    """The critic's regression loop of every algorithm here: one ``optimizer`` step per item of
    ``gradient_steps`` (each item is a minibatch's loss, its gradients already in ``.grad``; a generator, so each
    minibatch is computed after the previous step). A non-finite loss stops nothing but puts the critic back as
    it was before the loop (never a non-finite weight) with a warning naming ``algorithm``.

    :return: the mean minibatch loss
    """
    critic_before = [param.detach().clone() for param in critic_params]
    losses = []
    for loss in gradient_steps:
        optimizer_step(optimizer)
        losses.append(loss.detach())
    mean_loss = th.stack(losses).mean()
    # One check after the loop instead of one per minibatch (a sync point each): a non-finite loss or
    # weight anywhere means the regression diverged, and the critic is put back as it was.
    if not (th.isfinite(mean_loss) and all(th.isfinite(param).all() for param in critic_params)):
        warnings.warn(
            f"{algorithm}: the critic's regression produced a non-finite loss or weight; the critic keeps its "
            "parameters from before this update",
            stacklevel=4,
        )
        with th.no_grad():
            for param, before in zip(critic_params, critic_before, strict=True):
                param.copy_(before)
        optimizer.state.clear()  # Adam's moments saw the non-finite gradients
    return mean_loss.item()


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
