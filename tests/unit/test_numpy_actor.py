"""The numpy actor of fast collection: its distribution parameters equal torch's, its samples follow the
distribution, the buffer it fills equals the torch path's given the same actions, and seeded runs repeat."""

import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from torch import nn

from sb3_trpo_ext import TRPO
from sb3_trpo_ext.fast.numpy_actor import NumpyActor


class RandomEnv(gym.Env):
    """Random observations from its own generator, episodes of 7 steps, reward = first observation entry."""

    def __init__(self, action_space):
        self.action_space = action_space
        self.observation_space = spaces.Box(-2, 2, (5,), np.float32)
        self.t = 0

    def _obs(self):
        return self.np_random.uniform(-2, 2, 5).astype(np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        obs = self._obs()
        return obs, float(obs[0]), self.t >= 7, False, {}


SPACES = {
    "gaussian": spaces.Box(-1, 1, (3,), np.float32),
    "categorical": spaces.Discrete(4),
    "multicategorical": spaces.MultiDiscrete([3, 2, 4]),
    "bernoulli": spaces.MultiBinary(3),
}
NETS = [dict(net_arch=[16]), dict(net_arch=dict(pi=[8, 6], vf=[4]), activation_fn=nn.ReLU), dict(net_arch=[])]


def _model(family, policy_kwargs=None, **kwargs):
    env = make_vec_env(lambda: RandomEnv(SPACES[family]), n_envs=2, seed=0)
    return TRPO("MlpPolicy", env, n_steps=16, batch_size=32, policy_kwargs=policy_kwargs or NETS[0], **kwargs)


def _randomize(policy, seed):
    generator = th.Generator().manual_seed(seed)
    with th.no_grad():
        for param in policy.parameters():
            param.copy_(th.randn(param.shape, generator=generator) * 0.7)


@pytest.mark.parametrize("family", list(SPACES))
@pytest.mark.parametrize("net", range(len(NETS)))
def test_distribution_parameters_equal_torchs(family, net):
    model = _model(family, NETS[net])
    _randomize(model.policy, seed=net)
    actor = NumpyActor.from_policy(model.policy)
    assert actor is not None and actor.family == family
    obs = np.random.default_rng(net).uniform(-2, 2, (64, 5)).astype(np.float32)
    with th.no_grad():
        distribution = model.policy.get_distribution(th.as_tensor(obs))
    params = actor.distribution_params(obs)
    if family == "gaussian":
        np.testing.assert_allclose(params, distribution.distribution.mean.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(actor.std, distribution.distribution.stddev[0].numpy(), rtol=1e-6)
    elif family == "multicategorical":
        logits = np.concatenate([c.logits.numpy() for c in distribution.distribution], axis=1)
        blocks = np.split(params, np.cumsum(actor.action_dims)[:-1], axis=1)
        normalised = np.concatenate([b - np.log(np.exp(b).sum(1, keepdims=True)) for b in blocks], axis=1)
        np.testing.assert_allclose(normalised, logits, rtol=1e-5, atol=1e-5)
    elif family == "categorical":
        normalised = params - np.log(np.exp(params).sum(1, keepdims=True))
        np.testing.assert_allclose(normalised, distribution.distribution.logits.numpy(), rtol=1e-5, atol=1e-5)
    else:
        np.testing.assert_allclose(params, distribution.distribution.logits.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", list(SPACES))
def test_samples_follow_the_distribution(family):
    """Moments of 200k draws at one state against the distribution's (5 standard errors)."""
    model = _model(family)
    _randomize(model.policy, seed=1)
    actor = NumpyActor.from_policy(model.policy)
    n = 200_000
    obs = np.repeat(np.array([[0.3, -1.0, 0.5, 1.2, -0.2]], dtype=np.float32), n, axis=0)
    samples = actor.sample(obs, np.random.default_rng(0))
    with th.no_grad():
        distribution = model.policy.get_distribution(th.as_tensor(obs[:1])).distribution
    if family == "gaussian":
        mean, std = distribution.mean[0].numpy(), distribution.stddev[0].numpy()
        assert samples.dtype == np.float32 and samples.shape == (n, 3)
        np.testing.assert_array_less(np.abs(samples.mean(0) - mean), 5 * std / np.sqrt(n))
        np.testing.assert_allclose(samples.std(0), std, rtol=0.01)
        return
    if family == "bernoulli":
        probs = [distribution.probs[0].numpy()]
        columns = [samples]
    elif family == "categorical":
        probs = [distribution.probs[0].numpy()]
        columns = [np.eye(4)[samples]]
    else:
        probs = [c.probs[0].numpy() for c in distribution]
        columns = [np.eye(len(p))[samples[:, i]] for i, p in enumerate(probs)]
    for p, one_hot in zip(probs, columns):
        frequency = one_hot.mean(0)
        np.testing.assert_array_less(np.abs(frequency - p), 5 * np.sqrt(p * (1 - p) / n) + 1e-9)
    assert samples.dtype == (np.float32 if family == "bernoulli" else np.int64)


@pytest.mark.parametrize("family", list(SPACES))
def test_buffer_from_the_fast_path_equals_the_torch_path_given_the_same_actions(family):
    """Both paths fed the same actions: observations, actions, values, log-probabilities, returns and
    advantages are identical (values and log-probabilities come from the same batched torch call)."""
    fast = _model(family, seed=3)
    _, callback = fast._setup_learn(1000, None)
    assert NumpyActor.from_policy(fast.policy) is not None
    fast.collect_rollouts(fast.env, callback, fast.rollout_buffer, fast.n_steps)
    replay = iter(fast.rollout_buffer.actions)

    slow = _model(family, seed=3, fast_collect=False)

    class Replayed:
        def get_actions(self):
            actions = next(replay)
            if family == "categorical":
                return th.as_tensor(actions[:, 0]).long()
            return th.as_tensor(actions).to(th.float32 if family in ("gaussian", "bernoulli") else th.int64)

    slow.policy.get_distribution = lambda obs: Replayed()
    _, callback = slow._setup_learn(1000, None)
    slow.collect_rollouts(slow.env, callback, slow.rollout_buffer, slow.n_steps)
    for name in (
        "observations",
        "actions",
        "rewards",
        "episode_starts",
        "values",
        "log_probs",
        "returns",
        "advantages",
    ):
        np.testing.assert_array_equal(
            getattr(fast.rollout_buffer, name), getattr(slow.rollout_buffer, name), err_msg=name
        )


def test_seeded_fast_collection_is_deterministic():
    buffers = []
    for seed in (5, 5, 6):
        model = _model("gaussian", seed=seed)
        model.learn(64)
        buffers.append(model.rollout_buffer.actions.copy())
    np.testing.assert_array_equal(buffers[0], buffers[1])
    assert not np.array_equal(buffers[0], buffers[2])


def test_fast_collect_false_never_builds_the_numpy_actor(monkeypatch):
    built = []
    monkeypatch.setattr(NumpyActor, "from_policy", classmethod(lambda cls, policy: built.append(1)))
    _model("categorical", fast_collect=False).learn(32)
    assert built == []
    _model("categorical").learn(32)
    assert built  # the default asks for it


def test_numpy_actor_is_picklable():
    model = _model("multicategorical")
    actor = NumpyActor.from_policy(model.policy)
    copy = pickle.loads(pickle.dumps(actor))
    obs = np.ones((3, 5), dtype=np.float32)
    np.testing.assert_array_equal(copy.distribution_params(obs), actor.distribution_params(obs))
