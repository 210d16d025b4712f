"""Vine sampling: the trunk is untouched by branching, common random numbers, the vine surrogate against closed
forms, environment checks at construction, VecNormalize, Monitor files, save/load (in a fresh process:
tests/integration/test_vine_end_to_end.py) and smoke runs."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import CategoricalDistribution, DiagGaussianDistribution
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecFrameStack, VecNormalize
from torch.nn.utils import parameters_to_vector

from sb3_trpo_ext import TRPO
from sb3_trpo_ext.common.vine import BranchRunner, RolloutSet, VineRolloutBuffer
from sb3_trpo_ext.sim_state import UnrestorableEnvError

SMALL = dict(n_steps=64, batch_size=64, policy_kwargs=dict(net_arch=[16]))
VINE = dict(sampling="vine", vine_n_states=8, vine_n_actions=3, vine_horizon=5)


class NoisyEnv(gym.Env):
    """A custom environment implementing the restore protocol: random rewards from its own ``np_random`` (so
    common random numbers matter), a signal in the observation, termination after ``horizon`` steps."""

    def __init__(self, action_space=None, horizon=12):
        self.action_space = action_space or spaces.Box(-1, 1, (2,), np.float32)
        self.observation_space = spaces.Box(-5, 5, (3,), np.float32)
        self.horizon = horizon
        self.t, self.signal = 0, 1.0

    def _obs(self):
        self.signal = float(self.np_random.choice([-1.0, 1.0]))
        return np.array([self.signal, *self.np_random.normal(size=2)], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        reward = self.signal * float(np.sum(action)) + float(self.np_random.normal())
        return self._obs(), reward, self.t >= self.horizon, False, {}

    def get_state(self):
        return self.t, self.signal, self.np_random.bit_generator.state

    def set_state(self, state):
        self.t, self.signal, rng_state = state
        self.np_random.bit_generator.state = rng_state


class NoProtocolEnv(NoisyEnv):
    get_state = None
    set_state = None


def noisy_vec_env(n_envs=2, seed=0, **kwargs):
    return make_vec_env(lambda: NoisyEnv(**kwargs), n_envs=n_envs, seed=seed)


# ------------------------------------------------------------------------------------- the trunk
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1", "noisy"])
def test_trunk_with_branches_equals_the_trunk_without(env_id):
    """Two rollouts without an update between them: the branches leave the trunk, the step counter and the
    episode statistics exactly as single path has them."""
    results = []
    for sampling in ("single_path", "vine"):
        env = noisy_vec_env() if env_id == "noisy" else make_vec_env(env_id, n_envs=2, seed=0)
        model = TRPO("MlpPolicy", env, seed=1, **SMALL, **{**VINE, "sampling": sampling})
        _, callback = model._setup_learn(10_000, None)
        trunks = []
        for _ in range(2):
            assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
            buffer = model.rollout_buffer
            trunks.append((buffer.observations.copy(), buffer.actions.copy(), buffer.rewards.copy()))
        episodes = [(info["r"], info["l"]) for info in model.ep_info_buffer]
        results.append((trunks, model.num_timesteps, episodes, model.rollout_buffer))
    (single, single_steps, single_episodes, _), (vine, vine_steps, vine_episodes, vine_buffer) = results
    for a, b in zip(single, vine):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    assert single_steps == vine_steps == 2 * 64 * 2
    assert single_episodes == vine_episodes
    assert isinstance(vine_buffer, VineRolloutBuffer) and vine_buffer.rollout_set.q_values.shape[0] == 8


def test_branch_steps_are_logged_not_counted():
    model = TRPO("MlpPolicy", "CartPole-v1", seed=0, **SMALL, **VINE)
    _, callback = model._setup_learn(1000, None)
    per_update = []
    for _ in range(2):
        model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
        per_update.append(model.logger.name_to_value["rollout/vine_branch_steps"])
    assert model.num_timesteps == 128
    assert all(0 < n <= 8 * 2 * 5 for n in per_update)  # CartPole: K = 2 actions, every one tried
    assert model.logger.name_to_value["rollout/vine_branch_steps_total"] == sum(per_update) == model.vine_branch_steps
    assert model.logger.name_to_value["rollout/vine_q_std"] >= 0


def test_monitor_files_hold_trunk_episodes_only(tmp_path):
    env = make_vec_env(lambda: NoisyEnv(horizon=3), n_envs=1, seed=0, monitor_dir=str(tmp_path))
    model = TRPO("MlpPolicy", env, seed=0, **SMALL, **{**VINE, "vine_horizon": 10})
    model.learn(128)
    rows = (tmp_path / "0.monitor.csv").read_text().strip().splitlines()[2:]  # two header lines
    assert len(rows) == 128 // 3  # only the trunk's episodes, though every branch ended one
    assert model.vine_branch_steps > 0


# ------------------------------------------------------------------------------ common random numbers
def _q_of_one_action_tried_k_times(independent_noise):
    model = TRPO("MlpPolicy", noisy_vec_env(), seed=0, **SMALL, **{**VINE, "vine_horizon": 8})
    sampler = model._vine
    initial_actions, uniforms = sampler._initial_actions, sampler._uniforms

    def same_action_k_times(distribution, n_states, device):
        actions = initial_actions(distribution, n_states, device)
        return actions[:, :1].expand_as(actions).clone()

    sampler._initial_actions = same_action_k_times
    if independent_noise:  # one noise row per branch instead of one per state
        sampler._branch_noise = lambda n_states, n_actions, device: uniforms(n_states * n_actions, 2, device)
    model.learn(64)
    return model.rollout_buffer.rollout_set.q_values


def test_identical_actions_from_one_state_give_identical_q():
    with pytest.warns(UserWarning, match="invalid search direction"):  # equal Q everywhere: no policy gradient
        q = _q_of_one_action_tried_k_times(independent_noise=False)
    assert q.shape == (8, 3)
    assert (q == q[:, :1]).all()  # the same noise, the same environment randomness: exactly the same returns
    assert q[:, 0].std() > 0  # while the states differ


def test_identical_actions_differ_without_common_policy_noise():
    """The check above can fail: with independent policy noise per branch the same first action gives
    different Q estimates."""
    q = _q_of_one_action_tried_k_times(independent_noise=True)
    assert (q != q[:, :1]).any(dim=1).all()


@pytest.mark.parametrize("case", ["box", "discrete_enumerated", "multidiscrete"])
def test_rollout_set_actions_are_the_first_actions_of_the_branches(case, monkeypatch):
    """Q(s, a_k) in the rollout set belongs to the action a_k stored beside it."""
    first_actions = {}
    step = BranchRunner._step

    def recording_step(self, env, branches):
        for branch, _, action in branches:
            first_actions.setdefault(branch, np.array(action))
        return step(self, env, branches)

    monkeypatch.setattr(BranchRunner, "_step", recording_step)
    model = TRPO("MlpPolicy", SMOKE[case](), seed=0, **{**SMALL, "n_steps": 32}, **VINE)
    _, callback = model._setup_learn(1000, None)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    rollout_set = model.rollout_buffer.rollout_set
    n_states, n_actions = rollout_set.q_values.shape
    stored = model._to_env_actions(rollout_set.actions.reshape(n_states * n_actions, -1).numpy())
    taken = np.stack([first_actions[b].reshape(-1) for b in range(n_states * n_actions)])
    np.testing.assert_array_equal(stored, taken)
    if case == "discrete_enumerated":
        assert (rollout_set.actions == th.arange(2)).all()


# ----------------------------------------------------------------------------------- vine surrogate
def test_discrete_vine_gradient_equals_its_closed_form():
    th.manual_seed(0)
    n_states, n_actions = 5, 4
    logits = th.randn(n_states, n_actions, dtype=th.float64, requires_grad=True)
    q = th.randn(n_states, n_actions, dtype=th.float64)
    rollout_set = RolloutSet(
        observations=th.zeros(n_states, 1),
        actions=th.arange(n_actions).repeat(n_states, 1),
        old_log_probs=th.log_softmax(logits, -1).detach(),
        q_values=q,
        enumerated=True,
    )
    _, surrogate, _ = rollout_set.surrogate(normalize_advantage=False)
    distribution = CategoricalDistribution(n_actions).proba_distribution(logits)
    (gradient,) = th.autograd.grad(surrogate(distribution), logits)
    # d/dz_j mean_s sum_k p_k A_k = p_j (A_j - sum_k p_k A_k) / N, A = Q - mean_k Q
    p = th.softmax(logits, -1).detach()
    advantages = q - q.mean(dim=1, keepdim=True)
    expected = p * (advantages - (p * advantages).sum(dim=1, keepdim=True)) / n_states
    th.testing.assert_close(gradient, expected)


def test_continuous_vine_gradient_matches_finite_differences():
    th.manual_seed(0)
    n_states, n_actions, dim = 4, 3, 2
    mean = th.randn(n_states, dim, dtype=th.float64)
    log_std = th.randn(dim, dtype=th.float64) * 0.3
    dist = DiagGaussianDistribution(dim)
    old = dist.proba_distribution(mean, log_std)
    actions = th.stack([old.sample() for _ in range(n_actions)], dim=1)
    old_log_probs = th.stack([old.log_prob(actions[:, k]) for k in range(n_actions)], dim=1)
    rollout_set = RolloutSet(th.zeros(n_states, 1), actions, old_log_probs, th.randn(n_states, n_actions), False)
    _, surrogate, _ = rollout_set.surrogate(normalize_advantage=True)

    def objective(flat):
        m, s = flat[: mean.numel()].view_as(mean), flat[mean.numel() :]
        return surrogate(DiagGaussianDistribution(dim).proba_distribution(m, s))

    theta = th.cat([mean.flatten(), log_std]).requires_grad_(True)
    (gradient,) = th.autograd.grad(objective(theta), theta)
    eps = 1e-6
    numeric = th.stack(
        [
            (objective(theta.detach() + eps * e) - objective(theta.detach() - eps * e)) / (2 * eps)
            for e in th.eye(len(theta), dtype=th.float64)
        ]
    )
    th.testing.assert_close(gradient, numeric, rtol=1e-6, atol=1e-8)
    assert gradient.abs().max() > 1e-3  # not trivially zero


# --------------------------------------------------------------------------------- environment checks
class LateStateEnv(NoisyEnv):
    """The protocol, but no state before the first ``reset`` (``t`` and ``signal`` are set there)."""

    def __init__(self):
        self.action_space = spaces.Box(-1, 1, (2,), np.float32)
        self.observation_space = spaces.Box(-5, 5, (3,), np.float32)
        self.horizon = 12


def test_vine_on_a_protocol_env_with_no_state_before_reset():
    """The build-time round trip snapshotted the never-reset environment and its get_state raised AttributeError."""
    model = TRPO("MlpPolicy", LateStateEnv(), seed=0, **SMALL, **VINE)
    model.learn(64)
    assert model.num_timesteps == 64


def test_unrestorable_env_fails_at_construction():
    env = make_vec_env(lambda: NoProtocolEnv(), n_envs=1)
    with pytest.raises(UnrestorableEnvError, match=r"NoProtocolEnv.*get_state") as info:
        TRPO("MlpPolicy", env, **SMALL, **VINE)
    assert isinstance(info.value, TypeError)
    TRPO("MlpPolicy", env, **SMALL)  # single path does not need it


def test_stateful_vec_wrapper_fails_at_construction():
    env = VecFrameStack(make_vec_env("CartPole-v1", n_envs=1), n_stack=2)
    with pytest.raises(UnrestorableEnvError, match="VecFrameStack"):
        TRPO("MlpPolicy", env, **SMALL, **VINE)


def test_box2d_fails_at_construction():
    # Box2D comes with the test extra (gymnasium[box2d]): a missing install fails here instead of skipping
    with pytest.raises(UnrestorableEnvError, match="Box2D"):
        TRPO("MlpPolicy", "LunarLander-v3", **SMALL, **VINE)


def test_vec_normalize_statistics_are_frozen_during_branches():
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0))
    model = TRPO("MlpPolicy", env, seed=0, **SMALL, **VINE)
    _, callback = model._setup_learn(1000, None)
    counts = []
    original = model._vine.run_branches

    def recording(*args):
        counts.append((env.obs_rms.count, env.ret_rms.count))
        result = original(*args)
        counts.append((env.obs_rms.count, env.ret_rms.count))
        return result

    model._vine.run_branches = recording
    model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    assert counts[0] == counts[1]
    # branch observations were normalised: Q estimates are on the normalised reward scale (|r| <= clip_reward)
    q = model.rollout_buffer.rollout_set.q_values
    assert q.abs().max() <= env.clip_reward * 5 / (1 - 0.99) and th.isfinite(q).all()


# ------------------------------------------------------------------------------------- smoke and I/O
SMOKE = {
    "box": lambda: noisy_vec_env(),
    "discrete_enumerated": lambda: make_vec_env("CartPole-v1", n_envs=2, seed=0),
    "discrete_sampled": lambda: noisy_vec_env(action_space=spaces.Discrete(5)),
    "multidiscrete": lambda: noisy_vec_env(action_space=spaces.MultiDiscrete([3, 2])),
    "multibinary": lambda: noisy_vec_env(action_space=spaces.MultiBinary(3)),
}


@pytest.mark.parametrize("case", list(SMOKE))
def test_vine_learn_smoke(case):
    model = TRPO("MlpPolicy", SMOKE[case](), seed=0, **SMALL, **VINE).learn(256)
    assert model._n_updates == 2
    rollout_set = model.rollout_buffer.rollout_set
    n_actions = 2 if case == "discrete_enumerated" else 3
    assert rollout_set.q_values.shape == (8, n_actions)
    assert rollout_set.enumerated == (case == "discrete_enumerated")
    assert model.logger.name_to_value["train/is_line_search_success"] == 1.0


def test_vine_with_gsde():
    model = TRPO("MlpPolicy", "Pendulum-v1", seed=0, use_sde=True, **SMALL, **VINE).learn(128)
    assert model._n_updates == 2


def test_load_validates_vine_overrides(tmp_path):
    TRPO("MlpPolicy", "CartPole-v1", **SMALL).save(tmp_path / "single")
    with pytest.raises(ValueError, match="vine_horizon=0"):
        TRPO.load(tmp_path / "single", env=make_vec_env("CartPole-v1"), sampling="vine", vine_horizon=0)
    model = TRPO.load(tmp_path / "single", env=make_vec_env("CartPole-v1"), sampling="vine")
    assert isinstance(model.rollout_buffer, VineRolloutBuffer)
    model.learn(64)


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
def test_subproc_vec_env_gives_the_same_update_as_dummy_vec_env(env_id):
    """Branches run inside the SubprocVecEnv workers (in parallel), with the same result as in-process."""
    actors = []
    for vec_env_cls in (DummyVecEnv, SubprocVecEnv):
        kwargs = dict(start_method="fork") if vec_env_cls is SubprocVecEnv else {}
        env = make_vec_env(env_id, n_envs=2, seed=0, vec_env_cls=vec_env_cls, vec_env_kwargs=kwargs)
        try:
            model = TRPO("MlpPolicy", env, seed=4, **SMALL, **VINE).learn(128)
            actors.append(parameters_to_vector(model.policy.parameters()).detach().clone())
            q = model.rollout_buffer.rollout_set.q_values
            assert model.logger.name_to_value["train/is_line_search_success"] == 1.0
        finally:
            env.close()
    th.testing.assert_close(actors[0], actors[1], rtol=0, atol=0)
    assert th.isfinite(q).all()


def test_subproc_worker_errors_come_back_at_construction():
    env = SubprocVecEnv([lambda: NoProtocolEnv()], start_method="fork")
    try:
        with pytest.raises(UnrestorableEnvError, match="NoProtocolEnv"):
            TRPO("MlpPolicy", env, **SMALL, **VINE)
        env.env_method("reset")  # the worker is still alive
    finally:
        env.close()


# -- SubprocVecEnv: the public route (VineBranchWrapper) and the pinned fallback ---------------------------------
def _vine_actor(env) -> th.Tensor:
    try:
        model = TRPO("MlpPolicy", env, seed=4, **SMALL, **VINE).learn(128)
        return parameters_to_vector(model.policy.parameters()).detach().clone()
    finally:
        env.close()


@pytest.mark.parametrize("route", ["make_vec_env", "helper"])
def test_vine_branch_wrapper_reaches_subproc_workers_without_the_frame_lookup(route, monkeypatch):
    from sb3_trpo_ext.common import vine

    def no_frame_lookup():
        raise AssertionError("the worker frame lookup was used")

    monkeypatch.setattr(vine, "_subprocess_worker_env", no_frame_lookup)  # inherited by the forked workers
    dummy = _vine_actor(make_vec_env("Pendulum-v1", n_envs=2, seed=0))
    if route == "make_vec_env":
        env = make_vec_env(
            "Pendulum-v1",
            n_envs=2,
            seed=0,
            vec_env_cls=SubprocVecEnv,
            vec_env_kwargs=dict(start_method="fork"),
            wrapper_class=vine.VineBranchWrapper,
        )
    else:
        env = vine.vine_subproc_vec_env([lambda: gym.make("Pendulum-v1")] * 2, start_method="fork")
    th.testing.assert_close(_vine_actor(env), dummy, rtol=0, atol=0)


def test_vine_branch_wrapper_that_is_not_outermost_fails_at_construction():
    from sb3_trpo_ext.common.vine import VineBranchWrapper

    env = SubprocVecEnv(
        [lambda: gym.wrappers.TimeLimit(VineBranchWrapper(gym.make("Pendulum-v1")), 50)], start_method="fork"
    )
    try:
        with pytest.raises(RuntimeError, match="must be the outermost wrapper"):
            TRPO("MlpPolicy", env, **SMALL, **VINE)
    finally:
        env.close()


def test_sb3_subproc_worker_is_the_one_the_fallback_reads():
    """Pins SB3's private worker loop that vine reads for SubprocVecEnvs without VineBranchWrapper: its frame holds
    the environment as the local ``env`` and ``env_method`` calls the method from that frame. If SB3 changes it,
    this fails here (and model construction fails with a message naming VineBranchWrapper)."""
    import inspect

    from stable_baselines3.common.vec_env import subproc_vec_env

    assert "env" in subproc_vec_env._worker.__code__.co_varnames
    source = inspect.getsource(subproc_vec_env._worker)
    assert "method = env.get_wrapper_attr(data[0])" in source
    assert "remote.send(method(*data[1], **data[2]))" in source
