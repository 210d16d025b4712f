"""MaskableTRPO: masked KL/Fisher/surrogate, masks respected everywhere, vine with masks, toy-text restore,
sb3-contrib's maskable evaluation, the Zoo keys (loading in a fresh process and the Zoo's masked evaluation,
train and enjoy: tests/integration/test_maskable_end_to_end.py)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
import yaml
from gymnasium import spaces

pytest.importorskip("sb3_contrib")

from sb3_contrib import MaskablePPO  # noqa: E402
from sb3_contrib.common.envs import (  # noqa: E402
    InvalidActionEnvDiscrete,
    InvalidActionEnvMultiBinary,
    InvalidActionEnvMultiDiscrete,
)
from sb3_contrib.common.maskable.buffers import MaskableRolloutBuffer  # noqa: E402
from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback  # noqa: E402
from sb3_contrib.common.maskable.distributions import make_masked_proba_distribution  # noqa: E402
from sb3_contrib.common.maskable.evaluation import evaluate_policy  # noqa: E402
from sb3_contrib.common.wrappers import ActionMasker  # noqa: E402
from stable_baselines3.common.buffers import RolloutBuffer  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.monitor import Monitor  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv  # noqa: E402

from sb3_trpo_ext import MaskableTRPO, sim_state  # noqa: E402
from sb3_trpo_ext.common.fisher import analytic_fisher_product, autograd_fisher_product  # noqa: E402
from sb3_trpo_ext.maskable.distributions import (  # noqa: E402
    MaskedObs,
    masked_action_family,
    masked_sample_with_noise,
)
from sb3_trpo_ext.maskable.policies import MaskableMlpPolicy  # noqa: E402
from sb3_trpo_ext.maskable.vine import MaskableVineRolloutBuffer, MaskedRolloutSet  # noqa: E402
from sb3_trpo_ext.maskable.wrappers import TaxiActionMasker, taxi_action_mask  # noqa: E402

SMALL = dict(n_steps=32, batch_size=32, n_critic_updates=2, cg_max_steps=5, seed=0)


def _invalid_env(kind: str, n_invalid: int = 3) -> gym.Env:
    if kind == "discrete":
        return InvalidActionEnvDiscrete(dim=8, n_invalid_actions=n_invalid)
    if kind == "multidiscrete":
        return InvalidActionEnvMultiDiscrete(dims=[3, 4], n_invalid_actions=n_invalid)
    return InvalidActionEnvMultiBinary(dims=4, n_invalid_actions=n_invalid)


def _is_valid(action: np.ndarray, mask: np.ndarray, space: spaces.Space) -> bool:
    """Whether one action is allowed by its mask (sb3-contrib's layout)."""
    mask = np.asarray(mask, dtype=bool).reshape(-1)
    action = np.asarray(action).reshape(-1).astype(int)
    if isinstance(space, spaces.Discrete):
        return bool(mask[action[0]])
    dims = list(space.nvec) if isinstance(space, spaces.MultiDiscrete) else [2] * int(space.n)
    offsets = np.concatenate([[0], np.cumsum(dims)[:-1]])
    return bool(all(mask[offset + a] for offset, a in zip(offsets, action, strict=True)))


class _RecordMasks(BaseCallback):
    """Records every collected (actions, masks) pair from the collection loop's locals."""

    def __init__(self) -> None:
        super().__init__()
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []

    def _on_step(self) -> bool:
        self.pairs.append((np.array(self.locals["actions"]), np.array(self.locals["action_masks"])))
        return True


# --------------------------------------------------------------------------------- masked KL and Fisher
def _masked_logits_and_masks(kind: str, n_states: int = 5) -> tuple[spaces.Space, th.Tensor, th.Tensor]:
    generator = th.Generator().manual_seed(0)
    space = {
        "discrete": spaces.Discrete(5),
        "multidiscrete": spaces.MultiDiscrete([3, 4]),
        "multibinary": spaces.MultiBinary(3),
    }[kind]
    width = {"discrete": 5, "multidiscrete": 7, "multibinary": 6}[kind]
    masks = th.rand(n_states, width, generator=generator) > 0.4
    dims = {"discrete": [5], "multidiscrete": [3, 4], "multibinary": [2, 2, 2]}[kind]
    start = 0
    for n in dims:  # at least one valid action per block
        masks[:, start] = True
        start += n
    return space, masks, th.randn(n_states, width, generator=generator) * 3


def _distribution(space: spaces.Space, logits: th.Tensor, masks: th.Tensor) -> Any:
    distribution = make_masked_proba_distribution(space).proba_distribution(logits)
    distribution.apply_masking(masks)
    return distribution


def _blocks(kind: str) -> list[int]:
    return {"discrete": [5], "multidiscrete": [3, 4], "multibinary": [2, 2, 2]}[kind]


@pytest.mark.parametrize("kind", ["discrete", "multidiscrete", "multibinary"])
def test_masked_kl_equals_kl_on_valid_support(kind: str) -> None:
    space, masks, logits_old = _masked_logits_and_masks(kind)
    logits_new = logits_old + th.randn_like(logits_old, generator=th.Generator().manual_seed(1))
    family = masked_action_family(_distribution(space, logits_old, masks))
    old = family.params(_distribution(space, logits_old, masks))
    new = family.params(_distribution(space, logits_new, masks))
    kl = family.kl(old, new)
    assert th.isfinite(kl).all() and th.isfinite(old[0]).all()
    expected = th.zeros(masks.shape[0], dtype=th.float64)
    for s in range(masks.shape[0]):
        start = 0
        for n in _blocks(kind):
            valid = masks[s, start : start + n]
            p = th.softmax(logits_old[s, start : start + n][valid].double(), dim=0)
            q = th.softmax(logits_new[s, start : start + n][valid].double(), dim=0)
            expected[s] += (p * (p.log() - q.log())).sum()
            start += n
    np.testing.assert_allclose(kl.double().numpy(), expected.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["discrete", "multidiscrete", "multibinary"])
@pytest.mark.parametrize("product", [analytic_fisher_product, autograd_fisher_product])
def test_masked_fisher_product_equals_explicit_fisher_on_valid_support(kind: str, product: Any) -> None:
    """F v for a linear policy ``logits = W x`` with masks, against ``mean_s J_s^T (diag p - p p^T) J_s`` built from
    the restricted (valid-support) softmax of each block."""
    space, masks, _ = _masked_logits_and_masks(kind)
    n_states, width = masks.shape
    generator = th.Generator().manual_seed(2)
    x = th.randn(n_states, 3, generator=generator)
    weight = th.nn.Parameter(th.randn(width, 3, generator=generator))
    distribution = _distribution(space, x @ weight.t(), masks)
    family = masked_action_family(distribution)
    fisher_v = product(family.params(distribution), [weight], family, 0.0)

    explicit = th.zeros(weight.numel(), weight.numel(), dtype=th.float64)
    w = weight.detach().double()
    for s in range(n_states):
        logits = x[s].double() @ w.t()
        start = 0
        for n in _blocks(kind):
            valid = th.nonzero(masks[s, start : start + n]).flatten() + start
            p = th.softmax(logits[valid], dim=0)
            m = th.diag(p) - th.outer(p, p)
            jacobian = th.zeros(len(valid), weight.numel(), dtype=th.float64)  # d logit_a / d W, rows a valid
            for row, a in enumerate(valid):
                jacobian[row, a * 3 : a * 3 + 3] = x[s].double()
            explicit += jacobian.t() @ m @ jacobian
            start += n
    explicit /= n_states
    for seed in range(3):
        v = th.randn(weight.numel(), generator=th.Generator().manual_seed(10 + seed))
        result = fisher_v(v)
        assert th.isfinite(result).all()
        np.testing.assert_allclose(result.double().numpy(), (explicit @ v.double()).numpy(), rtol=1e-4, atol=1e-6)


def test_no_nan_or_inf_with_masked_logits() -> None:
    """Extreme logits, a single valid action, masked actions: log-probs, KL, Fisher product and samples stay finite."""
    space = spaces.Discrete(4)
    masks = th.tensor([[True, False, False, False], [True, True, False, False], [False, False, True, True]])
    weight = th.nn.Parameter(th.tensor([[80.0], [-90.0], [0.0], [1e3]]))
    x = th.ones(3, 1)
    distribution = _distribution(space, x @ weight.t(), masks)
    family = masked_action_family(distribution)
    params = family.params(distribution)
    assert th.isfinite(params[0]).all()
    assert th.isfinite(family.kl(tuple(p.detach() for p in params), params)).all()
    assert th.isfinite(distribution.log_prob(th.tensor([0, 1, 2]))).all()
    result = analytic_fisher_product(params, [weight], family, 0.1)(th.ones(4))
    assert th.isfinite(result).all()
    samples = masked_sample_with_noise(distribution, th.rand(3, 4).clamp(1e-6, 1 - 1e-6))
    assert all(masks[i, a] for i, a in enumerate(samples.tolist()))


# ------------------------------------------------------------------------------------- smoke, masks
@pytest.mark.parametrize("kind", ["discrete", "multidiscrete", "multibinary"])
def test_smoke_and_masks_respected_in_collection_and_predict(kind: str) -> None:
    env = _invalid_env(kind)
    model = MaskableTRPO("MlpPolicy", env, **SMALL)
    assert isinstance(model.policy, MaskableMlpPolicy) and not model.policy.share_features_extractor
    assert isinstance(model.rollout_buffer, MaskableRolloutBuffer)
    recorder = _RecordMasks()
    model.learn(96, callback=recorder)
    assert model.num_timesteps == 96 and len(recorder.pairs) == 96
    for actions, masks in recorder.pairs:
        for action, mask in zip(actions, masks, strict=True):
            assert _is_valid(action, mask, env.action_space)
    assert np.isfinite(model.logger.name_to_value["train/kl"])
    # the buffer holds the masks the actions were drawn under
    np.testing.assert_array_equal(
        model.rollout_buffer.action_masks.reshape(96 - 64, -1),
        np.stack([m for _, m in recorder.pairs[64:]]).reshape(32, -1),
    )

    obs, _ = env.reset(seed=1)
    for _ in range(50):
        mask = np.asarray(env.action_masks())
        for deterministic in (False, True):
            action, _ = model.predict(obs, deterministic=deterministic, action_masks=mask)
            assert _is_valid(action, mask, env.action_space)
        obs, *_ = env.step(action)


def test_vec_env_and_evaluation_with_maskable_tools() -> None:
    env = make_vec_env(lambda: InvalidActionEnvDiscrete(dim=6, n_invalid_actions=3), n_envs=2, seed=0)
    eval_env = make_vec_env(lambda: InvalidActionEnvDiscrete(dim=6, n_invalid_actions=3), n_envs=1, seed=1)
    model = MaskableTRPO("MlpPolicy", env, **SMALL)
    callback = MaskableEvalCallback(eval_env, eval_freq=32, n_eval_episodes=2, warn=False)
    model.learn(128, callback=callback)
    assert np.isfinite(callback.last_mean_reward) and np.isfinite(callback.best_mean_reward)  # it evaluated
    mean, _ = evaluate_policy(model, eval_env, n_eval_episodes=2, warn=False)
    assert np.isfinite(mean)


def test_unmasked_learning_and_invalid_arguments() -> None:
    env = InvalidActionEnvDiscrete(dim=4, n_invalid_actions=1)
    MaskableTRPO("MlpPolicy", env, **SMALL).learn(32, use_masking=False)
    with pytest.raises(ValueError, match="use_sde"):
        MaskableTRPO("MlpPolicy", env, use_sde=True)
    with pytest.raises(ValueError, match="rollout_buffer_class"):
        MaskableTRPO("MlpPolicy", env, rollout_buffer_class=type("Plain", (RolloutBuffer,), {}), **SMALL)
    with pytest.raises(ValueError, match="action space"):
        MaskableTRPO("MlpPolicy", "Pendulum-v1")
    with pytest.raises(ValueError, match="action_masks"):
        MaskableTRPO("MlpPolicy", "CartPole-v1", **SMALL).learn(32)


def test_surrogate_states_carry_masks_through_sub_sampling() -> None:
    obs = MaskedObs(th.arange(10.0).view(5, 2), th.eye(5, dtype=th.bool))
    every_other = obs[slice(None, None, 2)]
    assert len(every_other) == 3
    np.testing.assert_array_equal(every_other.action_masks.numpy(), th.eye(5, dtype=th.bool)[::2].numpy())
    model = MaskableTRPO(
        "MlpPolicy", InvalidActionEnvDiscrete(dim=4, n_invalid_actions=2), sub_sampling_factor=2, **SMALL
    )
    model.learn(64)
    assert np.isfinite(model.logger.name_to_value["train/kl"])


# ------------------------------------------------------------------------------------- toy text, vine
@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("Taxi-v4", {}),
        ("Taxi-v4", {"is_rainy": True, "fickle_passenger": True}),
        ("FrozenLake-v1", {"is_slippery": True}),
        ("CliffWalking-v1", {}),
        ("CliffWalkingSlippery-v1", {}),
    ],
)
def test_toy_text_replays_bit_identically(env_id: str, kwargs: dict[str, Any]) -> None:
    env: gym.Env = Monitor(gym.make(env_id, **kwargs))
    if env_id.startswith("Taxi"):
        env = TaxiActionMasker(env)
    sim_state.check_restorable(env)
    env.reset(seed=3)
    env.step(1)
    snapshot = sim_state.get_state(env)
    actions = np.random.default_rng(0).integers(0, env.action_space.n, 250)

    def replay() -> list[Any]:
        out: list[Any] = []
        for action in actions:
            obs, reward, terminated, truncated, info = env.step(int(action))
            out.append((obs, reward, terminated, truncated, tuple(info.get("action_mask", ()))))
            if env_id.startswith("Taxi"):
                out.append(tuple(env.action_masks()))
            if terminated or truncated:
                out.append(("reset", env.reset()[0]))
        return out

    first = replay()
    for _ in range(2):
        sim_state.set_state(env, snapshot)
        assert replay() == first


class _MaskChecker(gym.Wrapper):
    """Counts steps taken with an action the Taxi mask forbids (restorable by the protocol, delegating below)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.steps = 0
        self.invalid = 0

    def step(self, action: Any) -> Any:
        self.steps += 1
        self.invalid += int(not taxi_action_mask(self.env)[int(action)])
        return self.env.step(action)

    def get_state(self) -> Any:
        return sim_state.get_state(self.env)

    def set_state(self, state: Any) -> None:
        sim_state.set_state(self.env, state)


@pytest.mark.parametrize("n_actions", [3, 6])  # 6: Taxi's actions enumerated (only the valid ones tried)
def test_vine_with_masks_on_taxi(n_actions: int) -> None:
    env = DummyVecEnv([lambda: TaxiActionMasker(_MaskChecker(gym.make("Taxi-v4")))])
    model = MaskableTRPO(
        "MlpPolicy", env, sampling="vine", vine_n_states=6, vine_n_actions=n_actions, vine_horizon=4, **SMALL
    )
    assert isinstance(model.rollout_buffer, MaskableVineRolloutBuffer)
    checker = env.envs[0].env
    checker.steps = checker.invalid = 0  # construction may replay a few steps (sim_state's restore check)
    model.learn(64)
    rollout_set = model.rollout_buffer.rollout_set
    assert isinstance(rollout_set, MaskedRolloutSet)
    assert model.vine_branch_steps > 0 and checker.steps == 64 + model.vine_branch_steps
    assert checker.invalid == 0  # trunk and every branch step: valid actions only
    masks = rollout_set.action_masks
    assert rollout_set.enumerated == (n_actions == 6)
    if rollout_set.enumerated:
        np.testing.assert_array_equal(rollout_set.tried.numpy(), masks.numpy())
    else:
        for state in range(masks.shape[0]):
            assert all(masks[state, a] for a in rollout_set.actions[state].tolist())
    branch_masks = model._vine.last_branch_masks
    assert branch_masks and all(mask.any() for _, mask in branch_masks)
    assert np.isfinite(model.logger.name_to_value["train/kl"])


# ------------------------------------------------------------------------------------- Zoo
def test_zoo_keys_and_taxi_blocks() -> None:
    pytest.importorskip("rl_zoo3")
    from sb3_trpo_ext.zoo import ZOO_ALGORITHMS, hyperparams_path
    from sb3_trpo_ext.zoo.config import _check_block

    assert ZOO_ALGORITHMS["trpo_mask"].algo_class is MaskableTRPO and ZOO_ALGORITHMS["trpo_mask"].masked
    assert ZOO_ALGORITHMS["ppo_mask"].algo_class is MaskablePPO and ZOO_ALGORITHMS["ppo_mask"].masked
    blocks = {
        key: yaml.safe_load(hyperparams_path(key).read_text(encoding="utf-8"))["Taxi-v4"]
        for key in ("trpo_mask", "ppo_mask")
    }
    for key, block in blocks.items():
        _check_block(key, block, key)
        assert block["env_wrapper"] == ["sb3_trpo_ext.maskable.wrappers.TaxiActionMasker"]
    assert blocks["trpo_mask"]["n_timesteps"] == blocks["ppo_mask"]["n_timesteps"]
    assert blocks["trpo_mask"]["n_envs"] == blocks["ppo_mask"]["n_envs"]


# ------------------------------------------------------------------------------------- learning
@pytest.mark.slow
def test_learns_invalid_action_env_discrete() -> None:
    """As sb3-contrib's MaskablePPO test: >= 90 of 100 reward over 20 episodes on InvalidActionEnvDiscrete."""
    env = InvalidActionEnvDiscrete(dim=20, n_invalid_actions=10)
    model = MaskableTRPO("MlpPolicy", env, n_steps=128, batch_size=64, seed=8, target_kl=0.05)
    model.learn(8_192)  # measured: 91 at 4k, 95 at 5k steps
    mean, _ = evaluate_policy(model, Monitor(env), n_eval_episodes=20, reward_threshold=90, warn=False)
    assert mean >= 90


def test_sb3_contrib_action_masker_wrapper() -> None:
    env = ActionMasker(gym.make("Taxi-v4"), taxi_action_mask)
    recorder = _RecordMasks()
    MaskableTRPO("MlpPolicy", env, **SMALL).learn(64, callback=recorder)
    assert all(_is_valid(a, m, env.action_space) for actions, masks in recorder.pairs for a, m in zip(actions, masks))
