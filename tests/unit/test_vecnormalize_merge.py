"""Merging data-parallel ranks' VecNormalize statistics (:class:`sb3_trpo_ext.distributed.vecnormalize.VecNormalizeMerger`).

Three "ranks" in one process: three VecNormalize over DummyVecEnv, each stepped with its own random actions, then
``merge()`` on all three at once (one thread per rank; the collectives are a barrier-based fake all-reduce and
broadcast). The reference is one RunningMeanStd that starts from the base and is fed every observation and every
discounted return the three VecNormalize were updated with, recorded from the steps (the raw observations,
``get_original_obs``; the returns recomputed from ``get_original_reward`` and the dones as SB3's ``_update_reward``
does).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_trpo_ext.distributed import vecnormalize as vn
from sb3_trpo_ext.distributed.vecnormalize import VecNormalizeMerger

RANKS = 3
NUM_ENVS = 2
RTOL = 1e-9


class DictObsEnv(gym.Env):
    """A Dict observation: two Box keys to normalize, one left alone (``tag``); episodes of random length. ``pos`` is
    near 1e4 with a small spread (mean**2 / var up to ~1e10): power sums taken about 0 instead of about the base mean
    lose enough digits there to miss RTOL (checked: 5e-9), those about the base mean agree to 1e-12."""

    observation_space = spaces.Dict(
        {
            "pos": spaces.Box(-np.inf, np.inf, (3,), np.float32),
            "vel": spaces.Box(-np.inf, np.inf, (2,), np.float32),
            "tag": spaces.Box(0.0, 1.0, (1,), np.float32),
        }
    )
    action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict[str, np.ndarray], dict]:
        super().reset(seed=seed)
        self.t = 0
        self.pos = 1e4 + self.np_random.normal(size=3)
        self.vel = self.np_random.normal(size=2)
        return self._obs(), {}

    def _obs(self) -> dict[str, np.ndarray]:
        return {
            "pos": self.pos.astype(np.float32),
            "vel": self.vel.astype(np.float32),
            "tag": np.array([self.np_random.random()], np.float32),
        }

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        self.t += 1
        self.vel = 0.9 * self.vel + 0.1 * np.asarray(action, np.float64) + 0.05 * self.np_random.normal(size=2)
        self.pos[:2] += 0.1 * self.vel
        self.pos[2] += 0.01 * self.np_random.normal()
        reward = float(-np.sum(np.square(self.vel)) + self.np_random.normal())
        return self._obs(), reward, bool(self.np_random.random() < 0.02), self.t >= 60, {}


def make_venv(kind: str, seed: int, **kwargs: Any) -> VecNormalize:
    if kind == "pendulum":
        venv = DummyVecEnv([lambda: gym.make("Pendulum-v1")] * NUM_ENVS)
    else:
        venv = DummyVecEnv([DictObsEnv] * NUM_ENVS)
        kwargs.setdefault("norm_obs_keys", ["pos", "vel"])
    venv.seed(seed)
    venv.action_space.seed(seed)
    normalized = VecNormalize(venv, gamma=0.97, **kwargs)
    normalized.reset()
    return normalized


def statistics(venv: VecNormalize) -> dict[str, RunningMeanStd]:
    """The venv's live statistics by name (obs keys, or "obs", and "ret")."""
    stats: dict[str, RunningMeanStd] = {"ret": venv.ret_rms}
    if venv.norm_obs:
        if isinstance(venv.obs_rms, dict):
            stats.update(venv.obs_rms)
        else:
            stats["obs"] = venv.obs_rms
    return stats


def snapshot(venv: VecNormalize) -> dict[str, RunningMeanStd]:
    return {name: rms.copy() for name, rms in statistics(venv).items()}


def set_statistics(venv: VecNormalize, source: dict[str, RunningMeanStd]) -> None:
    for name, rms in statistics(venv).items():
        rms.mean, rms.var, rms.count = source[name].mean.copy(), source[name].var.copy(), float(source[name].count)


class Recorder:
    """Steps one rank's VecNormalize with its own random actions and records the batches its statistics were
    updated with (per step: the raw observation per key, the discounted returns)."""

    def __init__(self, venv: VecNormalize, seed: int):
        self.venv = venv
        self.rng = np.random.default_rng(seed)
        self.returns = venv.returns.copy()  # SB3's running discounted returns at the start of the recording
        self.batches: dict[str, list[np.ndarray]] = {name: [] for name in statistics(venv)}

    def step(self, steps: int) -> None:
        space = self.venv.action_space
        assert isinstance(space, spaces.Box)
        for _ in range(steps):
            actions = self.rng.uniform(space.low, space.high, (self.venv.num_envs, *space.shape)).astype(np.float32)
            _, _, dones, _ = self.venv.step(actions)
            if not self.venv.training:
                continue
            raw = self.venv.get_original_obs()
            for name in self.batches:
                if name == "obs":
                    self.batches[name].append(np.asarray(raw))
                elif name != "ret":
                    assert isinstance(raw, dict)
                    self.batches[name].append(raw[name])
            # SB3's _update_reward: returns = returns * gamma + reward, update, then zero the finished episodes
            self.returns = self.returns * self.venv.gamma + self.venv.get_original_reward()
            self.batches["ret"].append(self.returns.copy())
            self.returns[dones] = 0


def reference(base: dict[str, RunningMeanStd], recorders: list[Recorder]) -> dict[str, RunningMeanStd]:
    """One RunningMeanStd per statistic that saw the base and then every rank's batches."""
    result = {name: rms.copy() for name, rms in base.items()}
    for recorder in recorders:
        for name, batches in recorder.batches.items():
            for batch in batches:
                result[name].update(batch)
    return result


def assert_close(stats: dict[str, RunningMeanStd], expected: dict[str, RunningMeanStd]) -> None:
    assert stats.keys() == expected.keys()
    for name, rms in stats.items():
        np.testing.assert_allclose(rms.count, expected[name].count, rtol=RTOL, atol=0, err_msg=name)
        np.testing.assert_allclose(rms.mean, expected[name].mean, rtol=RTOL, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(rms.var, expected[name].var, rtol=RTOL, atol=0, err_msg=name)


def assert_bit_equal(venvs: list[VecNormalize]) -> None:
    first = statistics(venvs[0])
    for venv in venvs[1:]:
        for name, rms in statistics(venv).items():
            assert type(rms) is RunningMeanStd
            assert rms.count == first[name].count, name
            np.testing.assert_array_equal(rms.mean, first[name].mean, err_msg=name)
            np.testing.assert_array_equal(rms.var, first[name].var, err_msg=name)


class FakeWorld:
    """Collectives between threads, one per rank: every rank deposits its buffer, waits for the others, then computes
    the same sum in the same order (so every rank gets the same bits, as the contract asks)."""

    def __init__(self, size: int):
        self.size = size
        self.barrier = threading.Barrier(size, timeout=10)
        self.slots: list[np.ndarray | None] = [None] * size
        self.calls: list[list[str]] = [[] for _ in range(size)]

    def _exchange(self, rank: int, buffer: np.ndarray, name: str) -> list[np.ndarray]:
        assert buffer.dtype == np.float64
        self.calls[rank].append(name)
        self.slots[rank] = buffer.copy()
        self.barrier.wait()
        deposited = [slot.copy() for slot in self.slots if slot is not None]
        assert len(deposited) == self.size
        self.barrier.wait()  # nobody overwrites a slot before every rank has read them all
        return deposited

    def all_reduce_sum(self, rank: int) -> Callable[[np.ndarray], np.ndarray]:
        def collective(buffer: np.ndarray) -> np.ndarray:
            deposited = self._exchange(rank, buffer, "all_reduce_sum")
            total = deposited[0]
            for other in deposited[1:]:
                total = total + other
            return total

        return collective

    def broadcast_from_rank0(self, rank: int) -> Callable[[np.ndarray], np.ndarray]:
        def collective(buffer: np.ndarray) -> np.ndarray:
            return self._exchange(rank, buffer, "broadcast_from_rank0")[0]

        return collective

    def mergers(self, venvs: list[VecNormalize]) -> list[VecNormalizeMerger]:
        return [
            VecNormalizeMerger(venv, self.all_reduce_sum(rank), self.broadcast_from_rank0(rank))
            for rank, venv in enumerate(venvs)
        ]

    def merge(self, mergers: list[VecNormalizeMerger]) -> list[BaseException | None]:
        """``merge()`` on every rank at once; what each rank raised (None: nothing)."""
        errors: list[BaseException | None] = [None] * len(mergers)

        def run(rank: int) -> None:
            try:
                mergers[rank].merge()
            except BaseException as error:  # reported to the test
                # not barrier.abort(): it would also break ranks just released from the last wait (a race); a
                # rank that raised before a collective leaves the others to the barrier's timeout
                errors[rank] = error

        threads = [threading.Thread(target=run, args=(rank,)) for rank in range(len(mergers))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
            assert not thread.is_alive()
        return errors

    def merge_ok(self, mergers: list[VecNormalizeMerger]) -> None:
        errors = self.merge(mergers)
        for error in errors:
            if error is not None:
                raise error


def shared_base(kind: str, **kwargs: Any) -> tuple[list[VecNormalize], dict[str, RunningMeanStd]]:
    """Three ranks whose statistics are identical (rank 0's after a warm-up), as after a merge."""
    venvs = [make_venv(kind, seed=10 + rank, **kwargs) for rank in range(RANKS)]
    Recorder(venvs[0], seed=99).step(40)
    base = snapshot(venvs[0])
    for venv in venvs[1:]:
        set_statistics(venv, base)
    return venvs, base


@pytest.mark.parametrize("kind", ["pendulum", "dict"])
def test_merge_equals_one_statistics_that_saw_every_rank(kind: str) -> None:
    venvs, base = shared_base(kind)
    world = FakeWorld(RANKS)
    mergers = world.mergers(venvs)
    recorders = [Recorder(venv, seed=rank) for rank, venv in enumerate(venvs)]
    for rank, recorder in enumerate(recorders):
        recorder.step(150 + 50 * rank)  # different amounts of data per rank
    expected = reference(base, recorders)
    for recorder, venv in zip(recorders, venvs):  # the recording is what each rank's VecNormalize saw
        assert_close(statistics(venv), reference(base, [recorder]))
    world.merge_ok(mergers)
    assert_bit_equal(venvs)  # (a)
    assert_close(statistics(venvs[0]), expected)  # (b)
    if kind == "dict":
        assert set(statistics(venvs[0])) == {"ret", "pos", "vel"}  # norm_obs_keys: "tag" is not normalized
    # one broadcast (the first merge adopts rank 0's base), then one all-reduce over one buffer, on every rank
    assert world.calls == [["broadcast_from_rank0", "all_reduce_sum"]] * RANKS


def test_successive_merges_do_not_double_count(tmp_path: Path) -> None:
    venvs, base = shared_base("dict")
    world = FakeWorld(RANKS)
    mergers = world.mergers(venvs)
    recorders = [Recorder(venv, seed=rank) for rank, venv in enumerate(venvs)]
    for round_ in range(3):
        for rank, recorder in enumerate(recorders):
            recorder.step(60 + 20 * rank + 10 * round_)
        world.merge_ok(mergers)
        assert_bit_equal(venvs)
        assert_close(statistics(venvs[1]), reference(base, recorders))  # (c): every round's data counted once
    assert world.calls == [["broadcast_from_rank0"] + ["all_reduce_sum"] * 3] * RANKS
    # the venv's objects are still plain SB3 RunningMeanStd: vecnormalize.pkl loads with plain SB3
    venvs[2].save(str(tmp_path / "vecnormalize.pkl"))
    loaded = VecNormalize.load(str(tmp_path / "vecnormalize.pkl"), DummyVecEnv([DictObsEnv]))
    assert_bit_equal([venvs[2], loaded])


def test_different_bases_rank0_wins() -> None:
    # (d) each rank's VecNormalize saw its own warm-up data before training: the bases differ
    venvs = [make_venv("pendulum", seed=20 + rank) for rank in range(RANKS)]
    for rank, venv in enumerate(venvs):
        Recorder(venv, seed=50 + rank).step(30 + 25 * rank)
    bases = [snapshot(venv) for venv in venvs]
    assert bases[1]["obs"].count != bases[0]["obs"].count
    world = FakeWorld(RANKS)
    mergers = world.mergers(venvs)
    recorders = [Recorder(venv, seed=rank) for rank, venv in enumerate(venvs)]
    for rank, recorder in enumerate(recorders):
        recorder.step(120 + 40 * rank)
    world.merge_ok(mergers)
    assert_bit_equal(venvs)
    assert_close(statistics(venvs[2]), reference(bases[0], recorders))  # rank 0's base plus every rank's change
    for recorder in recorders:
        recorder.step(50)
    world.merge_ok(mergers)  # the bases are shared from now on: no second broadcast
    assert_bit_equal(venvs)
    assert_close(statistics(venvs[1]), reference(bases[0], recorders))
    assert world.calls == [["broadcast_from_rank0", "all_reduce_sum", "all_reduce_sum"]] * RANKS


def test_merging_whole_statistics_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """(e) The reference check fails for a merge of whole statistics (each rank's current statistics as its
    "change"), which counts the shared base once per rank."""

    def whole(base: RunningMeanStd, current: RunningMeanStd) -> tuple[float, np.ndarray, np.ndarray]:
        return float(current.count), current.mean - base.mean, current.var * current.count

    def run() -> tuple[list[VecNormalize], dict[str, RunningMeanStd]]:
        venvs, base = shared_base("pendulum")
        world = FakeWorld(RANKS)
        mergers = world.mergers(venvs)
        recorders = [Recorder(venv, seed=rank) for rank, venv in enumerate(venvs)]
        for recorder in recorders:
            recorder.step(100)
        world.merge_ok(mergers)
        return venvs, reference(base, recorders)

    venvs, expected = run()
    assert_close(statistics(venvs[0]), expected)
    monkeypatch.setattr(vn, "_change_since", whole)
    venvs, expected = run()
    assert_bit_equal(venvs)  # the ranks still agree with each other ...
    with pytest.raises(AssertionError):
        assert_close(statistics(venvs[0]), expected)  # ... on the wrong statistics
    assert statistics(venvs[0])["obs"].count > expected["obs"].count + 2 * 40  # the base counted 3 times over


def test_norm_obs_false_and_norm_reward_false() -> None:
    for kwargs, names in (({"norm_obs": False}, {"ret"}), ({"norm_reward": False}, {"ret", "obs"})):
        venvs, base = shared_base("pendulum", **kwargs)
        assert set(base) == names
        world = FakeWorld(RANKS)
        mergers = world.mergers(venvs)
        recorders = [Recorder(venv, seed=rank) for rank, venv in enumerate(venvs)]
        for recorder in recorders:
            recorder.step(80)
        world.merge_ok(mergers)
        assert_bit_equal(venvs)
        # SB3 updates ret_rms whenever training, norm_reward or not: merged like one process would have it
        assert_close(statistics(venvs[0]), reference(base, recorders))


def test_not_training_rank_contributes_nothing_and_stays_in_step() -> None:
    venvs, base = shared_base("dict")
    venvs[1].training = False
    world = FakeWorld(RANKS)
    mergers = world.mergers(venvs)
    recorders = [Recorder(venv, seed=rank) for rank, venv in enumerate(venvs)]
    for recorder in recorders:
        recorder.step(70)
    assert recorders[1].batches["ret"] == []  # SB3 did not update rank 1's statistics
    statistics(venvs[1])["pos"].mean += 5.0  # out of band: discarded, not merged
    world.merge_ok(mergers)
    assert world.calls == [["broadcast_from_rank0", "all_reduce_sum"]] * RANKS  # every rank made the same calls
    assert_bit_equal(venvs)
    assert_close(statistics(venvs[1]), reference(base, recorders))


def test_merge_without_new_data_keeps_the_base() -> None:
    venvs, base = shared_base("pendulum")
    world = FakeWorld(RANKS)
    mergers = world.mergers(venvs)
    world.merge_ok(mergers)
    for venv in venvs:
        for name, rms in statistics(venv).items():
            assert rms.count == base[name].count
            np.testing.assert_array_equal(rms.mean, base[name].mean)
            np.testing.assert_array_equal(rms.var, base[name].var)


def test_statistics_that_went_backwards_raise_on_every_rank() -> None:
    venvs, _ = shared_base("pendulum")
    world = FakeWorld(RANKS)
    mergers = world.mergers(venvs)
    fresh = RunningMeanStd(shape=np.shape(statistics(venvs[2])["obs"].mean))
    venvs[2].obs_rms = fresh  # type: ignore[assignment]  # replaced behind the merger's back (SB3 types it a dict)
    errors = world.merge(mergers)
    # every rank raises the same error after the all-reduce (no rank is left waiting in a collective)
    assert all(isinstance(error, RuntimeError) and "smaller count" in str(error) for error in errors), errors


def test_change_since_inverts_update_from_moments() -> None:
    rng = np.random.default_rng(0)
    base = RunningMeanStd(shape=(4,))
    base.update(rng.normal(3.0, 2.0, (57, 4)))
    current = base.copy()
    data = [rng.normal(-1.0, 0.5, (n, 4)) for n in (5, 17, 1, 40)]
    for batch in data:
        current.update(batch)
    count, delta, m2 = vn._change_since(base, current)
    everything = np.concatenate(data)
    assert count == pytest.approx(len(everything), rel=1e-12)
    np.testing.assert_allclose(base.mean + delta, everything.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(m2, everything.var(axis=0) * len(everything), rtol=1e-10)
    assert vn._change_since(base, base.copy())[0] == 0.0  # nothing moved
