"""Policy aliases, the actor/critic split, the lean critic chain and where the numpy actor declines."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from sb3_trpo_ext import TRPO
from sb3_trpo_ext.fast.critic import value_function
from sb3_trpo_ext.fast.mlp import MlpSpec
from sb3_trpo_ext.fast.numpy_actor import NumpyActor
from sb3_trpo_ext.trpo.policies import split_actor_critic


class _Env(gym.Env):
    def __init__(self, observation_space, action_space):
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed=None, options=None):
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


FLAT = spaces.Box(-1, 1, (2, 3), np.float32)


def _model(action_space, observation_space=FLAT, **kwargs):
    return TRPO("MlpPolicy", _Env(observation_space, action_space), n_steps=8, batch_size=8, seed=0, **kwargs)


def _critic_by_hand(policy, observation_space, obs):
    """V(obs) from the policy's critic modules, called one by one, after preprocessing done here (not SB3's
    ``preprocess_obs``): the independent reference for :func:`value_function`."""
    if isinstance(observation_space, spaces.Discrete):
        x = nn.functional.one_hot(obs.long(), int(observation_space.n)).float()
    elif isinstance(observation_space, spaces.MultiDiscrete):
        x = th.cat(
            [nn.functional.one_hot(obs[:, i].long(), int(n)).float() for i, n in enumerate(observation_space.nvec)], 1
        )
    else:
        x = obs.float()
    features = policy.vf_features_extractor(x)  # FlattenExtractor
    return policy.value_net(policy.mlp_extractor.value_net(features)).flatten()


@pytest.mark.parametrize(
    "observation_space, policy_kwargs, lean",
    [
        (FLAT, {}, True),
        (FLAT, {"activation_fn": nn.ReLU, "net_arch": dict(pi=[4], vf=[7, 5])}, True),
        (FLAT, {"activation_fn": nn.ELU}, False),  # falls back to predict_values
        (spaces.Discrete(5), {}, True),  # one-hot preprocessing, as SB3's preprocess_obs
        (spaces.MultiDiscrete([3, 4]), {}, True),
    ],
)
def test_value_function_equals_predict_values(observation_space, policy_kwargs, lean):
    policy = _model(spaces.Discrete(3), observation_space=observation_space, policy_kwargs=policy_kwargs).policy
    assert (MlpSpec.critic(policy) is not None) == lean
    # Count the calls of predict_values (instance attribute: looked up when the value function runs)
    predict_values_calls = []
    sb3_predict_values = policy.predict_values

    def counting_predict_values(obs):
        predict_values_calls.append(obs)
        return sb3_predict_values(obs)

    policy.predict_values = counting_predict_values
    values_of = value_function(policy)
    rng = np.random.default_rng(0)
    if isinstance(observation_space, spaces.Discrete):
        obs = th.as_tensor(rng.permutation(6) % observation_space.n)  # every state, one twice
    elif isinstance(observation_space, spaces.MultiDiscrete):
        obs = th.as_tensor([[0, 0], [1, 1], [2, 2], [0, 3], [1, 0], [2, 1]])  # six distinct states
    else:
        obs = th.as_tensor(rng.uniform(-1, 1, (6, *observation_space.shape)).astype(np.float32))
    with th.no_grad():
        values = values_of(obs)
        expected = _critic_by_hand(policy, observation_space, obs)
        _, forward_values, _ = policy(obs)  # SB3's forward(): actor and critic together
    assert values.shape == (6,)
    # the lean chain runs the same operations as the modules: the same values, bit for bit
    assert th.equal(values, expected)
    assert th.equal(values, forward_values.flatten())
    # lean rows never go through predict_values; fallback rows go through it (once per call)
    assert len(predict_values_calls) == (0 if lean else 1)
    # the values depend on the observation (not a constant that would match any reference)
    assert len(set(values.tolist())) >= 5


@pytest.mark.parametrize(
    "make",
    [
        lambda: _model(spaces.Box(-1, 1, (2,), np.float32), use_sde=True),  # gSDE
        lambda: _model(spaces.Discrete(2), policy_kwargs={"activation_fn": nn.ELU}),
        # an image: SB3 divides it by 255 before flattening
        lambda: _model(spaces.Discrete(2), observation_space=spaces.Box(0, 255, (8, 8, 1), np.uint8)),
    ],
)
def test_numpy_actor_declines_what_it_does_not_cover(make):
    assert NumpyActor.from_policy(make().policy) is None


@pytest.mark.parametrize("share", [False, True])
def test_actor_critic_split_covers_every_parameter_once(share):
    model = _model(spaces.Box(-1, 1, (2,), np.float32), policy_kwargs={"share_features_extractor": share})
    actor, critic = split_actor_critic(model.policy)
    ids = [id(p) for p in actor + critic]
    assert len(ids) == len(set(ids)) == len(list(model.policy.parameters()))
    assert any(p is model.policy.log_std for p in actor)
    assert all(any(p is q for q in critic) for p in model.policy.value_net.parameters())
    # the critic optimizer holds exactly the critic's parameters
    optimized = [p for group in model.policy.optimizer.param_groups for p in group["params"]]
    assert {id(p) for p in optimized} == {id(p) for p in critic}


def test_aliases_default_to_separate_feature_extractors():
    policy = _model(spaces.Discrete(2)).policy
    assert policy.share_features_extractor is False
    assert policy.pi_features_extractor is not policy.vf_features_extractor


def test_policy_without_actor_critic_structure_is_rejected():
    class Odd(ActorCriticPolicy):
        def _build_mlp_extractor(self):
            super()._build_mlp_extractor()
            self.mlp_extractor = nn.Linear(self.features_dim, 64)  # no policy_net / value_net
            self.mlp_extractor.latent_dim_pi = self.mlp_extractor.latent_dim_vf = 64

    with pytest.raises(ValueError, match="policy_net"):
        TRPO(Odd, _Env(FLAT, spaces.Discrete(2)), n_steps=8, batch_size=8)
