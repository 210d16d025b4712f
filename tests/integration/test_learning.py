"""Learning tests: fixed seeds, final model, 20 deterministic evaluation episodes.

CartPole seed 0 (single path and vine, ~15 s each) runs in the default test command; the rest are marked ``slow``
(``make test-slow``).
"""

import pytest
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_trpo_ext import TRPO


def _score(model, env_id):
    mean, _ = evaluate_policy(model, make_vec_env(env_id, seed=1000), n_eval_episodes=20, deterministic=True)
    return mean


def test_cartpole_default_hyperparameters_solve_within_100k_steps():
    model = TRPO("MlpPolicy", "CartPole-v1", seed=0).learn(100_000)
    assert _score(model, "CartPole-v1") >= 475


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_cartpole_other_seeds(seed):
    model = TRPO("MlpPolicy", "CartPole-v1", seed=seed).learn(100_000)
    assert _score(model, "CartPole-v1") >= 475


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_pendulum_zoo_hyperparameters_within_150k_steps(seed):
    """sb3-contrib's RL Zoo hyperparameters for Pendulum-v1 (1-D action: the true KL equals theirs)."""
    env = make_vec_env("Pendulum-v1", n_envs=2, seed=seed)
    model = TRPO(
        "MlpPolicy", env, n_steps=1024, gamma=0.9, n_critic_updates=15, use_sde=True, sde_sample_freq=4, seed=seed
    ).learn(150_000)
    assert _score(model, "Pendulum-v1") >= -400


def _vine_block(env_id):
    import yaml

    from sb3_trpo_ext.zoo import hyperparams_path

    block = dict(yaml.safe_load(hyperparams_path("trpo_vine").read_text())[env_id])
    for key in ("n_timesteps", "policy", "normalize"):
        block.pop(key, None)
    return block


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_cartpole_vine_default_hyperparameters_solve_within_100k_steps(seed):
    """Vine's defaults out of the box (64 rollout states x both actions, horizon 20, bootstrap)."""
    model = TRPO("MlpPolicy", "CartPole-v1", sampling="vine", seed=seed).learn(100_000)
    assert _score(model, "CartPole-v1") >= 475


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_pendulum_trpo_vine_block_within_100k_steps(seed):
    """The ``trpo_vine`` RL Zoo block for Pendulum-v1 (gSDE, 4 actions per state, horizon 20)."""
    block = _vine_block("Pendulum-v1")
    env = make_vec_env("Pendulum-v1", n_envs=block.pop("n_envs"), seed=seed)
    model = TRPO("MlpPolicy", env, sampling="vine", seed=seed, **block).learn(100_000)
    assert _score(model, "Pendulum-v1") >= -400
