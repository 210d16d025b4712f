"""``TRPO.predict`` from the numpy actor (issue 20, item 7): the same actions as SB3's torch path, a generator of
its own for stochastic actions, never stale after the parameters change, torch for everything else."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from torch import nn

from sb3_trpo_ext import TRPO

SMALL = {"n_steps": 64, "batch_size": 64, "n_critic_updates": 1, "seed": 3}


class SpaceEnv(gym.Env):
    """Random observations in a 5-dimensional box, rewards from the first action coordinate."""

    def __init__(self, action_space: spaces.Space):
        self.observation_space = spaces.Box(-2.0, 2.0, (5,), np.float32)
        self.action_space = action_space
        self._steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._steps = 0
        return self.observation_space.sample(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self._steps += 1
        reward = float(np.asarray(action, dtype=float).ravel()[0])
        return self.observation_space.sample(), reward, False, self._steps >= 20, {}


SPACES = {
    "box": spaces.Box(-1.0, 1.0, (3,), np.float32),
    "discrete": spaces.Discrete(4),
    "multidiscrete": spaces.MultiDiscrete([3, 2, 4]),
    "multibinary": spaces.MultiBinary(3),
}


def _torch_predict(model: TRPO, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
    """SB3's own predict (the policy's, in torch)."""
    return BasePolicy.predict(model.policy, obs, deterministic=deterministic)[0]


def _observations(model: TRPO, n: int = 300) -> np.ndarray:
    model.observation_space.seed(0)
    return np.stack([model.observation_space.sample() for _ in range(n)])


@pytest.mark.parametrize("name", list(SPACES))
def test_deterministic_actions_equal_the_torch_path(name: str) -> None:
    model = TRPO("MlpPolicy", SpaceEnv(SPACES[name]), **SMALL).learn(128)
    assert model._numpy_predictor() is not None  # the numpy path is taken
    obs = _observations(model)
    fast, torch_actions = model.predict(obs, deterministic=True)[0], _torch_predict(model, obs)
    assert fast.shape == torch_actions.shape and fast.dtype == torch_actions.dtype
    if name == "box":
        np.testing.assert_allclose(fast, torch_actions, rtol=0, atol=1e-6)
    else:
        np.testing.assert_array_equal(fast, torch_actions)  # the same argmax / the same rounding
    single, _ = model.predict(obs[0], deterministic=True)
    assert single.shape == _torch_predict(model, obs[0]).shape == SPACES[name].shape


@pytest.mark.parametrize("name", ["box", "discrete"])
def test_stochastic_actions_follow_the_policy(name: str) -> None:
    model = TRPO("MlpPolicy", SpaceEnv(SPACES[name]), **SMALL)
    obs = np.repeat(_observations(model, 1), 20_000, axis=0)
    actions = model.predict(obs, deterministic=False)[0]
    with th.no_grad():
        distribution = model.policy.get_distribution(th.as_tensor(obs[:1]))
    if name == "box":  # clipped to [-1, 1]: compare the unclipped mean through the median
        mean = distribution.distribution.mean.numpy()[0]
        np.testing.assert_allclose(np.median(actions, axis=0), np.clip(mean, -1, 1), atol=0.03)
    else:
        probs = distribution.distribution.probs.numpy()[0]
        np.testing.assert_allclose(np.bincount(actions, minlength=4) / len(actions), probs, atol=0.015)


def test_predict_never_changes_training_and_is_seeded() -> None:
    """Stochastic predictions draw from their own generator: interleaving them leaves training bit-identical.
    (Each model is built just before it trains: construction reseeds the global generators, as in SB3.)"""

    def train(predict_between: bool) -> tuple[list[th.Tensor], np.ndarray]:
        model = TRPO("MlpPolicy", "CartPole-v1", **SMALL).learn(128)
        obs = _observations(model, 50)
        predicted = model.predict(obs)[0] if predict_between else np.empty(0)
        model.learn(128, reset_num_timesteps=False)
        return [param.detach().clone() for param in model.policy.parameters()], predicted

    plain, _ = train(predict_between=False)
    evaluated, first = train(predict_between=True)
    for a, b in zip(plain, evaluated, strict=True):
        assert th.equal(a, b)
    _, second = train(predict_between=True)
    np.testing.assert_array_equal(first, second)  # same seed, same stream of predictions


def test_never_stale_after_parameters_change(tmp_path) -> None:
    model = TRPO("MlpPolicy", SpaceEnv(SPACES["box"]), **SMALL)
    obs = _observations(model, 50)
    before = model.predict(obs, deterministic=True)[0]
    model.learn(128)  # in-place optimizer steps and line search: seen through the shared memory
    after = model.predict(obs, deterministic=True)[0]
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, _torch_predict(model, obs), atol=1e-6)

    other = TRPO("MlpPolicy", SpaceEnv(SPACES["box"]), **{**SMALL, "seed": 11})
    model.set_parameters(other.get_parameters())  # load_state_dict: in place
    np.testing.assert_allclose(model.predict(obs, deterministic=True)[0], _torch_predict(other, obs), atol=1e-6)

    with th.no_grad():  # a parameter given new storage, then a new head module
        model.policy.log_std.data = th.full_like(model.policy.log_std, -3.0)
        model.policy.action_net = nn.Linear(64, 3)
    np.testing.assert_allclose(model.predict(obs, deterministic=True)[0], _torch_predict(model, obs), atol=1e-6)

    model.save(tmp_path / "m.zip")
    loaded = TRPO.load(tmp_path / "m.zip")
    np.testing.assert_allclose(loaded.predict(obs, deterministic=True)[0], _torch_predict(model, obs), atol=1e-6)


def test_other_policies_take_the_torch_path() -> None:
    sde = TRPO("MlpPolicy", SpaceEnv(SPACES["box"]), use_sde=True, **SMALL)
    assert sde._numpy_predictor() is None
    obs = _observations(sde, 20)
    np.testing.assert_allclose(sde.predict(obs, deterministic=True)[0], _torch_predict(sde, obs), atol=1e-6)
    with pytest.raises(ValueError, match="observation"):  # SB3's own shape check, on the numpy path too
        TRPO("MlpPolicy", SpaceEnv(SPACES["box"]), **SMALL).predict(np.zeros((2, 7), np.float32))
