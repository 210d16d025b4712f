"""Drawing actions: the one home of the samplers of collection, ``predict`` and vine's branches.

Two draws, on purpose, because they serve different contracts and each one's random numbers are what
training depends on (``tests/integration/test_bit_identical.py`` pins them):

* :func:`draw_actions` (numpy, from a generator): collection and ``predict`` draw one action per state from
  the head's output, consuming the model's own generator as they go (Gaussian: ``standard_normal``;
  categorical: one uniform per state, inverting the cumulative distribution in float64).
* :func:`sample_with_noise` (torch, from given uniforms): vine's branches need actions as a deterministic
  function of a fixed-width row of uniforms (:func:`noise_width`), so that the ``K`` branches of a state share
  their policy noise (common random numbers). The Gaussian goes through ``ndtri`` and the categorical through
  Gumbel-max (one uniform per category).

Collection could not use the noise form without changing its draws (a Gumbel-max needs ``n`` uniforms per
state where the inverse CDF takes one, and ``ndtri(u)`` is not numpy's ``standard_normal``), nor vine the
generator form (the branches of a state must share noise rows): either change would alter every training run
compared with published results, so both stay, side by side here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    Distribution,
    MultiCategoricalDistribution,
    StateDependentNoiseDistribution,
)


# ------------------------------------------------------------------------------ from a numpy generator
def draw_actions(
    family: str, params: Any, std: np.ndarray | None, action_dims: list[int] | None, rng: np.random.Generator
) -> np.ndarray:
    """Draw one action per row of the head's output ``params`` with ``rng`` (int64 for discrete families, else
    float32): Gaussian ``mean + std * N(0, 1)``, Bernoulli and categorical by comparing uniforms.

    :param family: ``"gaussian"``, ``"categorical"``, ``"multicategorical"`` or ``"bernoulli"``
    :param std: the Gaussian's standard deviations, else None
    :param action_dims: the sizes of a multi-categorical's blocks, else None
    """
    if family == "gaussian":
        return params + std * rng.standard_normal(params.shape, dtype=np.float32)
    if family == "bernoulli":
        return (rng.random(params.shape, dtype=np.float32) < 1 / (1 + np.exp(-params))).astype(np.float32)
    if family == "categorical":
        return sample_categorical(params, rng)
    assert action_dims is not None
    blocks = np.split(params, np.cumsum(action_dims)[:-1], axis=1)
    return np.stack([sample_categorical(block, rng) for block in blocks], axis=1)


def sample_categorical(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw per row from ``softmax(logits)`` by inverting the cumulative distribution (one uniform a row)."""
    probs = np.exp(logits - logits.max(axis=1, keepdims=True), dtype=np.float64)
    cumulative = np.cumsum(probs, axis=1)
    uniforms = rng.random((len(logits), 1)) * cumulative[:, -1:]
    return np.minimum((cumulative <= uniforms).sum(axis=1), logits.shape[1] - 1).astype(np.int64)


# ------------------------------------------------------------------------------ from given uniforms
def noise_width(action_space: spaces.Space) -> int:
    """How many uniforms one action draw of :func:`sample_with_noise` takes."""
    if isinstance(action_space, spaces.Discrete):
        return int(action_space.n)
    if isinstance(action_space, spaces.MultiDiscrete):
        return int(np.sum(action_space.nvec))
    return int(np.prod(action_space.shape))  # type: ignore[arg-type]  # gymnasium types shape as Optional


def gumbel_argmax(logits: th.Tensor, uniforms: th.Tensor) -> th.Tensor:
    """Gumbel-max: ``argmax(logits - log(-log u))`` is a draw from ``softmax(logits)``. A masked action's logit
    (about -1e8) never wins: ``|log(-log u)| < 17`` for float32 ``u`` in (0, 1)."""
    return th.argmax(logits - th.log(-th.log(uniforms)), dim=-1)


def sample_with_noise(distribution: Distribution, noise: th.Tensor) -> th.Tensor:
    """Draw actions from ``distribution`` as a deterministic function of ``noise`` (uniforms in (0, 1), one row
    per state, :func:`noise_width` columns), so that branches given the same noise row draw with common random
    numbers.

    :raises TypeError: for a distribution vine does not support
    """
    if isinstance(distribution, (DiagGaussianDistribution, StateDependentNoiseDistribution)):
        normal = distribution.distribution
        gaussian = normal.loc + normal.scale * th.special.ndtri(noise)
        bijector = getattr(distribution, "bijector", None)
        return bijector.forward(gaussian) if bijector is not None else gaussian
    if isinstance(distribution, CategoricalDistribution):
        return gumbel_argmax(distribution.distribution.logits, noise)
    if isinstance(distribution, MultiCategoricalDistribution):
        blocks = th.split(noise, list(distribution.action_dims), dim=1)
        return th.stack(
            [gumbel_argmax(c.logits, u) for c, u in zip(distribution.distribution, blocks, strict=True)], dim=1
        )
    if isinstance(distribution, BernoulliDistribution):
        return (noise < distribution.distribution.probs).to(th.float32)
    raise TypeError(f"sampling='vine' does not support the action distribution {type(distribution).__name__}")
