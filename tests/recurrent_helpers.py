"""Helpers shared by the recurrent tests (tests/unit/test_recurrent.py and
tests/integration/test_recurrent_end_to_end.py, whose fresh process imports this module too): import them by
module name, as ``reference_code`` (``tests`` is on pytest's path: ``pythonpath`` in pyproject.toml)."""

import gymnasium as gym
import numpy as np
from gymnasium import spaces

TINY = dict(lstm_hidden_size=8, net_arch=[8])


class RandomEnv(gym.Env):
    """Random observations of any space, episodes of random length (3 to 9 steps), any action space."""

    def __init__(self, action_space=None, observation_space=None):
        self.action_space = action_space or spaces.Discrete(3)
        self.observation_space = observation_space or spaces.Box(-1, 1, (4,), np.float32)
        self._left = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:  # Space.seed(None) would draw a fresh seed from the OS
            self.observation_space.seed(seed)
        self._left = int(self.np_random.integers(3, 10))
        return self.observation_space.sample(), {}

    def step(self, action):
        assert self.action_space.contains(
            np.asarray(action, dtype=self.action_space.dtype).reshape(self.action_space.shape)
        )
        self._left -= 1
        return self.observation_space.sample(), float(self.np_random.normal()), self._left <= 0, False, {}


def episode_actions(model, observations, starts):
    """The deterministic actions of ``model`` on one environment's observations, its LSTM state carried and
    reset where ``starts`` is true."""
    state, actions = None, []
    for obs, start in zip(observations, starts, strict=True):
        action, state = model.predict(obs[None], state=state, episode_start=np.array([start]), deterministic=True)
        actions.append(action.tolist())
    return actions
