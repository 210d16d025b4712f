"""The speed layer (:mod:`sb3_trpo_ext.fast`) against the plain algorithm (``accelerate=False``): on the same batch
the two routes take the same update, to float precision; each piece answers None where it does not apply."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from torch.nn.utils import parameters_to_vector

from sb3_trpo_ext import TRPO
from sb3_trpo_ext.fast import Accelerations

SMALL = dict(net_arch=[16, 16])


def _model(env_id: str, accelerate: bool) -> TRPO:
    env = make_vec_env(env_id, n_envs=2, seed=0)
    return TRPO(
        "MlpPolicy", env, n_steps=64, batch_size=32, n_critic_updates=3, policy_kwargs=SMALL, seed=0,
        accelerate=accelerate, device="cpu",
    )  # fmt: skip


def _collect(model: TRPO) -> None:
    _, callback = model._setup_learn(model.n_steps * model.n_envs)  # SB3's own set-up of a learn() call
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_the_plain_and_the_accelerated_update_agree_on_the_same_batch(env_id: str) -> None:
    fast, plain = _model(env_id, True), _model(env_id, False)
    assert th.equal(parameters_to_vector(fast.policy.parameters()), parameters_to_vector(plain.policy.parameters()))
    # each route's pieces: the plain one answers None everywhere
    family_obs = th.zeros(3, *fast.observation_space.shape)
    distribution = fast.policy.get_distribution(family_obs)
    family = fast._action_family(distribution)
    assert fast._speed.fisher_product(fast.policy, family_obs, fast._actor_params, family, 0.1) is not None
    assert plain._speed.fisher_product(plain.policy, family_obs, plain._actor_params, family, 0.1) is None
    assert fast._speed.critic(fast.policy)[0] is not None and plain._speed.critic(plain.policy)[0] is None
    assert fast._speed.collection_actor(fast.policy, True) is not None
    assert plain._speed.collection_actor(plain.policy, True) is None

    _collect(fast)
    plain.rollout_buffer = copy.deepcopy(fast.rollout_buffer)  # the same batch for both updates
    plain.set_logger(configure(None, []))
    before = parameters_to_vector(fast.policy.parameters()).detach().clone()
    for model in (fast, plain):
        np.random.seed(3)  # the critic's minibatch order (numpy's global generator, as SB3 draws it)
        model.train()
    after_fast = parameters_to_vector(fast.policy.parameters()).detach()
    after_plain = parameters_to_vector(plain.policy.parameters()).detach()
    assert not th.equal(after_fast, before)
    th.testing.assert_close(after_plain, after_fast, rtol=1e-4, atol=1e-5)
    for key in ("train/kl", "train/value_loss", "train/line_search_steps"):
        assert plain.logger.name_to_value[key] == pytest.approx(fast.logger.name_to_value[key], rel=1e-4), key


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_the_plain_collection_fills_the_buffer_as_sb3_computes_it(env_id: str) -> None:
    """The plain route's returns and advantages are SB3's own recursion; the accelerated GAE (float64 over the same
    buffer) agrees to float32 rounding."""
    plain = _model(env_id, False)
    _collect(plain)
    buffer = plain.rollout_buffer
    advantages = buffer.advantages.copy()
    last_values = th.as_tensor(buffer.values[-1])  # any values: both recursions get the same ones
    dones = np.zeros(buffer.n_envs, dtype=bool)
    buffer.compute_returns_and_advantage(last_values=last_values, dones=dones)
    reference = buffer.advantages.copy()
    Accelerations(True).compute_returns(buffer, last_values, dones)
    np.testing.assert_allclose(buffer.advantages, reference, rtol=1e-5, atol=1e-5)
    assert not np.array_equal(advantages, np.zeros_like(advantages))


def test_accelerate_is_saved_and_validated(tmp_path) -> None:
    model = _model("CartPole-v1", False)
    model.save(tmp_path / "plain.zip")
    loaded = TRPO.load(tmp_path / "plain.zip", device="cpu")
    assert loaded.accelerate is False and loaded._speed.enabled is False
    with pytest.raises(ValueError, match="accelerate"):
        TRPO("MlpPolicy", "CartPole-v1", accelerate="yes")
