"""The critic's regression: minibatch epochs of the values on the returns (:func:`fit_critic`), with autograd's
gradients or the speed layer's hand-derived ones (:mod:`sb3_trpo_ext.fast.critic`), through the one guarded loop
every algorithm of the family uses (:func:`guarded_regression`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch as th
import torch.nn.functional as F
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn

from sb3_trpo_ext.common.observations import index_obs
from sb3_trpo_ext.common.reduce import Reducer
from sb3_trpo_ext.fast.critic import PlainMlpCritic


def fit_critic(
    policy: ActorCriticPolicy,
    critic_params: Sequence[nn.Parameter],
    observations: PyTorchObs,
    returns: th.Tensor,
    n_epochs: int,
    batch_size: int,
    hand_derived: PlainMlpCritic | None,
    value_of: Callable[[th.Tensor], th.Tensor],
    permutation: Callable[[int], np.ndarray] = np.random.permutation,
) -> float:
    """``n_epochs`` epochs of minibatch regression of the values on ``returns`` with ``policy.optimizer`` (over
    ``critic_params``), the minibatches drawn with numpy's global generator (as SB3's algorithms draw them) or
    ``permutation``, through :func:`guarded_regression`.

    :param hand_derived: the speed layer's gradients of a plain MLP critic, or None (autograd through ``value_of``)
    :param value_of: ``obs -> V(obs)``, flat
    :param permutation: ``n -> a permutation of range(n)``, an epoch's order (data-parallel ranks share one generator)
    :return: the mean minibatch loss
    """
    n_samples = returns.shape[0]

    def gradient_steps() -> Iterator[th.Tensor]:
        for _ in range(n_epochs):
            order = th.from_numpy(permutation(n_samples)).to(returns.device)
            # one gather per epoch; the minibatches are then contiguous slices of it
            epoch_obs, epoch_returns = index_obs(observations, order), returns[order]
            for start in range(0, n_samples, batch_size):
                minibatch = slice(start, start + batch_size)
                if hand_derived is not None:
                    yield hand_derived.set_gradients(epoch_obs[minibatch], epoch_returns[minibatch])
                else:
                    loss = F.mse_loss(value_of(index_obs(epoch_obs, minibatch)), epoch_returns[minibatch])
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


def average_gradients(reducer: Reducer, params: Sequence[nn.Parameter], count: int) -> None:
    """Replace each parameter's ``.grad`` (the mean over this process's ``count`` states) by the mean over every
    rank's states (one reduction for all of them)."""
    grads = [param.grad for param in params]
    assert all(grad is not None for grad in grads), "set the gradients first"
    flat = th.cat([grad.reshape(-1) for grad in grads if grad is not None])
    mean = reducer.mean(flat, count)
    offset = 0
    for param in params:
        size = param.numel()
        param.grad = mean[offset : offset + size].view_as(param)
        offset += size


def guarded_regression(
    optimizer: th.optim.Optimizer,
    critic_params: Sequence[nn.Parameter],
    gradient_steps: Iterator[th.Tensor],
    algorithm: str,
    all_ranks: Callable[[bool], bool] | None = None,
) -> float:
    """The critic's regression loop of every algorithm here: one ``optimizer`` step per item of
    ``gradient_steps`` (each item is a minibatch's loss, its gradients already in ``.grad``; a generator, so each
    minibatch is computed after the previous step). A non-finite loss stops nothing but puts the critic back as
    it was before the loop (never a non-finite weight) with a warning naming ``algorithm``.

    :param all_ranks: for data-parallel ranks that each regress on their own states, ``ok -> ok on every rank``
        (the rollback is decided together)

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
    finite = bool(th.isfinite(mean_loss)) and all(bool(th.isfinite(param).all()) for param in critic_params)
    if all_ranks is not None:  # data-parallel ranks whose losses are their own: roll back together or not at all
        finite = all_ranks(finite)
    if not finite:
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
