"""Masked action distributions (sb3-contrib's ``MaskableDistribution`` classes) for TRPO's update and vine.

sb3-contrib masks an invalid action by replacing its logit with ``-1e8`` before torch normalises the logits, so an
invalid action's log-probability is about ``-1e8`` (finite) and its probability exactly 0 in float32. On the
normalised logits ``l`` (log-probabilities) of a categorical, with ``p = exp(l)``:

* the true KL ``sum_a p_old(a) (l_old(a) - l_new(a))`` gets 0 from every invalid action (``0 * finite``), under
  the same masks for the old and the new policy: the KL of the distributions restricted to the valid support;
* the closed-form Fisher ``M = diag(p) - p p^T`` has zero rows and columns at invalid actions, and the masked
  logit is a constant (its Jacobian is zero), so ``J^T M J`` is the Fisher on the valid support;
* the surrogate reads ``log_prob`` of actions that were sampled under the masks (valid ones).

So the categorical and multi-categorical families of :mod:`sb3_trpo_ext.common.fisher` apply as they are, read
from the masked distributions by :func:`masked_action_family`. A masked ``MultiBinary`` is sb3-contrib's
``MaskableBernoulliDistribution``: a multi-categorical with two outcomes per dimension, and its family is that one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th
from sb3_contrib.common.maskable.distributions import (
    MaskableBernoulliDistribution,
    MaskableCategoricalDistribution,
    MaskableMultiCategoricalDistribution,
)
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.type_aliases import PyTorchObs

from sb3_trpo_ext.common.fisher import ActionFamily, CategoricalFamily, DistParams, MultiCategoricalFamily
from sb3_trpo_ext.common.sampling import gumbel_argmax

__all__ = [
    "MaskedMultiCategoricalFamily",
    "MaskedObs",
    "masked_action_family",
    "masked_sample_with_noise",
]


class MaskedMultiCategoricalFamily(MultiCategoricalFamily):
    """The multi-categorical family read from sb3-contrib's ``MaskableMultiCategoricalDistribution`` (and its
    ``MaskableBernoulliDistribution``): the concatenated normalised (masked) logits of its categoricals."""

    name = "masked_multicategorical"

    def params(self, distribution: Distribution) -> DistParams:
        return (th.cat([categorical.logits for categorical in distribution.distributions], dim=-1),)  # type: ignore[attr-defined]  # declared on the multi-categorical subclass only


def masked_action_family(distribution: Distribution) -> ActionFamily:
    """The :class:`~sb3_trpo_ext.common.fisher.ActionFamily` of one of sb3-contrib's masked distributions.

    :param distribution: a ``MaskableCategoricalDistribution``, ``MaskableMultiCategoricalDistribution`` or
        ``MaskableBernoulliDistribution`` (masks applied or not)
    :raises TypeError: for any other distribution
    """
    if isinstance(distribution, MaskableCategoricalDistribution):
        return CategoricalFamily()  # ``distribution.distribution.logits``: the masked, normalised logits
    if isinstance(distribution, MaskableMultiCategoricalDistribution):  # MaskableBernoulli included: [2] * n
        return MaskedMultiCategoricalFamily(distribution.action_dims)
    raise TypeError(
        f"Unsupported action distribution {type(distribution).__name__}: MaskableTRPO supports sb3-contrib's "
        "MaskableCategoricalDistribution, MaskableMultiCategoricalDistribution and MaskableBernoulliDistribution"
    )


def masked_sample_with_noise(distribution: Distribution, noise: th.Tensor) -> th.Tensor:
    """Draw actions from a masked distribution as a deterministic function of ``noise`` (uniforms in (0, 1), one
    row per state, as many columns as :func:`sb3_trpo_ext.common.sampling.noise_width` of the action space), so that
    vine's branches draw with common random numbers. Invalid actions have probability 0 and are never drawn.

    :param distribution: a masked distribution (see :func:`masked_action_family`)
    :param noise: ``(n_states, width)`` uniforms in the open interval (0, 1)
    :return: ``(n_states,)`` (Discrete) or ``(n_states, n_dims)`` actions
    :raises TypeError: for an unsupported distribution
    """
    if isinstance(distribution, MaskableCategoricalDistribution):
        return gumbel_argmax(distribution.distribution.logits, noise)
    if isinstance(distribution, MaskableBernoulliDistribution):
        # one uniform per dimension: 1 where u < P(1); P(1) is exactly 0 or 1 where an outcome is masked
        p_one = th.stack([categorical.probs[:, 1] for categorical in distribution.distributions], dim=1)
        return (noise < p_one).to(th.float32)
    if isinstance(distribution, MaskableMultiCategoricalDistribution):
        blocks = th.split(noise, [int(n) for n in distribution.action_dims], dim=1)
        return th.stack(
            [gumbel_argmax(c.logits, u) for c, u in zip(distribution.distributions, blocks, strict=True)], dim=1
        )
    raise TypeError(f"sampling='vine' does not support the action distribution {type(distribution).__name__}")


@dataclass(frozen=True)
class MaskedObs:
    """States together with their action masks: what MaskableTRPO hands to the natural-gradient step as its
    "observations". Indexing (the step's sub-sampling of states for the Fisher) indexes both.

    :param observations: the states, batch first (a tensor or a dict of tensors)
    :param action_masks: ``(batch, mask_dims)``, True (or 1) where an action is valid; None: no masking
    """

    observations: PyTorchObs
    action_masks: th.Tensor | None

    def __getitem__(self, index: Any) -> MaskedObs:
        if isinstance(self.observations, dict):
            observations: PyTorchObs = {key: value[index] for key, value in self.observations.items()}
        else:
            observations = self.observations[index]
        masks = None if self.action_masks is None else self.action_masks[index]
        return MaskedObs(observations, masks)

    def __len__(self) -> int:
        if isinstance(self.observations, dict):
            return int(next(iter(self.observations.values())).shape[0])
        return int(self.observations.shape[0])


def as_mask_array(masks: Any, mask_dims: int) -> np.ndarray:
    """Masks as a ``(n, mask_dims)`` boolean array (from an env's ``action_masks()``, a list, ints...).

    :raises ValueError: if the masks do not have ``mask_dims`` entries per row
    """
    array = np.asarray(masks)
    if array.size % mask_dims != 0 or array.size == 0:
        raise ValueError(
            f"Invalid action_masks of shape {array.shape}: expected {mask_dims} entries per state (one per action "
            "of a Discrete space, the sum of nvec for MultiDiscrete, two per dimension for MultiBinary)"
        )
    return array.reshape(-1, mask_dims).astype(bool)
