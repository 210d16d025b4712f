"""Same seed, same function, same data: the random draws of collection do not depend on which of SB3's policy
classes computes the actor.

A ``MultiInputPolicy`` on a Dict environment with one vector key computes exactly what an ``MlpPolicy`` computes on
the same environment flattened, so with the same seed both must collect the same actions and act the same before
and after ``learn()``. The same holds for any policy that uses SB3's own methods (here an ``MlpPolicy`` whose
features extractor is a subclass of ``FlattenExtractor``, which the numpy actor does not take). A policy that
overrides ``forward`` keeps sampling through it.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from gymnasium.wrappers import FlattenObservation
from stable_baselines3.common.torch_layers import FlattenExtractor

from sb3_trpo_ext import TRPO
from sb3_trpo_ext.fast.numpy_actor import NumpyActor
from sb3_trpo_ext.trpo.policies import MlpPolicy

ACTION_SPACES = {
    "box": spaces.Box(-1, 1, (2,), np.float32),
    "discrete": spaces.Discrete(3),
    "multidiscrete": spaces.MultiDiscrete([3, 2]),
    "multibinary": spaces.MultiBinary(2),
}
KWARGS = dict(n_steps=64, batch_size=64, gamma=0.5, seed=1, policy_kwargs=dict(net_arch=[16]))


class VectorDictEnv(gym.Env):
    """A Dict observation with one vector key that drifts with the environment's own generator; the reward
    depends on the action, so different actions give different data."""

    def __init__(self, action_space: spaces.Space):
        self.observation_space = spaces.Dict({"vec": spaces.Box(-1, 1, (5,), np.float32)})
        self.action_space = action_space
        self._state = np.zeros(5, np.float32)
        self._t = 0

    def _obs(self) -> dict[str, np.ndarray]:
        return {"vec": self._state.copy()}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        self._state = self.np_random.uniform(-1, 1, 5).astype(np.float32)
        return self._obs(), {}

    def step(self, action):
        self._t += 1
        flat = np.asarray(action, dtype=np.float64).ravel()
        reward = -float(np.sum((flat - self._state[: len(flat)]) ** 2))
        noise = self.np_random.normal(0, 0.3, 5)
        self._state = np.clip(0.8 * self._state + noise, -1, 1).astype(np.float32)
        return self._obs(), reward, False, self._t >= 20, {}


def _flatten(obs: dict[str, np.ndarray]) -> np.ndarray:
    return obs["vec"].reshape(1, -1)


def _observations() -> dict[str, np.ndarray]:
    return {"vec": np.random.default_rng(3).uniform(-1, 1, (8, 5)).astype(np.float32)}


def _learn(model: TRPO, obs: np.ndarray | dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """Predictions before learning, the first rollout's observations and actions, predictions after 4 updates."""
    before, _ = model.predict(obs, deterministic=True)
    model.learn(64)  # one rollout, then one update
    buffer = model.rollout_buffer
    first_obs = buffer.observations["vec"] if isinstance(buffer.observations, dict) else buffer.observations
    first_obs, first_actions = first_obs.copy(), buffer.actions.copy()
    model.learn(192, reset_num_timesteps=False)
    after, _ = model.predict(obs, deterministic=True)
    return before, first_obs, first_actions, after


@pytest.mark.parametrize("fast_collect", [True, False])
@pytest.mark.parametrize("action", list(ACTION_SPACES))
def test_dict_env_with_one_vector_key_acts_as_the_flattened_env(action, fast_collect):
    obs = _observations()
    # one model after the other: torch's and numpy's global generators (seeded by each model) are shared
    dict_model = TRPO("MultiInputPolicy", VectorDictEnv(ACTION_SPACES[action]), fast_collect=fast_collect, **KWARGS)
    dict_results = _learn(dict_model, obs)
    flat_env = FlattenObservation(VectorDictEnv(ACTION_SPACES[action]))
    flat_model = TRPO("MlpPolicy", flat_env, fast_collect=fast_collect, **KWARGS)
    flat_results = _learn(flat_model, obs["vec"])

    # before any update: the same policy, the same data and the same random draws. torch's products over the
    # Dict path's concatenated tensor may round differently in the last bit (seen with other tests' thread
    # settings), so predictions compare to rounding; the numpy actor's draws are bit for bit.
    np.testing.assert_allclose(dict_results[0], flat_results[0], rtol=1e-6, atol=1e-7, err_msg="before")
    np.testing.assert_array_equal(dict_results[1], flat_results[1], err_msg="observations")
    if fast_collect:
        np.testing.assert_array_equal(dict_results[2], flat_results[2], err_msg="actions")
    else:
        np.testing.assert_allclose(dict_results[2], flat_results[2], rtol=1e-6, atol=1e-7, err_msg="actions")
    # after 4 updates: the same to rounding (the flat model's critic regression and Fisher products are
    # written out by hand, the Dict model's go through autograd)
    np.testing.assert_allclose(dict_results[3], flat_results[3], rtol=1e-4, atol=1e-5)
    if action == "box":
        assert not np.allclose(flat_results[0], flat_results[3])  # the actor did move


def test_dict_env_uses_the_numpy_actor():
    """The Dict path of the one-vector-key env takes the numpy actor, as the flat path does."""
    model = TRPO("MultiInputPolicy", VectorDictEnv(ACTION_SPACES["box"]), **KWARGS)
    actor = NumpyActor.from_policy(model.policy)
    assert actor is not None
    obs = _observations()
    np.testing.assert_allclose(
        actor.distribution_params(obs),
        model.policy.get_distribution(model.policy.obs_to_tensor(obs)[0]).distribution.mean.detach().numpy(),
        rtol=1e-6,
        atol=1e-6,
    )


class SameFlatten(FlattenExtractor):
    """Computes what SB3's ``FlattenExtractor`` computes, but is not it: the numpy actor does not take it."""


@pytest.mark.parametrize("action", list(ACTION_SPACES))
def test_same_function_in_another_sb3_policy_draws_the_same_actions(action):
    env_kwargs = dict(policy_kwargs=dict(net_arch=[16], features_extractor_class=SameFlatten))
    other = TRPO("MlpPolicy", FlattenObservation(VectorDictEnv(ACTION_SPACES[action])), **{**KWARGS, **env_kwargs})
    assert NumpyActor.from_policy(other.policy) is None
    other.learn(64)
    plain = TRPO("MlpPolicy", FlattenObservation(VectorDictEnv(ACTION_SPACES[action])), **KWARGS)
    plain.learn(64)
    # torch's and numpy's matrix products may round differently: Gaussian actions agree to rounding,
    # discrete ones exactly (the same uniforms against the same probabilities)
    np.testing.assert_allclose(other.rollout_buffer.actions, plain.rollout_buffer.actions, rtol=1e-5, atol=1e-6)


class CountingPolicy(MlpPolicy):
    """Overrides ``forward``: collection must call it at every step."""

    calls = 0

    def forward(self, obs, deterministic=False):
        CountingPolicy.calls += 1
        return super().forward(obs, deterministic)


def test_a_policy_overriding_forward_samples_through_it():
    model = TRPO(CountingPolicy, FlattenObservation(VectorDictEnv(ACTION_SPACES["box"])), **KWARGS)
    CountingPolicy.calls = 0
    model.learn(64)
    assert CountingPolicy.calls == 64


class ImageEnv(gym.Env):
    """Random 36x36 images (NatureCNN's smallest input) from the environment's generator."""

    observation_space = spaces.Box(0, 255, (36, 36, 1), np.uint8)
    action_space = spaces.Discrete(3)

    def _obs(self) -> np.ndarray:
        return self.np_random.integers(0, 256, (36, 36, 1), dtype=np.uint8)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {}

    def step(self, action):
        return self._obs(), float(action == 1), False, False, {}


def test_cnn_policy_draws_from_the_models_generator():
    """A CNN policy (torch head, numpy draws): the actions depend on the model's seed, not on torch's global
    generator at collection time."""
    actions = []
    for torch_seed in (0, 1):
        model = TRPO("CnnPolicy", ImageEnv(), n_steps=16, batch_size=16, seed=4, policy_kwargs=dict(net_arch=[8]))
        th.manual_seed(torch_seed)
        model.learn(16)
        actions.append(model.rollout_buffer.actions.copy())
    np.testing.assert_array_equal(actions[0], actions[1])
