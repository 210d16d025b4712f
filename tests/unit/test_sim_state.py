"""Exact save/restore of environment state (sb3_trpo_ext.sim_state), for vine sampling."""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.monitor import Monitor

from sb3_trpo_ext.sim_state import (
    EnvState,
    UnrestorableEnvError,
    check_restorable,
    get_state,
    no_monitor_writes,
    set_state,
)


def _actions(env: gym.Env, n: int, seed: int) -> list[Any]:
    space = env.action_space
    space.seed(seed)
    return [space.sample() for _ in range(n)]


def _rollout(env: gym.Env, actions: list[Any]) -> list[tuple[Any, Any, bool, bool, dict]]:
    out = []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        out.append((np.array(obs, copy=True), reward, terminated, truncated, info))
        if terminated or truncated:
            break
    return out


def _assert_same(expected: list, got: list, compare_infos: bool = False) -> None:
    assert len(got) == len(expected)
    for (obs1, rew1, term1, trunc1, info1), (obs2, rew2, term2, trunc2, info2) in zip(expected, got):
        assert obs1.dtype == obs2.dtype
        assert np.array_equal(obs1, obs2)
        assert np.array_equal(np.asarray(rew1), np.asarray(rew2))  # exact, not allclose
        assert term1 is term2 or term1 == term2
        assert trunc1 is trunc2 or trunc1 == trunc2
        if compare_infos:
            assert _without_times(info1).keys() == _without_times(info2).keys()
            for key, value in _without_times(info1).items():
                assert np.array_equal(np.asarray(value), np.asarray(_without_times(info2)[key])), key


def _without_times(info: dict) -> dict:
    """Episode statistics carry a wall-clock time ("t"): everything else must replay exactly."""
    info = dict(info)
    if "episode" in info:
        info.update({f"episode.{k}": v for k, v in info.pop("episode").items() if k != "t"})
    return info


def _check_replay(
    env: gym.Env,
    *,
    warmup: int = 5,
    horizon: int = 20,
    seed: int = 0,
    compare_infos: bool = True,
    expect_end: bool | None = None,
) -> EnvState:
    """Snapshot after `warmup` random steps, then check two restores replay the continuation bit for bit."""
    env.reset(seed=seed)
    _rollout(env, _actions(env, warmup, seed + 1))
    snapshot = get_state(env)
    actions = _actions(env, horizon, seed + 2)
    expected = _rollout(env, actions)
    if expect_end is not None:
        assert (expected[-1][2] or expected[-1][3]) == expect_end
    # Wander off before restoring (a different branch, so that restoring has something to undo).
    _rollout(env, _actions(env, 3, seed + 3))
    for _ in range(2):  # the same snapshot, restored twice
        set_state(env, snapshot)
        _assert_same(expected, _rollout(env, actions), compare_infos)
    return snapshot


# --------------------------------------------------------------------------------------------------------
# MuJoCo
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ["Hopper-v5", "HalfCheetah-v5", "Ant-v5"])
def test_mujoco_replay(env_id: str, tmp_path, monkeypatch) -> None:
    pytest.importorskip("mujoco")
    monkeypatch.chdir(tmp_path)  # MuJoCo 4 logs a deprecation of HalfCheetah's XML to ./MUJOCO_LOG.TXT
    env = gym.make(env_id)
    _check_replay(env, warmup=10, horizon=15)
    env.close()


def test_mujoco_replay_through_time_limit_truncation() -> None:
    pytest.importorskip("mujoco")
    # Walker2d with a small action scale stays healthy; snapshot 4 steps before the time limit.
    env = gym.make("Walker2d-v5", max_episode_steps=12)
    env.reset(seed=3)
    for _ in range(8):
        env.step(np.zeros(env.action_space.shape, dtype=np.float32))
    snapshot = get_state(env)
    actions = [0.1 * a for a in _actions(env, 10, 4)]
    expected = _rollout(env, actions)
    assert len(expected) == 4 and expected[-1][3] and not expected[-1][2]  # truncated inside the replay
    for _ in range(2):
        set_state(env, snapshot)
        _assert_same(expected, _rollout(env, actions), compare_infos=True)
    env.close()


def test_mujoco_set_state_qpos_qvel_is_not_the_protocol() -> None:
    pytest.importorskip("mujoco")
    from gymnasium.envs.mujoco.hopper_v5 import HopperEnv

    class HopperWithGetter(HopperEnv):
        def get_state(self):  # with MujocoEnv.set_state(qpos, qvel): not the protocol
            return self.data.qpos.copy(), self.data.qvel.copy()

    env = HopperWithGetter()
    env.reset(seed=0)
    snapshot = get_state(env)  # the MuJoCo adapter, not HopperWithGetter.get_state
    qacc = env.data.qacc.copy()
    env.step(env.action_space.sample())
    set_state(env, snapshot)
    assert np.array_equal(env.data.qacc, qacc)


def test_mujoco_snapshot_is_independent_of_later_steps() -> None:
    pytest.importorskip("mujoco")
    env = gym.make("Hopper-v5")
    env.reset(seed=0)
    snapshot = get_state(env)
    qpos = env.unwrapped.data.qpos.copy()
    xpos = env.unwrapped.data.xpos.copy()
    for action in _actions(env, 5, 1):
        env.step(action)
    assert not np.array_equal(env.unwrapped.data.qpos, qpos)
    set_state(env, snapshot)
    assert np.array_equal(env.unwrapped.data.qpos, qpos)
    assert np.array_equal(env.unwrapped.data.xpos, xpos)  # derived quantities too
    env.close()


def test_restore_into_another_instance() -> None:
    pytest.importorskip("mujoco")
    env, twin = gym.make("Hopper-v5"), gym.make("Hopper-v5")
    env.reset(seed=0)
    twin.reset(seed=1)
    _rollout(env, _actions(env, 4, 2))
    snapshot = get_state(env)
    actions = _actions(env, 10, 3)
    expected = _rollout(env, actions)
    set_state(twin, snapshot)
    _assert_same(expected, _rollout(twin, actions), compare_infos=True)
    with pytest.raises(ValueError, match="wrapper chain"):
        set_state(Monitor(gym.make("Hopper-v5")), snapshot)


def test_monitor_and_time_feature_like_the_zoo() -> None:
    pytest.importorskip("mujoco")
    wrappers = pytest.importorskip("sb3_contrib.common.wrappers")
    env = wrappers.TimeFeatureWrapper(Monitor(gym.make("Hopper-v5", max_episode_steps=30)))
    monitor = env.env
    assert isinstance(monitor, Monitor)
    env.reset(seed=0)
    # Finish one episode so that the Monitor has statistics, then snapshot mid-episode.
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
        done = terminated or truncated
    env.reset()
    _rollout(env, _actions(env, 5, 1))
    snapshot = get_state(env)
    returns, lengths = list(monitor.get_episode_rewards()), list(monitor.get_episode_lengths())
    total_steps, rewards = monitor.get_total_steps(), list(monitor.rewards)
    current_step = env._current_step
    episode_returns_list = monitor.get_episode_rewards()

    actions = _actions(env, 40, 2)  # runs into the end of the episode (30 steps)
    expected = _rollout(env, actions)
    assert expected[-1][2] or expected[-1][3]
    assert len(monitor.get_episode_rewards()) == len(returns) + 1

    for _ in range(2):
        set_state(env, snapshot)
        assert monitor.get_episode_rewards() == returns
        assert monitor.get_episode_lengths() == lengths
        assert monitor.get_total_steps() == total_steps
        assert monitor.rewards == rewards
        assert monitor.needs_reset is False
        assert env._current_step == current_step
        assert monitor.get_episode_rewards() is episode_returns_list  # updated in place
        # Monitor's info["episode"] holds a wall-clock time: compare the rest only.
        _assert_same(expected, _rollout(env, actions))
    env.close()


# --------------------------------------------------------------------------------------------------------
# Classic control
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1", "Acrobot-v1", "MountainCarContinuous-v0"])
def test_classic_control_replay(env_id: str) -> None:
    env = gym.make(env_id)
    _check_replay(env, warmup=5, horizon=30)
    env.close()


def test_cartpole_replay_across_termination() -> None:
    env = gym.make("CartPole-v1")
    # Always pushing right ends the episode within ~10 steps; the replay covers the termination.
    env.reset(seed=0)
    env.step(1)
    snapshot = get_state(env)
    expected = _rollout(env, [1] * 50)
    assert expected[-1][2]
    set_state(env, snapshot)
    _assert_same(expected, _rollout(env, [1] * 50), compare_infos=True)


def test_reset_after_restore_replays() -> None:
    """Classic-control resets draw from np_random: the RNG is part of the snapshot."""
    env = gym.make("CartPole-v1")
    env.reset(seed=0)
    snapshot = get_state(env)
    first = env.reset()[0]
    env.reset()
    set_state(env, snapshot)
    assert np.array_equal(env.reset()[0], first)


@pytest.mark.filterwarnings("ignore:.*precision lowered")
def test_wrapper_stack_replay() -> None:
    """Known stateful and stateless gymnasium wrappers stacked on a classic-control env."""
    env = gym.make("Pendulum-v1", max_episode_steps=20)
    env = gym.wrappers.RecordEpisodeStatistics(env)
    env = gym.wrappers.RescaleAction(env, -1.0, 1.0)
    env = gym.wrappers.ClipAction(env)
    env = gym.wrappers.TimeAwareObservation(env)
    env = gym.wrappers.FrameStackObservation(env, 3)
    env = gym.wrappers.FlattenObservation(env)
    env = gym.wrappers.TransformReward(env, lambda r: 2 * r)
    env = gym.wrappers.NormalizeObservation(env)
    _check_replay(env, warmup=12, horizon=15, expect_end=True)


# --------------------------------------------------------------------------------------------------------
# Custom environments: RNG, protocol, errors
# --------------------------------------------------------------------------------------------------------


class RandomRewardEnv(gym.Env):
    """No known simulator: unrestorable unless it implements the protocol."""

    observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float64)
    action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)

    def __init__(self) -> None:
        self.position = np.zeros(2)
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.position = self.np_random.normal(size=2)
        self.t = 0
        return self.position.copy(), {}

    def step(self, action):
        self.position = self.position + action + 0.1 * self.np_random.normal(size=2)
        self.t += 1
        reward = float(self.np_random.random())  # random reward: replays only if the RNG is restored
        return self.position.copy(), reward, False, self.t >= 50, {}


class ProtocolEnv(RandomRewardEnv):
    def get_state(self) -> object:
        return self.position.copy(), self.t

    def set_state(self, state) -> None:
        position, self.t = state
        self.position = position.copy()


class ProtocolWrapper(gym.Wrapper):
    """Takes responsibility for everything below it (here: an otherwise unrestorable env)."""

    def get_state(self) -> object:
        base = self.env.unwrapped
        return base.position.copy(), base.t

    def set_state(self, state) -> None:
        base = self.env.unwrapped
        position, base.t = state
        base.position = position.copy()


class CountingWrapper(gym.Wrapper):
    """Unknown wrapper with state of its own."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.n_steps = 0

    def step(self, action):
        self.n_steps += 1
        return self.env.step(action)


class PlainWrapper(gym.Wrapper):
    """Unknown wrapper without instance attributes of its own: stateless."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward * 2, terminated, truncated, info


def test_custom_env_without_protocol_is_refused() -> None:
    env = gym.wrappers.TimeLimit(RandomRewardEnv(), 50)
    env.reset(seed=0)
    for call in (check_restorable, get_state):
        with pytest.raises(UnrestorableEnvError) as excinfo:
            call(env)
        err = excinfo.value
        assert isinstance(err, TypeError)
        message = str(err)
        assert "RandomRewardEnv" in message
        assert "get_state() -> object" in message and "set_state(state) -> None" in message


def test_env_id_in_message() -> None:
    gym.register("SimStateRandomReward-v0", entry_point=RandomRewardEnv)
    try:
        with pytest.raises(UnrestorableEnvError, match="SimStateRandomReward-v0"):
            check_restorable(gym.make("SimStateRandomReward-v0"))
    finally:
        gym.registry.pop("SimStateRandomReward-v0")


def test_protocol_env_replays_with_its_rng() -> None:
    env = gym.wrappers.TimeLimit(ProtocolEnv(), 50)
    check_restorable(env)
    _check_replay(env, warmup=3, horizon=10)


def test_protocol_wrapper_over_unrestorable_env() -> None:
    env = ProtocolWrapper(gym.wrappers.TimeLimit(RandomRewardEnv(), 50))
    check_restorable(env)
    _check_replay(env, warmup=3, horizon=10)
    # Known wrappers above the protocol layer are still saved.
    env = gym.wrappers.TimeLimit(ProtocolWrapper(RandomRewardEnv()), 12)
    _check_replay(env, warmup=5, horizon=20, expect_end=True)


def test_unknown_stateful_wrapper_is_refused() -> None:
    env = CountingWrapper(gym.make("CartPole-v1"))
    with pytest.raises(UnrestorableEnvError, match="CountingWrapper") as excinfo:
        check_restorable(env)
    assert "n_steps" in str(excinfo.value)
    with pytest.raises(UnrestorableEnvError, match="CountingWrapper"):
        get_state(env)
    # Stateless unknown wrappers are fine.
    _check_replay(PlainWrapper(gym.make("CartPole-v1")))


def test_check_restorable_touches_nothing() -> None:
    env = gym.make("CartPole-v1")
    env.reset(seed=0)
    base = env.unwrapped
    rng_state = base.np_random.bit_generator.state
    state = base.state.copy()
    check_restorable(env)
    assert base.np_random.bit_generator.state == rng_state
    assert np.array_equal(base.state, state)


def test_non_env_is_refused() -> None:
    from stable_baselines3.common.vec_env import DummyVecEnv

    with pytest.raises(UnrestorableEnvError, match="DummyVecEnv"):
        check_restorable(DummyVecEnv([lambda: gym.make("CartPole-v1")]))  # type: ignore[arg-type]


def test_box2d_is_refused() -> None:
    # Box2D comes with the test extra (gymnasium[box2d]): a missing install fails here instead of skipping
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = gym.make("LunarLander-v3")
    with pytest.raises(UnrestorableEnvError, match="Box2D"):
        check_restorable(env)


def test_box2d_dispatch_refuses_by_module() -> None:
    """Without Box2D installed: a class from gymnasium.envs.box2d is refused by the dispatch."""
    fake = type("LunarLander", (RandomRewardEnv,), {"__module__": "gymnasium.envs.box2d.lunar_lander"})
    with pytest.raises(UnrestorableEnvError, match="Box2D"):
        check_restorable(fake())


def test_classic_control_subclass_is_refused() -> None:
    from gymnasium.envs.classic_control.cartpole import CartPoleEnv

    class MyCartPole(CartPoleEnv):
        pass

    with pytest.raises(UnrestorableEnvError, match="MyCartPole"):
        check_restorable(MyCartPole())


# --------------------------------------------------------------------------------------------------------
# Monitor files
# --------------------------------------------------------------------------------------------------------


def _monitor_rows(path) -> int:
    with open(path) as file:
        return sum(1 for line in file if line.strip() and not line.startswith("#")) - 1  # minus the CSV header


def _run_episode(env: gym.Env) -> None:
    env.reset()
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(1)
        done = terminated or truncated


def test_no_monitor_writes(tmp_path) -> None:
    filename = str(tmp_path / "run")
    monitor = Monitor(gym.make("CartPole-v1"), filename=filename)
    env = gym.wrappers.TimeLimit(monitor, 500)
    path = filename + "." + Monitor.EXT
    writer = monitor.results_writer
    env.reset(seed=0)

    with no_monitor_writes(env):
        _run_episode(env)
        assert monitor.results_writer is None
    writer.flush() if hasattr(writer, "flush") else writer.file_handler.flush()
    assert _monitor_rows(path) == 0
    assert len(monitor.get_episode_rewards()) == 1  # in-memory statistics still updated
    assert monitor.results_writer is writer

    _run_episode(env)
    writer.file_handler.flush()
    assert _monitor_rows(path) == 1

    with pytest.raises(RuntimeError, match="boom"), no_monitor_writes(env):
        raise RuntimeError("boom")
    assert monitor.results_writer is writer
    env.close()


# --------------------------------------------------------------------------------------------------------
# Atari (optional: ale-py)
# --------------------------------------------------------------------------------------------------------


def _ale_env(env_id: str, **kwargs: Any) -> gym.Env:
    ale_py = pytest.importorskip("ale_py")
    gym.register_envs(ale_py)
    return gym.make(env_id, **kwargs)


def test_atari_v5_sticky_actions_replay() -> None:
    # ALE/*-v5: frame skip 4 and sticky actions (the ALE's own RNG), observations stacked by gymnasium.
    env = gym.wrappers.FrameStackObservation(_ale_env("ALE/Pong-v5", obs_type="grayscale"), 4)
    _check_replay(env, warmup=20, horizon=25)
    env.close()


def test_atari_gymnasium_preprocessing_replay() -> None:
    pytest.importorskip("cv2")
    env = _ale_env("ALE/Breakout-v5", frameskip=1, repeat_action_probability=0.25)
    env = gym.wrappers.AtariPreprocessing(env, frame_skip=4, terminal_on_life_loss=True)
    _check_replay(env, warmup=10, horizon=20)
    env.close()


def test_atari_sb3_wrapper_replay() -> None:
    pytest.importorskip("cv2")
    from stable_baselines3.common.atari_wrappers import AtariWrapper

    env = gym.wrappers.FrameStackObservation(AtariWrapper(_ale_env("PongNoFrameskip-v4")), 4)
    check_restorable(env)
    _check_replay(env, warmup=10, horizon=20)
    env.close()


def test_atari_episodic_life_replay_across_life_loss() -> None:
    pytest.importorskip("cv2")
    from stable_baselines3.common.atari_wrappers import AtariWrapper

    # Breakout: five lives and FIRE; doing nothing loses a life quickly, which EpisodicLifeEnv turns into
    # `terminated`. The snapshot is taken one step before that, in the first life.
    env = AtariWrapper(_ale_env("BreakoutNoFrameskip-v4"), action_repeat_probability=0.25)
    env.reset(seed=0)
    steps_to_life_loss = len(_rollout(env, [0] * 500))
    env.reset(seed=0)
    _rollout(env, [0] * (steps_to_life_loss - 1))
    snapshot = get_state(env)
    expected = _rollout(env, [0] * 10)
    assert len(expected) == 1 and expected[-1][2]
    env.reset()  # EpisodicLifeEnv: a no-op step into the next life, not a real reset
    _rollout(env, [0] * 5)
    for _ in range(2):
        set_state(env, snapshot)
        _assert_same(expected, _rollout(env, [0] * 10), compare_infos=True)
    env.close()


def test_get_state_reusing_a_spent_snapshot_replays_identically():
    """``reuse=`` (the vine branches' per-step snapshots) gives the same state as a fresh snapshot."""
    env = gym.make("Hopper-v5")
    env.reset(seed=3)
    spent = get_state(env)
    for _ in range(5):
        env.step(env.action_space.sample())
    fresh, reused = get_state(env), get_state(env, reuse=spent)
    actions = [env.action_space.sample() for _ in range(10)]
    replays = []
    for state in (fresh, reused):
        set_state(env, state)
        replays.append([env.step(a)[:4] for a in actions])
    for (o1, r1, t1, u1), (o2, r2, t2, u2) in zip(*replays):
        np.testing.assert_array_equal(o1, o2)
        assert (r1, t1, u1) == (r2, t2, u2)


def test_a_wrapper_that_grows_state_after_a_snapshot_is_refused_at_the_next() -> None:
    """Snapshots reuse the dispatch of an environment while its layers stay the same; a wrapper that gains an
    attribute afterwards is checked again."""

    class LateCounter(gym.Wrapper):
        def step(self, action):
            self.steps_seen = getattr(self, "steps_seen", 0) + 1
            return self.env.step(action)

    env = LateCounter(gym.make("CartPole-v1"))
    env.reset(seed=0)
    get_state(env)
    env.step(0)
    with pytest.raises(UnrestorableEnvError, match="LateCounter.*steps_seen"):
        get_state(env)


# -- the construction-time round trip ------------------------------------------------------------------------
def _trajectory(env: gym.Env, n: int) -> list[tuple[Any, ...]]:
    return [tuple(np.asarray(x).tobytes() for x in env.step(env.action_space.sample())[:4]) for _ in range(n)]


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_round_trip_passes_and_leaves_the_environment_as_it_was(env_id: str) -> None:
    from sb3_trpo_ext.sim_state import check_round_trip

    checked, twin = Monitor(gym.make(env_id)), Monitor(gym.make(env_id))
    assert check_round_trip(checked) > 0  # a never-reset environment: reset inside, put back afterwards
    for env in (checked, twin):
        env.reset(seed=3)
        env.action_space.seed(5)
        env.step(env.action_space.sample())
    assert check_round_trip(checked) > 0  # mid-episode
    assert _trajectory(checked, 20) == _trajectory(twin, 20)
    assert checked.get_episode_rewards() == twin.get_episode_rewards()


class LateStateEnv(ProtocolEnv):
    """The protocol on an environment whose state exists only after the first ``reset`` (set there, as in many
    user environments): ``get_state`` raises AttributeError before it."""

    def __init__(self) -> None:
        pass


@pytest.mark.parametrize("order_enforcing", [False, True], ids=["bare", "gym.make-like"])
def test_round_trip_on_a_never_reset_environment_without_state(order_enforcing: bool) -> None:
    """With no state to put back, the check leaves the environment freshly reset (SB3 resets it before the first
    rollout anyway); it used to fail on the snapshot it took before resetting."""
    from sb3_trpo_ext.sim_state import check_round_trip

    env: gym.Env = LateStateEnv()
    if order_enforcing:
        env = gym.wrappers.OrderEnforcing(env)
    with pytest.raises(AttributeError):
        get_state(env)
    assert check_round_trip(env) > 0
    assert env.unwrapped.t == 0  # freshly reset, not where the replayed steps left it
    assert not order_enforcing or env._has_reset
    get_state(env)
    env.step(env.action_space.sample())

    class BrokenGetState(ProtocolEnv):  # a reset environment whose get_state fails: that error is not hidden
        def get_state(self) -> object:
            raise AttributeError("no attribute 'velocity'")

    broken = gym.wrappers.OrderEnforcing(BrokenGetState())
    broken.reset(seed=0)
    with pytest.raises(AttributeError, match="velocity"):
        check_round_trip(broken)


def test_round_trip_catches_state_the_attribute_list_misses(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mutable attribute that a later gymnasium might add to CartPole (here: a gust counter in the reward) is not
    in the fixed list: the dispatch accepts the environment, the round trip refuses it, naming it."""
    from gymnasium.envs.classic_control.cartpole import CartPoleEnv

    from sb3_trpo_ext import TRPO
    from sb3_trpo_ext.sim_state import check_round_trip

    step = CartPoleEnv.step

    def gusty_step(self, action):
        self.gusts = getattr(self, "gusts", 0) + 1
        obs, reward, terminated, truncated, info = step(self, action)
        return obs, reward + 0.01 * self.gusts, terminated, truncated, info

    monkeypatch.setattr(CartPoleEnv, "step", gusty_step)
    env = gym.make("CartPole-v1")
    check_restorable(env)  # the dispatch alone does not see it
    with pytest.raises(UnrestorableEnvError, match=r"CartPoleEnv .*'CartPole-v1'.* different reward at step 0"):
        check_round_trip(env)
    with pytest.raises(UnrestorableEnvError, match="CartPole-v1"):
        TRPO("MlpPolicy", "CartPole-v1", sampling="vine", n_steps=64, batch_size=64)
