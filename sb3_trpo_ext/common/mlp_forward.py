"""The forward pass of a plain MLP for the hand-written backward passes (critic regression, Fisher product)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch as th
from torch import nn


def tanh_(x: th.Tensor) -> th.Tensor:
    """``tanh(x)``, written over ``x`` where autograd does not need it: ``x`` must be a fresh intermediate.

    On CPU, NumPy's vectorised tanh is several times faster than torch's (measured here with torch 2.13 on one
    thread, 128 x 64 float32 values: 5.5 us against 22 us idle, 3.4-7.5 us against 20-44 us on a busy machine;
    ``benchmarks/speed.py`` prints it), and tanh was the largest single cost of the critic's minibatch step. A CPU
    tensor outside autograd is therefore overwritten through its NumPy view; anything else (another device, a
    tensor in an autograd graph) takes ``torch.tanh``.
    """
    if x.device.type == "cpu" and not x.requires_grad and x.dtype in (th.float32, th.float64) and x.is_contiguous():
        array = x.numpy()
        np.tanh(array, out=array)
        return x
    return th.tanh(x)


class PlainMlp:
    """A chain ``Linear, activation, ..., Linear`` read for the hand-written passes (critic regression, Fisher
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
        """``head(act(... act(Linear(obs))))``, keeping what a hand-written backward pass needs.

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
