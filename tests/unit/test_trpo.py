"""End-to-end behaviour of ``sb3_trpo_ext.TRPO``: learning on every action space and policy, the custom
rollout collection against SB3's reference loop, callbacks, seeding, hyperparameter validation,
Fisher-product variants, TensorBoard run names and the guard against non-finite advantages.

Everything is deliberately tiny (a few hundred steps, 16-unit networks) so the file runs in seconds.
"""

import math
import re
import warnings
from unittest import mock

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from gymnasium.wrappers import TimeLimit
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from torch.nn.utils import parameters_to_vector

from sb3_trpo_ext import TRPO

SMALL_NET = dict(net_arch=[16])
TRAIN_KEYS = (
    "train/kl",
    "train/policy_objective",
    "train/value_loss",
    "train/cg_iterations",
    "train/cg_residual",
    "train/line_search_steps",
    "train/is_line_search_success",
    "train/explained_variance",
)


# ----------------------------------------------------------------------------------------- environments
class ToyEnv(gym.Env):
    """Small env with a learnable signal: each step draws ``signal`` in {-1, 1}, shows it in the observation,
    and pays ``signal * sum(action)`` (or a constant 1 with ``constant_reward``). Episodes terminate after
    ``horizon`` steps when ``terminate``; otherwise they never end (wrap in ``TimeLimit`` to truncate)."""

    def __init__(self, action_space, obs_kind="box", horizon=20, terminate=True, constant_reward=False):
        self.action_space = action_space
        self.obs_kind = obs_kind
        if obs_kind == "box":
            self.observation_space = spaces.Box(-1, 1, (4,), np.float32)
        elif obs_kind == "image":
            self.observation_space = spaces.Box(0, 255, (36, 36, 3), np.uint8)
        elif obs_kind == "dict":
            self.observation_space = spaces.Dict(
                {"vec": spaces.Box(-1, 1, (3,), np.float32), "disc": spaces.Discrete(4)}
            )
        else:
            raise ValueError(obs_kind)
        self.horizon = horizon
        self.terminate = terminate
        self.constant_reward = constant_reward
        self._t = 0
        self._signal = 1.0

    def _obs(self):
        self._signal = float(self.np_random.choice([-1.0, 1.0]))
        if self.obs_kind == "box":
            noise = self.np_random.uniform(-1, 1, 3)
            return np.concatenate([[self._signal], noise]).astype(np.float32)
        if self.obs_kind == "image":
            base = 200 if self._signal > 0 else 50
            return (base + self.np_random.integers(-40, 40, (36, 36, 3))).astype(np.uint8)
        vec = np.concatenate([[self._signal], self.np_random.uniform(-1, 1, 2)]).astype(np.float32)
        return {"vec": vec, "disc": int(self.np_random.integers(4))}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        self._t += 1
        flat = np.asarray(action, dtype=np.float64).ravel()
        reward = 1.0 if self.constant_reward else self._signal * float(flat.sum())
        terminated = self.terminate and self._t >= self.horizon
        return self._obs(), reward, terminated, False, {}


def toy_vec_env(action_space, n_envs=1, seed=0, time_limit=None, **kwargs):
    def make():
        env = ToyEnv(action_space, **kwargs)
        return TimeLimit(env, time_limit) if time_limit else env

    return make_vec_env(make, n_envs=n_envs, seed=seed)


BOX2 = spaces.Box(-1, 1, (2,), np.float32)
MULTI_DISCRETE = spaces.MultiDiscrete([3, 4])
MULTI_BINARY = spaces.MultiBinary(3)


def actor_vector(model):
    return parameters_to_vector(model.policy.action_net.parameters()).detach().clone()


def flat_buffer_obs(buffer):
    """The rollout buffer's observations as tensors of shape (n_steps * n_envs, ...)."""

    def flat(array):
        return th.as_tensor(array.reshape(-1, *array.shape[2:]))

    if isinstance(buffer.observations, dict):
        return {key: flat(value) for key, value in buffer.observations.items()}
    return flat(buffer.observations)


def true_kl(old, new):
    """Mean over states of KL(old || new) summed over action dimensions, by torch.distributions.
    ``old`` and ``new`` are the torch distributions (``.distribution``) of SB3 distributions."""
    if isinstance(old, list):  # MultiCategorical: independent categoricals
        per_state = sum(th.distributions.kl_divergence(p, q) for p, q in zip(old, new))
    else:
        per_state = th.distributions.kl_divergence(old, new)
        if per_state.dim() > 1:  # Normal / Bernoulli: one term per action dimension
            per_state = per_state.sum(dim=-1)
    return per_state.mean().item()


class SnapshotPolicyAtRolloutEnd(BaseCallback):
    """Keeps the rollout's observations and a frozen copy of the policy's distribution at the end of the
    last rollout, i.e. the policy that the following train() starts from."""

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.obs = flat_buffer_obs(self.model.rollout_buffer)
        with th.no_grad():
            # SB3 distributions are mutable and shared by the policy: keep the torch distribution
            self.old_dist = self.model.policy.get_distribution(self.obs).distribution


# --------------------------------------------------------------------------------------- 1. smoke tests
CNN_KWARGS = dict(net_arch=[16], features_extractor_kwargs=dict(features_dim=16))
SMOKE_CASES = {
    "box": lambda: ("MlpPolicy", "Pendulum-v1", {}),
    "box_sde": lambda: ("MlpPolicy", "Pendulum-v1", dict(use_sde=True)),
    "box_sde_freq4": lambda: ("MlpPolicy", "Pendulum-v1", dict(use_sde=True, sde_sample_freq=4)),
    "discrete": lambda: ("MlpPolicy", "CartPole-v1", {}),
    "multidiscrete": lambda: ("MlpPolicy", toy_vec_env(MULTI_DISCRETE), {}),
    "multibinary": lambda: ("MlpPolicy", toy_vec_env(MULTI_BINARY), {}),
    "cnn": lambda: ("CnnPolicy", toy_vec_env(spaces.Discrete(3), obs_kind="image"), dict(policy_kwargs=CNN_KWARGS)),
    "cnn_autograd": lambda: (
        "CnnPolicy",
        toy_vec_env(spaces.Discrete(3), obs_kind="image"),
        dict(policy_kwargs=CNN_KWARGS, fisher="autograd"),
    ),
    "multi_input": lambda: (
        "MultiInputPolicy",
        toy_vec_env(BOX2, obs_kind="dict", time_limit=10, terminate=False),  # truncated episodes
        {},
    ),
}


@pytest.mark.parametrize("case", list(SMOKE_CASES))
def test_learn_smoke(case):
    policy, env, kwargs = SMOKE_CASES[case]()
    kwargs = {"policy_kwargs": SMALL_NET, **kwargs}
    target_kl = 0.01
    model = TRPO(policy, env, n_steps=64, batch_size=32, target_kl=target_kl, seed=0, **kwargs)
    before = actor_vector(model)
    snapshot = SnapshotPolicyAtRolloutEnd()
    model.learn(192, callback=snapshot)

    assert model.num_timesteps == 192
    assert model._n_updates == 3
    assert not th.equal(actor_vector(model), before), "the actor never moved"
    assert all(p.requires_grad for p in model.policy.parameters())

    for _ in range(5):
        obs = model.observation_space.sample()
        action, _ = model.predict(obs)
        assert model.action_space.contains(action), (action, model.action_space)
        det_action, _ = model.predict(obs, deterministic=True)
        assert model.action_space.contains(det_action)

    logged = model.logger.name_to_value
    for key in TRAIN_KEYS:
        assert key in logged, f"{key} missing from {sorted(logged)}"
    is_box = isinstance(model.action_space, spaces.Box)
    assert ("train/std" in logged) == is_box
    if is_box:
        assert logged["train/std"] > 0
    for key in TRAIN_KEYS:
        if key != "train/cg_residual" or logged["train/is_line_search_success"]:
            assert np.isfinite(logged[key]), key

    # The last update: logged KL is the true KL between the policies before and after it, within the region.
    with th.no_grad():
        new_dist = model.policy.get_distribution(snapshot.obs).distribution
    kl = true_kl(snapshot.old_dist, new_dist)
    assert logged["train/kl"] <= target_kl
    assert kl <= target_kl * (1 + 1e-4)
    assert kl == pytest.approx(logged["train/kl"], rel=1e-3, abs=1e-7)
    if logged["train/is_line_search_success"]:
        assert kl > 0
        assert 1 <= logged["train/line_search_steps"] <= model.line_search_max_iter
        assert 1 <= logged["train/cg_iterations"] <= model.cg_max_steps


def test_learn_larger_target_kl_takes_larger_steps():
    """The step is scaled to the trust-region boundary: the accepted KL grows with target_kl."""
    kls = []
    for target_kl in (0.002, 0.05):
        model = TRPO(
            "MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, target_kl=target_kl, policy_kwargs=SMALL_NET, seed=1
        )
        model.learn(64)
        assert model.logger.name_to_value["train/is_line_search_success"] == 1.0
        kls.append(model.logger.name_to_value["train/kl"])
        assert kls[-1] <= target_kl
    assert kls[1] > 5 * kls[0]


@pytest.mark.parametrize("fisher", ["analytic", "autograd"])
def test_update_keeps_the_policy_parameter_objects(fisher):
    model = TRPO(
        "CnnPolicy",
        toy_vec_env(spaces.Discrete(3), obs_kind="image"),
        n_steps=32,
        batch_size=32,
        fisher=fisher,
        policy_kwargs=CNN_KWARGS,
        seed=0,
    )
    before = list(model.policy.parameters())
    extractor_before = parameters_to_vector(model.policy.pi_features_extractor.parameters()).detach().clone()
    model.learn(32)
    after = list(model.policy.parameters())
    # the trust-region step moved the actor's CNN ...
    assert not th.equal(parameters_to_vector(model.policy.pi_features_extractor.parameters()), extractor_before)
    # ... in place: the module still holds the same trainable Parameter objects
    assert len(after) == len(before)
    for name, param in model.policy.named_parameters():
        assert isinstance(param, th.nn.Parameter) and param.requires_grad, name
    assert all(a is b for a, b in zip(after, before))


# ---------------------------------------------------------------------------------------- 2. n_envs > 1
def test_multiple_envs_round_up_timesteps():
    n_envs, n_steps, requested = 3, 32, 100
    env = make_vec_env("CartPole-v1", n_envs=n_envs, seed=0)
    model = TRPO("MlpPolicy", env, n_steps=n_steps, batch_size=32, policy_kwargs=SMALL_NET, seed=0)
    model.learn(requested)
    per_update = n_steps * n_envs
    assert model.num_timesteps == math.ceil(requested / per_update) * per_update == 192
    assert model._n_updates == 2
    assert (model.rollout_buffer.buffer_size, model.rollout_buffer.n_envs) == (n_steps, n_envs)


# -------------------------------------------------------- 3. rollouts: truncation and SB3's reference loop
class RecordTruncations(BaseCallback):
    def __init__(self):
        super().__init__()
        self.truncations = []  # (step, env index, terminal observation)
        self.step = 0

    def _on_step(self) -> bool:
        for env_idx, (done, info) in enumerate(zip(self.locals["dones"], self.locals["infos"])):
            if done and info.get("TimeLimit.truncated", False):
                self.truncations.append((self.step, env_idx, np.array(info["terminal_observation"])))
        self.step += 1
        return True


def _collect(model, total, callback=None, reference=False):
    _, callback = model._setup_learn(total, callback)
    collect = OnPolicyAlgorithm.collect_rollouts if reference else type(model).collect_rollouts
    assert collect(model, model.env, callback, model.rollout_buffer, model.n_steps)
    return model.rollout_buffer


def test_truncated_steps_bootstrap_with_terminal_value():
    gamma, n_steps, n_envs = 0.9, 16, 2
    env = toy_vec_env(BOX2, n_envs=n_envs, time_limit=5, terminate=False, constant_reward=True)
    model = TRPO("MlpPolicy", env, n_steps=n_steps, batch_size=32, gamma=gamma, policy_kwargs=SMALL_NET, seed=0)
    recorder = RecordTruncations()
    buffer = _collect(model, n_steps * n_envs, recorder)

    assert len(recorder.truncations) == n_envs * (n_steps // 5)  # the rollout crosses 3 time limits per env
    expected = np.ones((n_steps, n_envs), dtype=np.float32)
    with th.no_grad():
        for step, env_idx, terminal_obs in recorder.truncations:
            value = model.policy.predict_values(th.as_tensor(terminal_obs[None])).item()
            expected[step, env_idx] = 1.0 + gamma * value
    assert (expected != 1.0).sum() == len(recorder.truncations)
    np.testing.assert_allclose(buffer.rewards, expected, rtol=1e-6, atol=1e-6)
    # a truncation is followed by an episode start in the next step
    for step, env_idx, _ in recorder.truncations:
        if step + 1 < n_steps:
            assert buffer.episode_starts[step + 1, env_idx] == 1.0


REFERENCE_CASES = {
    "discrete": lambda: (
        "MlpPolicy",
        make_vec_env("CartPole-v1", n_envs=2, seed=0, env_kwargs=dict(max_episode_steps=12)),
        {},
    ),
    "box": lambda: ("MlpPolicy", toy_vec_env(BOX2, n_envs=2, time_limit=5, terminate=False), {}),
    "box_sde": lambda: (
        "MlpPolicy",
        toy_vec_env(BOX2, n_envs=2, time_limit=5, terminate=False),
        dict(use_sde=True, sde_sample_freq=4),
    ),
    "multidiscrete": lambda: ("MlpPolicy", toy_vec_env(MULTI_DISCRETE, n_envs=2, time_limit=5, terminate=False), {}),
    "multibinary": lambda: ("MlpPolicy", toy_vec_env(MULTI_BINARY, n_envs=2, time_limit=5, terminate=False), {}),
    "image": lambda: (
        "CnnPolicy",
        toy_vec_env(spaces.Discrete(3), n_envs=2, obs_kind="image", time_limit=5, terminate=False),
        dict(policy_kwargs=dict(net_arch=[16], features_extractor_kwargs=dict(features_dim=16))),
    ),
    "dict": lambda: (
        "MultiInputPolicy",
        toy_vec_env(BOX2, n_envs=2, obs_kind="dict", time_limit=5, terminate=False),
        {},
    ),
}


@pytest.mark.parametrize("case", list(REFERENCE_CASES))
def test_collect_rollouts_matches_sb3_reference(case):
    """Our batched collection fills the buffer exactly like SB3's per-step loop, truncations included."""
    n_steps = 16
    buffers, models = [], []
    for reference in (False, True):
        policy, env, kwargs = REFERENCE_CASES[case]()
        model = TRPO(
            policy,
            env,
            n_steps=n_steps,
            batch_size=32,
            gamma=0.9,
            seed=7,
            fast_collect=False,  # torch draws the actions, as in SB3's loop (the numpy path: test_numpy_actor.py)
            **{"policy_kwargs": SMALL_NET, **kwargs},
        )
        buffers.append(_collect(model, n_steps * 2, reference=reference))
        models.append(model)
    ours, ref = buffers

    # the rollout must actually contain truncations (and for CartPole, possibly terminations)
    n_truncated = (ref.episode_starts[1:] == 1).sum()
    assert n_truncated >= 2

    if isinstance(ref.observations, dict):
        assert ours.observations.keys() == ref.observations.keys()
        for key in ref.observations:
            np.testing.assert_array_equal(ours.observations[key], ref.observations[key])
    else:
        np.testing.assert_array_equal(ours.observations, ref.observations)
    np.testing.assert_array_equal(ours.actions, ref.actions)
    np.testing.assert_array_equal(ours.episode_starts, ref.episode_starts)
    for name in ("rewards", "values", "log_probs", "returns", "advantages"):
        np.testing.assert_allclose(getattr(ours, name), getattr(ref, name), rtol=1e-5, atol=1e-5, err_msg=name)
    assert models[0].num_timesteps == models[1].num_timesteps == n_steps * 2
    np.testing.assert_array_equal(models[0]._last_episode_starts, models[1]._last_episode_starts)
    if isinstance(models[0]._last_obs, dict):
        for key in models[0]._last_obs:
            np.testing.assert_array_equal(models[0]._last_obs[key], models[1]._last_obs[key])
    else:
        np.testing.assert_array_equal(models[0]._last_obs, models[1]._last_obs)


# -------------------------------------------------------------------------------------- 4. callbacks
class StopAfter(BaseCallback):
    def __init__(self, k):
        super().__init__()
        self.k = k

    def _on_step(self) -> bool:
        return self.n_calls < self.k


def test_callback_returning_false_stops_training():
    k, n_envs = 5, 2
    env = make_vec_env("CartPole-v1", n_envs=n_envs, seed=0)
    model = TRPO("MlpPolicy", env, n_steps=64, batch_size=32, policy_kwargs=SMALL_NET, seed=0)
    before = parameters_to_vector(model.policy.parameters()).detach().clone()
    stopper = StopAfter(k)
    model.learn(1000, callback=stopper)
    assert stopper.n_calls == k
    assert model.num_timesteps == k * n_envs
    assert model._n_updates == 0
    assert th.equal(parameters_to_vector(model.policy.parameters()), before)


# ------------------------------------------------------------------------------- 5. continued learning
def test_learn_continues_counting_without_reset():
    model = TRPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, policy_kwargs=SMALL_NET, seed=0)
    model.learn(128)
    assert (model.num_timesteps, model._n_updates) == (128, 2)
    model.learn(128, reset_num_timesteps=False)
    assert (model.num_timesteps, model._n_updates) == (256, 4)
    model.learn(64)  # a reset restarts the step counter but not the update counter
    assert (model.num_timesteps, model._n_updates) == (64, 5)


# -------------------------------------------------------------------------------------------- 6. seeds
def _trained_state(seed):
    model = TRPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, policy_kwargs=SMALL_NET, seed=seed)
    model.learn(128)
    return {k: v.clone() for k, v in model.policy.state_dict().items()}


def test_same_seed_is_bit_identical_and_different_seed_differs():
    first, second, other = _trained_state(3), _trained_state(3), _trained_state(4)
    assert first.keys() == second.keys() == other.keys()
    for key in first:
        assert th.equal(first[key], second[key]), key
    assert any(not th.equal(first[key], other[key]) for key in first)


# ------------------------------------------------------------------------------ 7. hyperparameter checks
BAD_HYPERPARAMETERS = [
    ("target_kl", 0),
    ("target_kl", -0.1),
    ("target_kl", float("nan")),
    ("target_kl", float("inf")),
    ("cg_max_steps", 0),
    ("cg_damping", -1),
    ("cg_rtol", -1),
    ("line_search_shrinking_factor", 0),
    ("line_search_shrinking_factor", 1),
    ("line_search_shrinking_factor", 1.5),
    ("line_search_max_iter", 0),
    ("n_critic_updates", 0),
    ("sub_sampling_factor", 0),
    ("fisher", "exact"),
    ("sampling", "tree"),
    ("vine_n_states", 0),
    ("vine_n_actions", 1),
    ("vine_horizon", 0),
    ("vine_bootstrap", "yes"),
    ("batch_size", 0),
    ("gamma", 1.5),
    ("gae_lambda", -0.1),
    ("learning_rate", -1),
]


@pytest.fixture(scope="module")
def two_cartpoles():
    return make_vec_env("CartPole-v1", n_envs=2, seed=0)


@pytest.mark.parametrize(("name", "value"), BAD_HYPERPARAMETERS, ids=[f"{n}={v}" for n, v in BAD_HYPERPARAMETERS])
def test_bad_hyperparameter_raises(two_cartpoles, name, value):
    kwargs = dict(n_steps=64, batch_size=32, policy_kwargs=SMALL_NET)
    kwargs[name] = value
    with pytest.raises(ValueError) as info:
        TRPO("MlpPolicy", two_cartpoles, **kwargs)
    message = str(info.value)
    assert name in message, message
    assert str(value) in message, message


def test_learning_rate_zero_is_legal_and_freezes_the_critic():
    model = TRPO(
        "MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, learning_rate=0.0, policy_kwargs=SMALL_NET, seed=0
    )
    critic_before = parameters_to_vector(model.policy.value_net.parameters()).detach().clone()
    actor_before = actor_vector(model)
    model.learn(64)
    assert th.equal(parameters_to_vector(model.policy.value_net.parameters()), critic_before)
    assert not th.equal(actor_vector(model), actor_before)


def test_load_validates_overridden_hyperparameters(tmp_path):
    model = TRPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, policy_kwargs=SMALL_NET, seed=0)
    model.save(tmp_path / "model.zip")
    with pytest.raises(ValueError, match=r"target_kl=-1"):
        TRPO.load(tmp_path / "model.zip", target_kl=-1)
    with pytest.raises(ValueError, match=r"fisher='exact'"):
        TRPO.load(tmp_path / "model.zip", fisher="exact")
    assert TRPO.load(tmp_path / "model.zip", target_kl=0.05).target_kl == 0.05


# ------------------------------------------------------------------------------------ 8. Fisher variants
@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
def test_analytic_and_autograd_fisher_give_the_same_update(env_id):
    results = {}
    for fisher in ("analytic", "autograd"):
        model = TRPO("MlpPolicy", env_id, n_steps=64, batch_size=32, fisher=fisher, policy_kwargs=SMALL_NET, seed=5)
        start = actor_vector(model)
        model.learn(64)
        assert model.logger.name_to_value["train/is_line_search_success"] == 1.0
        results[fisher] = (start, actor_vector(model), model.logger.name_to_value["train/kl"])
    assert th.equal(results["analytic"][0], results["autograd"][0])  # same initialisation
    assert not th.equal(results["analytic"][1], results["analytic"][0])
    th.testing.assert_close(results["analytic"][1], results["autograd"][1], atol=1e-5, rtol=0)
    assert results["analytic"][2] == pytest.approx(results["autograd"][2], rel=1e-3)


def test_sub_sampling_factor_changes_the_fisher_estimate():
    """The Fisher is estimated on every k-th state only, but the accepted step keeps the true KL on the
    *whole* batch within target_kl (README). With this seed the full step from the 4-state Fisher (k=16)
    lands at a whole-batch KL of about 7 * target_kl, and at about 1.1 * target_kl for k=4: a KL check on the
    sub-sample, or none, would accept it."""
    final, kl, steps = {}, {}, {}
    for factor in (1, 4, 16):
        model = TRPO(
            "MlpPolicy",
            "Pendulum-v1",
            n_steps=64,
            batch_size=32,
            sub_sampling_factor=factor,
            policy_kwargs=SMALL_NET,
            seed=3,
        )
        snapshot = SnapshotPolicyAtRolloutEnd()
        model.learn(64, callback=snapshot)  # one rollout, one update
        logged = model.logger.name_to_value
        assert logged["train/is_line_search_success"] == 1.0
        # the true KL (torch.distributions) between the policy before and after the update, on all 64 states
        with th.no_grad():
            new_dist = model.policy.get_distribution(snapshot.obs).distribution
        assert len(snapshot.obs) == 64
        kl[factor] = true_kl(snapshot.old_dist, new_dist)
        assert 0 < kl[factor] <= model.target_kl, (factor, kl[factor])
        assert logged["train/kl"] == pytest.approx(kl[factor], rel=1e-3)  # the logged KL is the whole batch's
        steps[factor] = logged["train/line_search_steps"]
        final[factor] = actor_vector(model)
    # the step from the 4-state Fisher leaves the whole-batch trust region: the line search had to shrink it
    assert steps[16] > 1, steps
    # the search direction comes from a Fisher on 16 (4) of the 64 states: a different step
    assert not th.allclose(final[1], final[4], atol=1e-6)
    assert not th.allclose(final[1], final[16], atol=1e-6)


# ----------------------------------------------------------------------------- 9. TensorBoard, progress bar
def test_tensorboard_run_names_do_not_collide_with_sb3_contrib(tmp_path):
    from sb3_contrib import TRPO as ContribTRPO

    TRPO(
        "MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, policy_kwargs=SMALL_NET, tensorboard_log=str(tmp_path)
    ).learn(256)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["TRPO_ext_1"]
    ContribTRPO(
        "MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, policy_kwargs=SMALL_NET, tensorboard_log=str(tmp_path)
    ).learn(128)
    TRPO(
        "MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, policy_kwargs=SMALL_NET, tensorboard_log=str(tmp_path)
    ).learn(64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["TRPO_1", "TRPO_ext_1", "TRPO_ext_2"]
    for run in tmp_path.iterdir():
        assert any(f.name.startswith("events.out.tfevents") for f in run.iterdir()), run


@pytest.mark.filterwarnings("ignore::tqdm.TqdmExperimentalWarning")
def test_progress_bar(capsys, monkeypatch):
    """``progress_bar=True`` reaches SB3's ProgressBarCallback: its bar is created for the run's timesteps,
    advanced to the end and drawn (rich prints the final bar when stdout is not a terminal, as under capsys)."""
    from stable_baselines3.common import callbacks

    bars = []

    class RecordedTqdm(callbacks.tqdm):  # tqdm.rich.tqdm, as SB3 imports it
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(callbacks, "tqdm", RecordedTqdm)
    model = TRPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, policy_kwargs=SMALL_NET, seed=0)
    model.learn(128, progress_bar=True)
    assert model.num_timesteps == 128
    assert len(bars) == 1
    (bar,) = bars
    assert bar.total == 128 and bar.n == 128
    out = capsys.readouterr().out
    assert re.search(r"\b128/128\b", out), out


# --------------------------------------------------------------------------- 10. non-finite advantages
class CorruptAdvantages(BaseCallback):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.model.rollout_buffer.advantages[0, 0] = self.value


@pytest.mark.parametrize(("bad", "normalize"), [(np.nan, True), (np.nan, False), (np.inf, True), (np.inf, False)])
def test_non_finite_advantages_never_reach_the_actor(bad, normalize):
    model = TRPO(
        "MlpPolicy",
        "Pendulum-v1",
        n_steps=64,
        batch_size=32,
        normalize_advantage=normalize,
        policy_kwargs=SMALL_NET,
        seed=0,
    )
    before = parameters_to_vector(model.policy.parameters()).detach().clone()
    with pytest.warns(
        UserWarning,
        match=r"update is skipped \(actor and critic\): non-finite advantages: 1 at \(step, env\) \[\(0, 0\)\]",
    ):
        model.learn(64, callback=CorruptAdvantages(bad))
    # the whole update is skipped: neither the actor nor the critic moves, nothing non-finite is written
    assert model._n_updates == 0
    assert th.equal(parameters_to_vector(model.policy.parameters()), before)
    assert model.logger.name_to_value["train/skipped_non_finite_batches"] == 1


def test_user_rollout_buffer_class_is_filled_through_its_own_add():
    from stable_baselines3.common.buffers import RolloutBuffer

    class CountingBuffer(RolloutBuffer):
        def __init__(self, *args, tag=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.tag, self.adds = tag, 0

        def add(self, *args, **kwargs):
            self.adds += 1
            super().add(*args, **kwargs)

    model = TRPO(
        "MlpPolicy",
        "CartPole-v1",
        n_steps=32,
        batch_size=32,
        rollout_buffer_class=CountingBuffer,
        rollout_buffer_kwargs={"tag": "mine"},
        policy_kwargs=SMALL_NET,
        seed=0,
    ).learn(64)
    assert isinstance(model.rollout_buffer, CountingBuffer) and model.rollout_buffer.tag == "mine"
    assert model.rollout_buffer.adds == 64  # two rollouts of 32 steps
    assert model.rollout_buffer.full


def test_critic_optimizer_honours_policy_kwargs_and_learning_rate_schedule():
    model = TRPO(
        "MlpPolicy",
        "CartPole-v1",
        n_steps=32,
        batch_size=16,
        learning_rate=lambda progress_remaining: 1e-2 * progress_remaining,
        policy_kwargs=dict(net_arch=[8], optimizer_class=th.optim.SGD, optimizer_kwargs={"momentum": 0.5}),
        seed=0,
    )
    optimizer = model.policy.optimizer
    assert isinstance(optimizer, th.optim.SGD) and optimizer.param_groups[0]["momentum"] == 0.5
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in model._critic_params}
    learning_rates = []
    train = model.train

    def recording_train():
        train()
        learning_rates.append(optimizer.param_groups[0]["lr"])

    model.train = recording_train
    model.learn(128)  # updates at progress_remaining 0.75, 0.5, 0.25, 0
    assert learning_rates == pytest.approx([7.5e-3, 5e-3, 2.5e-3, 0.0])


def test_adam_uses_the_fused_kernel_unless_the_user_chose():
    default = TRPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, policy_kwargs=SMALL_NET)
    assert default.policy.optimizer.param_groups[0]["fused"] is True
    chosen = TRPO(
        "MlpPolicy",
        "CartPole-v1",
        n_steps=32,
        batch_size=32,
        policy_kwargs=dict(net_arch=[16], optimizer_kwargs={"foreach": False}),
    )
    assert not chosen.policy.optimizer.param_groups[0]["fused"]
    assert chosen.policy.optimizer.param_groups[0]["foreach"] is False


@pytest.mark.parametrize("validate", [True, False])
def test_torch_distribution_validation_setting_is_restored(validate):
    """Our policy calls switch torch.distributions' argument validation off; the user's setting comes back."""
    from torch.distributions import Distribution

    previous = Distribution._validate_args
    Distribution.set_default_validate_args(validate)
    try:
        model = TRPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, policy_kwargs=SMALL_NET, seed=0)
        model.learn(64)
        assert Distribution._validate_args is validate

        def failing_update(*args, **kwargs):  # raises inside train()'s validation-free block
            assert Distribution._validate_args is False
            raise RuntimeError("boom")

        with (
            mock.patch("sb3_trpo_ext.trpo.trpo.natural_gradient_step", failing_update),
            pytest.raises(RuntimeError, match="boom"),
        ):
            model.learn(64)
        assert Distribution._validate_args is validate
    finally:
        Distribution.set_default_validate_args(previous)


# ------------------------------------------------------------------------------------------------- GAE
def test_gae_equals_sb3s_compute_returns_and_advantage():
    from stable_baselines3.common.buffers import RolloutBuffer

    from sb3_trpo_ext.fast.rollout import compute_gae

    rng = np.random.default_rng(0)
    buffers = [
        RolloutBuffer(50, spaces.Box(-1, 1, (2,)), spaces.Discrete(2), n_envs=3, gamma=0.97, gae_lambda=0.9)
        for _ in range(2)
    ]
    rewards, values = rng.normal(size=(50, 3)) * 5, rng.normal(size=(50, 3)) * 10
    starts = rng.random((50, 3)) < 0.1
    for buffer in buffers:
        buffer.rewards[:], buffer.values[:], buffer.episode_starts[:] = rewards, values, starts
    last_values, dones = th.as_tensor(rng.normal(size=3), dtype=th.float32), np.array([True, False, False])
    buffers[0].compute_returns_and_advantage(last_values, dones)
    compute_gae(buffers[1], last_values.numpy(), dones)
    np.testing.assert_allclose(buffers[1].advantages, buffers[0].advantages, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(buffers[1].returns, buffers[0].returns, rtol=1e-5, atol=1e-5)
    assert np.abs(buffers[0].advantages).max() > 1  # not trivially zero


# ------------------------------------------------------------------------------ errors that say what to do
def test_an_unknown_policy_name_lists_the_aliases_and_names_the_class_that_takes_it():
    with pytest.raises(ValueError, match=r"'MlpPolicyy' for TRPO: choose one of \['CnnPolicy', 'MlpPolicy', 'Multi"):
        TRPO("MlpPolicyy", "CartPole-v1")
    with pytest.raises(ValueError, match=r"'MlpLstmPolicy' is a policy of sb3_trpo_ext.RecurrentTRPO"):
        TRPO("MlpLstmPolicy", "CartPole-v1")
    from sb3_trpo_ext import RecurrentTRPO

    with pytest.raises(ValueError, match=r"'MlpPolicy' is a policy of sb3_trpo_ext.TRPO"):
        RecurrentTRPO("MlpPolicy", "CartPole-v1")


@pytest.mark.parametrize("total_timesteps", [-5, 2.5, "100", True])
def test_learn_refuses_a_bad_number_of_timesteps(total_timesteps):
    model = TRPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32)
    with pytest.raises(ValueError, match=re.escape(f"Invalid total_timesteps={total_timesteps!r}: must be an integer")):
        model.learn(total_timesteps)
    assert model.num_timesteps == 0
    model.learn(32.0)  # a whole float (1e5 in user code) is accepted, as SB3 accepts it
    assert model.num_timesteps == 32


def test_an_environment_with_action_masks_points_to_maskable_trpo():
    from sb3_contrib.common.envs import InvalidActionEnvDiscrete

    with pytest.warns(UserWarning, match="action_masks\\(\\), which TRPO ignores .* use sb3_trpo_ext.MaskableTRPO"):
        TRPO("MlpPolicy", InvalidActionEnvDiscrete(dim=4, n_invalid_actions=1))
    from sb3_trpo_ext import MaskableTRPO

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # MaskableTRPO applies them: no warning
        MaskableTRPO("MlpPolicy", InvalidActionEnvDiscrete(dim=4, n_invalid_actions=1), n_steps=32, batch_size=32)
