"""Where users swap PPO or sb3-contrib's TRPO for ours, SB3's conventions hold: custom policies are honoured
during collection, minibatch sizes warn instead of failing, SB3's errors for bad parameters and paths, and a
batch with non-finite data is skipped instead of poisoning the weights."""

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.distributions import CategoricalDistribution
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from torch.nn.utils import parameters_to_vector

from sb3_trpo_ext import TRPO
from sb3_trpo_ext.fast.mlp import uses_sb3_methods
from sb3_trpo_ext.fast.numpy_actor import NumpyActor
from sb3_trpo_ext.trpo.policies import MlpPolicy

SMALL_NET = dict(net_arch=[16])


# ------------------------------------------------------------------------------------- custom policies
class ConstantValuePolicy(MlpPolicy):
    """Overrides ``forward`` only: its values are a constant 7, which only its own forward returns."""

    forward_calls = 0

    def forward(self, obs, deterministic=False):
        type(self).forward_calls += 1
        actions, values, log_probs = super().forward(obs, deterministic)
        return actions, th.full_like(values, 7.0), log_probs


class ShiftedLogitsPolicy(MlpPolicy):
    """A custom action distribution: logits pushed towards action 1 (CartPole), in every method that builds it."""

    def _get_action_dist_from_latent(self, latent_pi):
        assert isinstance(self.action_dist, CategoricalDistribution)
        return self.action_dist.proba_distribution(action_logits=self.action_net(latent_pi) + th.tensor([0.0, 3.0]))


def _collect(model, reference):
    _, callback = model._setup_learn(model.n_steps * model.n_envs, None)
    collect = OnPolicyAlgorithm.collect_rollouts if reference else type(model).collect_rollouts
    assert collect(model, model.env, callback, model.rollout_buffer, model.n_steps)
    return model.rollout_buffer


@pytest.mark.parametrize("policy", [ConstantValuePolicy, ShiftedLogitsPolicy])
def test_custom_policy_is_collected_through_its_own_methods(policy):
    buffers = []
    for reference in (False, True):
        env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
        model = TRPO(policy, env, n_steps=32, batch_size=32, policy_kwargs=SMALL_NET, seed=3)
        assert NumpyActor.from_policy(model.policy) is None and not uses_sb3_methods(model.policy)
        buffers.append(_collect(model, reference))
    ours, sb3 = buffers
    for name in ("observations", "actions", "episode_starts"):
        np.testing.assert_array_equal(getattr(ours, name), getattr(sb3, name), err_msg=name)
    for name in ("rewards", "values", "log_probs", "returns", "advantages"):
        np.testing.assert_allclose(getattr(ours, name), getattr(sb3, name), rtol=1e-5, atol=1e-5, err_msg=name)
    if policy is ConstantValuePolicy:
        assert (ours.values == 7.0).all()
    else:  # the shifted logits make action 1 far more frequent than the untrained policy's ~50%
        assert ours.actions.mean() > 0.8


def test_overriding_forward_is_called_each_step():
    ConstantValuePolicy.forward_calls = 0
    TRPO(ConstantValuePolicy, "CartPole-v1", n_steps=32, batch_size=32, policy_kwargs=SMALL_NET, seed=0).learn(32)
    assert ConstantValuePolicy.forward_calls == 32


# ------------------------------------------------------------------------------------------ batch size
def test_batch_size_larger_than_the_rollout_warns_and_uses_one_minibatch():
    with pytest.warns(UserWarning, match=r"batch_size=128 is larger than the rollout .* = 64\): .* one minibatch"):
        model = TRPO("MlpPolicy", "CartPole-v1", n_steps=64, policy_kwargs=SMALL_NET, seed=0)
    steps = []
    step = model.policy.optimizer.step
    model.policy.optimizer.step = lambda *a, **k: (steps.append(1), step(*a, **k))[1]
    model.learn(64)
    assert len(steps) == model.n_critic_updates  # one minibatch per epoch


def test_batch_size_not_dividing_the_rollout_gives_sb3s_warning():
    with pytest.warns(UserWarning, match=r"mini-batch size of 48.*truncated mini-batch of size 16"):
        TRPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=48, policy_kwargs=SMALL_NET)


# ------------------------------------------------------------------------------------ set_parameters
@pytest.fixture(scope="module")
def small_model():
    return TRPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, policy_kwargs=SMALL_NET, seed=0)


def test_set_parameters_with_missing_objects_raises_sb3s_error(small_model):
    params = small_model.get_parameters()
    del params["policy"]
    with pytest.raises(ValueError, match=r"Names of parameters do not match agents' parameters.*'policy'"):
        small_model.set_parameters(params, exact_match=True)


def test_set_parameters_with_an_edited_optimizer_state_names_it(small_model):
    params = small_model.get_parameters()
    params["policy.optimizer"] = {"state": {}}
    with pytest.raises(ValueError, match=r"params\['policy.optimizer'\].*'param_groups'"):
        small_model.set_parameters(params, exact_match=True)


def test_set_parameters_round_trip_still_works(small_model):
    """What get_parameters returned comes back with set_parameters: every weight and the critic's optimizer
    state (moments and learning rate), after all of them were changed in between."""
    small_model.learn(32)  # the critic's optimizer has moments to restore
    saved = copy.deepcopy(small_model.get_parameters())  # state dicts share storage with the live tensors
    with th.no_grad():
        for param in small_model.policy.parameters():
            param.add_(1.0)
    optimizer = small_model.policy.optimizer
    for group in optimizer.param_groups:
        group["lr"] *= 10
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, th.Tensor) and value.is_floating_point():
                value.add_(1.0)
    small_model.set_parameters(saved, exact_match=True)
    restored = small_model.get_parameters()
    assert restored.keys() == saved.keys() == {"policy", "policy.optimizer"}
    assert restored["policy"].keys() == saved["policy"].keys()
    for name, tensor in saved["policy"].items():
        assert th.equal(restored["policy"][name], tensor), name
    restored_opt, saved_opt = restored["policy.optimizer"], saved["policy.optimizer"]
    assert restored_opt["param_groups"] == saved_opt["param_groups"]
    assert restored_opt["state"].keys() == saved_opt["state"].keys() and saved_opt["state"]
    for index, state in saved_opt["state"].items():
        for key, value in state.items():
            assert th.equal(th.as_tensor(restored_opt["state"][index][key]), th.as_tensor(value)), (index, key)


# ------------------------------------------------------------------------------------------ load paths
@pytest.mark.parametrize("name", ["does_not_exist.zip", "does_not_exist"])
def test_load_of_a_missing_file_names_the_path_given(tmp_path, name):
    path = tmp_path / name
    with pytest.raises(FileNotFoundError) as info:
        TRPO.load(str(path))
    assert str(info.value) == f"No such file: {str(path)!r} (also tried {str(path) + '.zip'!r})"


# ------------------------------------------------------------------------------------------ bad data
class NanRewardOnce(gym.Wrapper):
    """Returns ``nan`` as the reward once, at the given global step."""

    def __init__(self, env, at_step):
        super().__init__(env)
        self.at_step, self.steps = at_step, 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        return obs, (float("nan") if self.steps == self.at_step else reward), terminated, truncated, info


class WeightsStayFinite:
    """Checks after every update that every weight of the policy is finite."""

    def __init__(self, model):
        self.model, self.checks = model, 0
        train = model.train

        def checked_train():
            train()
            assert all(th.isfinite(p).all() for p in model.policy.parameters())
            self.checks += 1

        model.train = checked_train


def test_one_nan_reward_skips_one_update_and_training_goes_on():
    env = make_vec_env("Pendulum-v1", n_envs=1, seed=0, wrapper_class=NanRewardOnce, wrapper_kwargs=dict(at_step=300))
    model = TRPO("MlpPolicy", env, n_steps=256, batch_size=64, policy_kwargs=SMALL_NET, seed=0)
    checker = WeightsStayFinite(model)
    with pytest.warns(
        UserWarning, match=r"skipped \(actor and critic\): non-finite rewards: 1 at \(step, env\) \[\(43, 0\)\]"
    ):
        model.learn(512)
    assert checker.checks == 2 and model._n_updates == 1  # the second rollout held the NaN
    model.learn(512, reset_num_timesteps=False)
    assert model._n_updates == 3
    assert all(th.isfinite(p).all() for p in model.policy.parameters())


@pytest.mark.slow
def test_pendulum_keeps_improving_after_a_nan_reward():
    env = make_vec_env("Pendulum-v1", n_envs=1, seed=0, wrapper_class=NanRewardOnce, wrapper_kwargs=dict(at_step=300))
    model = TRPO(
        "MlpPolicy",
        env,
        n_steps=1024,
        batch_size=128,
        gae_lambda=0.95,
        gamma=0.9,
        target_kl=0.02,
        use_sde=True,
        sde_sample_freq=4,
        learning_rate=1e-3,
        policy_kwargs=dict(net_arch=[64, 64]),
        seed=0,
    )
    checker = WeightsStayFinite(model)
    with pytest.warns(UserWarning, match="non-finite rewards"):
        model.learn(100_000)
    assert checker.checks > 90
    mean_reward, _ = evaluate_policy(model, gym.make("Pendulum-v1"), n_eval_episodes=10, deterministic=True)
    assert mean_reward >= -400


def test_non_finite_critic_regression_restores_the_critic():
    model = TRPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, policy_kwargs=SMALL_NET, seed=0)
    model.learn(64)
    critic_before = [p.detach().clone() for p in model._critic_params]
    batch = next(model.rollout_buffer.get(batch_size=None))
    huge = batch._replace(returns=th.full_like(batch.returns, 3e38))  # the squared error overflows to inf
    with pytest.warns(UserWarning, match="critic's regression produced a non-finite loss"):
        model._update_critic(huge)
    for param, before in zip(model._critic_params, critic_before):
        assert th.equal(param, before)
    assert parameters_to_vector(model.policy.parameters()).isfinite().all()
