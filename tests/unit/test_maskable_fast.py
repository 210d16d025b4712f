"""MaskableTRPO on TRPO's fast path (issue 26): the numpy actor with masks, the one-hot encoding of discrete
observations and the MLP Fisher product at the masked distributions, each against the torch path it replaces."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_contrib.common.envs import InvalidActionEnvDiscrete, InvalidActionEnvMultiBinary, InvalidActionEnvMultiDiscrete
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import preprocess_obs

from sb3_trpo_ext import MaskableTRPO
from sb3_trpo_ext.common.fisher import analytic_fisher_product
from sb3_trpo_ext.fast.mlp import MlpSpec
from sb3_trpo_ext.fast.numpy_actor import NumpyActor, collection_actor
from sb3_trpo_ext.maskable.distributions import MaskedObs, masked_action_family

KINDS = ["discrete", "multidiscrete", "multibinary"]


def _env(kind: str) -> gym.Env:
    if kind == "discrete":
        return InvalidActionEnvDiscrete(dim=6, n_invalid_actions=3)
    if kind == "multidiscrete":
        return InvalidActionEnvMultiDiscrete(dims=[3, 4], n_invalid_actions=3)
    return InvalidActionEnvMultiBinary(dims=4, n_invalid_actions=3)


def _model(env: gym.Env | str) -> MaskableTRPO:
    return MaskableTRPO("MlpPolicy", env, n_steps=32, batch_size=32, policy_kwargs=dict(net_arch=[16]), seed=0)


def _random_masks(n_states: int, dims: list[int], generator: np.random.Generator) -> np.ndarray:
    masks = generator.random((n_states, sum(dims))) > 0.5
    start = 0
    for n in dims:  # at least one valid action per block
        masks[np.arange(n_states), start + generator.integers(n, size=n_states)] = True
        start += n
    return masks


def _observations(model: MaskableTRPO, n: int) -> np.ndarray:
    space = model.observation_space
    space.seed(0)
    return np.array([space.sample() for _ in range(n)])


def _dims(model: MaskableTRPO) -> list[int]:
    space = model.action_space
    if isinstance(space, spaces.Discrete):
        return [int(space.n)]
    if isinstance(space, spaces.MultiDiscrete):
        return [int(n) for n in space.nvec]
    return [2] * int(space.n)


@pytest.mark.parametrize("kind", KINDS)
def test_numpy_actor_with_masks_equals_the_masked_torch_distribution(kind: str) -> None:
    model = _model(_env(kind))
    actor = NumpyActor.from_policy(model.policy)
    assert actor is not None and collection_actor(model.policy) is not None  # the fast path applies
    generator = np.random.default_rng(0)
    obs = _observations(model, 64)
    masks = _random_masks(64, _dims(model), generator)
    distribution = model.policy.get_distribution(th.as_tensor(obs), action_masks=masks)
    # deterministic actions: equal
    np.testing.assert_array_equal(
        actor.mode(obs, masks).reshape(64, -1), distribution.get_actions(deterministic=True).numpy().reshape(64, -1)
    )
    # the probabilities the draws invert: equal to float precision (numpy's masked logits through softmax)
    logits = actor.distribution_params(obs)
    torch_logits = masked_action_family(distribution).params(distribution)[0].detach().numpy()  # normalised
    ours = np.where(masks, logits, -1e8)
    start = 0
    for n in _dims(model):
        block = ours[:, start : start + n]
        probs = np.exp(block - block.max(axis=1, keepdims=True))
        np.testing.assert_allclose(
            probs / probs.sum(axis=1, keepdims=True), np.exp(torch_logits[:, start : start + n]), atol=1e-6
        )
        start += n


@pytest.mark.parametrize("kind", KINDS)
def test_an_invalid_action_is_never_drawn_even_against_extreme_logits(kind: str) -> None:
    model = _model(_env(kind))
    with th.no_grad():  # the head strongly prefers the first action of every block
        model.policy.action_net.weight.zero_()
        model.policy.action_net.bias.fill_(-50.0)
        start = 0
        for n in _dims(model):
            model.policy.action_net.bias[start] = 50.0
            start += n
    actor = NumpyActor.from_policy(model.policy)
    assert actor is not None
    n_states = 2000
    masks = np.ones((n_states, sum(_dims(model))), dtype=bool)
    start = 0
    for n in _dims(model):
        masks[:, start] = False  # the preferred action is invalid everywhere
        start += n
    obs = _observations(model, n_states)
    actions = actor.sample(obs, np.random.default_rng(0), masks).reshape(n_states, -1)
    assert (actions != 0).all()
    assert (actor.mode(obs, masks).reshape(n_states, -1) != 0).all()


def test_discrete_observations_are_one_hot_encoded_as_sb3_does() -> None:
    env = gym.make("Taxi-v4")
    model = _model(env)
    spec = MlpSpec.actor(model.policy)
    assert spec is not None and spec.one_hot == (500,)
    obs = np.array([0, 17, 499, 3], dtype=np.int64)
    expected = preprocess_obs(th.as_tensor(obs), model.observation_space).flatten(1)
    th.testing.assert_close(spec.torch_input(th.as_tensor(obs, dtype=th.float32).view(-1, 1)), expected)
    np.testing.assert_array_equal(spec.numpy_input(obs), expected.numpy())
    multi = spaces.MultiDiscrete([3, 5])
    multi_obs = np.array([[0, 4], [2, 1]])
    spec_multi = MlpSpec(spec.linears, spec.tanh, one_hot=(3, 5))
    expected_multi = preprocess_obs(th.as_tensor(multi_obs), multi).flatten(1)
    th.testing.assert_close(spec_multi.torch_input(th.as_tensor(multi_obs, dtype=th.float32)), expected_multi)
    np.testing.assert_array_equal(spec_multi.numpy_input(multi_obs), expected_multi.numpy())
    # the actor and the critic on Taxi: the numpy actor's head equals the policy's
    actor = NumpyActor.from_policy(model.policy)
    assert actor is not None
    with th.no_grad():
        features = BasePolicy.extract_features(model.policy, th.as_tensor(obs), model.policy.pi_features_extractor)
        head = model.policy.action_net(model.policy.mlp_extractor.forward_actor(features)).numpy()
    np.testing.assert_allclose(actor.distribution_params(obs), head, rtol=1e-5, atol=1e-6)
    assert MlpSpec.critic(model.policy) is not None


@pytest.mark.parametrize("kind", KINDS)
def test_mlp_fisher_product_with_masks_equals_autograds_at_the_masked_distribution(kind: str) -> None:
    model = _model(_env(kind))
    generator = np.random.default_rng(1)
    obs = th.as_tensor(_observations(model, 40), dtype=th.float32)
    masks = th.as_tensor(_random_masks(40, _dims(model), generator))
    states = MaskedObs(obs, masks)
    distribution = model._policy_distribution(states)
    family = model._action_family(distribution)
    dist_params = family.params(distribution)
    fast = model._speed.fisher_product(model.policy, obs, model._actor_params, family, 0.1, masks)
    assert fast is not None
    reference = analytic_fisher_product(dist_params, model._actor_params, family, 0.1)
    assert model._fisher_product(states, dist_params, family) is not None
    for seed in range(3):
        vector = th.randn(sum(p.numel() for p in model._actor_params), generator=th.Generator().manual_seed(seed))
        th.testing.assert_close(fast(vector), reference(vector), rtol=1e-4, atol=1e-6)


def test_predict_with_masks_takes_the_numpy_actor_and_equals_the_policy() -> None:
    model = _model(_env("discrete"))
    env = make_vec_env(lambda: _env("discrete"), n_envs=1)
    obs = env.reset()
    masks = np.array(env.env_method("action_masks"))
    ours, _ = model.predict(obs, deterministic=True, action_masks=masks)
    theirs, _ = model.policy.predict(obs, deterministic=True, action_masks=masks)
    np.testing.assert_array_equal(ours, theirs)
    assert model._predictor is not None and model._predictor.actor is not None  # it went through the numpy actor
    drawn = np.array([model.predict(obs, action_masks=masks)[0] for _ in range(200)]).reshape(-1)
    assert masks.reshape(-1)[drawn].all()
