"""Drop-in checks: the situations sb3-contrib's own tests put RecurrentPPO and MaskablePPO in (policy layouts,
image and Dict observations, gSDE, evaluation helpers, masks switched off, callbacks, bootstrapping at time
limits), with RecurrentTRPO and MaskableTRPO standing in. Written here from the scenarios, short budgets: a user
who swaps sb3-contrib's class for ours with the same arguments (less PPO's own: ``n_epochs``, clipping) must
not meet an error, except where ours refuses on purpose (LSTM dropout), with a clear message."""

from __future__ import annotations

import copy
import random
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_contrib.common.envs import InvalidActionEnvDiscrete, InvalidActionEnvMultiBinary, InvalidActionEnvMultiDiscrete
from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback
from sb3_contrib.common.maskable.evaluation import evaluate_policy as masked_evaluate
from sb3_contrib.common.maskable.utils import is_masking_supported
from sb3_contrib.common.wrappers import ActionMasker
from stable_baselines3.common.callbacks import EventCallback, StopTrainingOnNoModelImprovement
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import FakeImageEnv, IdentityEnv
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnvWrapper

from sb3_trpo_ext import MaskableTRPO, RecurrentTRPO


class DictObservation(gym.ObservationWrapper):
    """The observation as the only entry of a ``Dict`` (for the MultiInput policies)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = spaces.Dict({"obs": env.observation_space})

    def observation(self, observation: Any) -> dict[str, Any]:
        return {"obs": observation}


# ------------------------------------------------------------------------------------------- recurrent
LAYOUTS = {
    "default": {},
    "separate-extractors": {"share_features_extractor": False},
    "shared-lstm": {"shared_lstm": True, "enable_critic_lstm": False},
    "no-critic-lstm": {"enable_critic_lstm": False, "lstm_hidden_size": 4, "n_lstm_layers": 2},
}


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
@pytest.mark.parametrize("policy", ["MlpLstmPolicy", "CnnLstmPolicy", "MultiInputLstmPolicy"])
def test_recurrent_layouts_on_every_observation_kind(policy: str, layout: dict[str, Any]) -> None:
    if policy == "CnnLstmPolicy":
        env: Any = FakeImageEnv(screen_height=40, screen_width=40, n_channels=3)
        layout = {**layout, "features_extractor_kwargs": {"features_dim": 16}}
    elif policy == "MultiInputLstmPolicy":
        env = make_vec_env("CartPole-v1", n_envs=1, wrapper_class=DictObservation, seed=0)
    else:
        env = "CartPole-v1"
    model = RecurrentTRPO(policy, env, n_steps=16, batch_size=16, seed=0, policy_kwargs=layout).learn(48)
    assert model._n_updates == 3
    evaluate_policy(model, model.get_env(), n_eval_episodes=2, warn=False)


def test_recurrent_gsde_and_multi_env_evaluation() -> None:
    RecurrentTRPO(
        "MlpLstmPolicy", "Pendulum-v1", n_steps=16, batch_size=16, seed=0, use_sde=True, sde_sample_freq=4
    ).learn(64)
    env = make_vec_env("CartPole-v1", n_envs=3, seed=0)
    model = RecurrentTRPO("MlpLstmPolicy", env, n_steps=16, batch_size=48, seed=0).learn(96)
    mean, _ = evaluate_policy(model, env, n_eval_episodes=5, warn=False)  # carries and resets LSTM states per env
    assert mean > 0


def test_recurrent_lstm_dropout_is_refused_with_its_reason() -> None:
    kwargs = {"lstm_kwargs": {"dropout": 0.5}, "n_lstm_layers": 2}
    with pytest.raises(ValueError, match=r"dropout=0\.5.*KL check random"):
        RecurrentTRPO("MlpLstmPolicy", "CartPole-v1", n_steps=16, batch_size=16, policy_kwargs=kwargs)


# ---------------------------------------------------------------------------------------------- masked
def invalid_action_env(space: str, n_invalid: int) -> gym.Env:
    if space == "discrete":
        return InvalidActionEnvDiscrete(dim=20, n_invalid_actions=n_invalid)
    if space == "multidiscrete":
        return InvalidActionEnvMultiDiscrete(dims=[2, 3], n_invalid_actions=n_invalid)
    return InvalidActionEnvMultiBinary(dims=3, n_invalid_actions=n_invalid)


@pytest.mark.parametrize("dict_obs", [False, True], ids=["flat", "dict"])
@pytest.mark.parametrize(("space", "some", "all_but_one"), [("discrete", 10, 19), ("multidiscrete", 1, 3),
                                                             ("multibinary", 1, 3)])  # fmt: skip
def test_masked_spaces_learn_and_evaluate(space: str, some: int, all_but_one: int, dict_obs: bool) -> None:
    wrap = DictObservation if dict_obs else (lambda env: env)
    policy = "MultiInputPolicy" if dict_obs else "MlpPolicy"
    env = wrap(invalid_action_env(space, some))
    model = MaskableTRPO(policy, env, n_steps=64, batch_size=64, seed=8).learn(128)
    masked_evaluate(model, env, n_eval_episodes=2, warn=False)
    # only the right action(s) left valid: even an untrained policy scores the maximum
    env = wrap(invalid_action_env(space, all_but_one))
    masked_evaluate(MaskableTRPO(policy, env, seed=8), env, n_eval_episodes=3, reward_threshold=99, warn=False)


class RecordSteps(VecEnvWrapper):
    """Keeps a copy of what each ``step`` returned (the algorithm adds its bootstrap to the rewards in place)."""

    def __init__(self, venv: Any) -> None:
        super().__init__(venv)
        self.steps: list[tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]] = []

    def reset(self) -> Any:
        return self.venv.reset()

    def step_wait(self) -> Any:
        obs, rewards, dones, infos = self.venv.step_wait()
        self.steps.append((rewards.copy(), dones.copy(), copy.deepcopy(infos)))
        return obs, rewards, dones, infos


def test_masked_bootstrapping_at_time_limits_and_cnn() -> None:
    """At a TimeLimit truncation the rollout's reward is the environment's plus gamma * V(terminal observation),
    as SB3 and MaskablePPO do; every other step keeps the environment's reward."""
    limits = (30, 23)
    env = RecordSteps(
        DummyVecEnv(
            [
                lambda limit=limit: gym.wrappers.TimeLimit(
                    InvalidActionEnvDiscrete(dim=20, n_invalid_actions=10), limit
                )
                for limit in limits
            ]
        )
    )
    model = MaskableTRPO("MlpPolicy", env, n_steps=64, batch_size=64, gamma=0.9, seed=8)
    _, callback = model._setup_learn(64 * len(limits), None)
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    buffer_rewards = model.rollout_buffer.rewards  # (n_steps, n_envs): the policy has not changed since
    assert len(env.steps) == 64
    truncations = 0
    for step, (rewards, dones, infos) in enumerate(env.steps):
        for env_idx, info in enumerate(infos):
            expected = float(rewards[env_idx])
            if dones[env_idx] and info.get("TimeLimit.truncated", False):
                assert (step + 1) % limits[env_idx] == 0  # the time limit ended this episode, not the task
                terminal_obs = model.policy.obs_to_tensor(info["terminal_observation"])[0]
                with th.no_grad():
                    terminal_value = model.policy.predict_values(terminal_obs).item()
                assert abs(model.gamma * terminal_value) > 1e-3  # a missing bootstrap cannot pass unnoticed
                expected += model.gamma * terminal_value
                truncations += 1
            assert buffer_rewards[step, env_idx] == pytest.approx(expected, rel=1e-5, abs=1e-6), (step, env_idx)
    assert truncations == 64 // limits[0] + 64 // limits[1]

    rng = random.Random(0)

    def one_random_invalid(env: gym.Env) -> list[bool]:
        invalid = rng.randrange(env.action_space.n)
        return [action != invalid for action in range(env.action_space.n)]

    image_env = ActionMasker(FakeImageEnv(), one_random_invalid)
    kwargs = {"features_extractor_kwargs": {"features_dim": 16}}
    model = MaskableTRPO("CnnPolicy", image_env, n_steps=64, batch_size=64, seed=32, policy_kwargs=kwargs).learn(128)
    masked_evaluate(model, image_env, n_eval_episodes=1, warn=False)


@pytest.mark.parametrize("n_envs", [1, 2])
def test_masks_switched_off_and_environments_without_masks(n_envs: int) -> None:
    env = InvalidActionEnvDiscrete(dim=20, n_invalid_actions=19)
    model = MaskableTRPO("MlpPolicy", env, seed=8)
    masked, _ = masked_evaluate(model, env, n_eval_episodes=5, reward_threshold=99, warn=False)
    unmasked, _ = masked_evaluate(model, env, n_eval_episodes=5, warn=False, use_masking=False)
    assert masked > unmasked
    no_masks = make_vec_env(IdentityEnv, n_envs=n_envs, env_kwargs={"dim": 2}, seed=0)
    assert not is_masking_supported(no_masks)
    model = MaskableTRPO("MlpPolicy", no_masks, n_steps=64, batch_size=64, seed=8)
    with pytest.raises(ValueError):
        model.learn(64)
    with pytest.raises(ValueError):
        masked_evaluate(model, no_masks, warn=False)
    model.learn(64, use_masking=False)
    masked_evaluate(model, no_masks, n_eval_episodes=2, warn=False, use_masking=False)


def test_masked_eval_callbacks(tmp_path: Any) -> None:
    def make_env() -> gym.Env:
        return InvalidActionEnvDiscrete(dim=20, n_invalid_actions=10)

    model = MaskableTRPO("MlpPolicy", make_env(), n_steps=64, batch_size=64, gamma=0.4, seed=32)
    logged = MaskableEvalCallback(make_env(), eval_freq=64, n_eval_episodes=2, warn=False, log_path=str(tmp_path))
    model.learn(128, callback=logged, progress_bar=True)
    assert (tmp_path / "evaluations.npz").exists()
    stop, new_best = StopTrainingOnNoModelImprovement(1, 2), EventCallback()
    chained = MaskableEvalCallback(Monitor(make_env()), eval_freq=64, n_eval_episodes=2,
                                   callback_after_eval=stop, callback_on_new_best=new_best)  # fmt: skip
    model.learn(128, callback=chained)
    assert new_best.n_calls > 0 and stop.n_calls >= new_best.n_calls
