"""Environment wrappers for action masking, usable from the RL Zoo's ``env_wrapper``."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from sb3_contrib.common.wrappers import ActionMasker

__all__ = ["TaxiActionMasker", "taxi_action_mask"]


def taxi_action_mask(env: gym.Env) -> np.ndarray:
    """The valid actions of gymnasium's ``Taxi-v3`` in its current state: ``env.unwrapped.action_mask(state)`` as
    booleans (the same mask as the ``info["action_mask"]`` of its last ``reset``/``step``).

    :param env: a Taxi environment, wrappers allowed
    """
    base = env.unwrapped
    return np.asarray(base.action_mask(base.s), dtype=bool)  # type: ignore[attr-defined]  # Taxi's own attributes, not gymnasium.Env's


class TaxiActionMasker(ActionMasker):
    """sb3-contrib's ``ActionMasker`` for gymnasium's ``Taxi-v3``: ``action_masks()`` returns the valid actions of
    the current state (moves into walls, pick-ups where the passenger is not, drop-offs away from the four
    locations are invalid). In a Zoo hyperparameter block::

        env_wrapper:
          - sb3_trpo_ext.maskable.wrappers.TaxiActionMasker

    Its state is the environment's, so vine sampling restores it (:mod:`sb3_trpo_ext.sim_state`).

    :param env: a Taxi environment (anything whose unwrapped environment has ``action_mask(state)`` and ``s``)
    :raises ValueError: if the unwrapped environment has no ``action_mask`` method
    """

    def __init__(self, env: gym.Env):
        if not callable(getattr(env.unwrapped, "action_mask", None)):
            raise ValueError(
                f"Invalid env {env.unwrapped}: TaxiActionMasker needs an environment with an action_mask(state) "
                "method, as gymnasium's Taxi-v3"
            )
        super().__init__(env, taxi_action_mask)
