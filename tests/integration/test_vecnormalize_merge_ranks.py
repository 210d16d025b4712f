"""VecNormalizeMerger over real ``torch.distributed`` collectives: two gloo ranks on 127.0.0.1 (two processes), each
with its own VecNormalize whose statistics started from its own warm-up data, step different amounts of data and merge
twice through ``dist.all_reduce`` / ``dist.broadcast``. Both end bit for bit equal, and equal (1e-9) to one
RunningMeanStd that saw rank 0's base and then both ranks' data. Every rendezvous binds 127.0.0.1 only and every
process stops by itself within a bounded time (60 s process-group timeout, 60 s per process here)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from loopback import rank_env, run_ranks
from stable_baselines3.common.running_mean_std import RunningMeanStd

TESTS = Path(__file__).resolve().parents[1]

# The unit test's helpers (make_venv, Recorder, snapshot, statistics) drive and record each rank.
WORKER = r"""
import datetime, sys
import numpy as np
import torch as th
import torch.distributed as dist
from test_vecnormalize_merge import Recorder, make_venv, snapshot, statistics
from sb3_trpo_ext.distributed.vecnormalize import VecNormalizeMerger

rank, world, out, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
th.set_num_threads(1)


def all_reduce_sum(array):
    tensor = th.from_numpy(array.copy())
    dist.all_reduce(tensor)  # SUM
    return tensor.numpy()


def broadcast_from_rank0(array):
    tensor = th.from_numpy(array.copy())
    dist.broadcast(tensor, src=0)
    return tensor.numpy()


dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
try:
    venv = make_venv(kind, seed=30 + rank)
    Recorder(venv, seed=60 + rank).step(20 + 30 * rank)  # each rank's own base
    base = snapshot(venv)
    merger = VecNormalizeMerger(venv, all_reduce_sum, broadcast_from_rank0)
    recorder = Recorder(venv, seed=rank)
    for round_ in range(2):
        recorder.step(100 + 50 * rank + 10 * round_)
        merger.merge()
finally:
    dist.destroy_process_group()
arrays = {}
for name, rms in statistics(venv).items():
    arrays[f"final__{name}__stats"] = np.concatenate([[rms.count], np.ravel(rms.mean), np.ravel(rms.var)])
    arrays[f"base__{name}__stats"] = np.concatenate([[base[name].count], np.ravel(base[name].mean), np.ravel(base[name].var)])
    arrays[f"batches__{name}"] = np.stack(recorder.batches[name])
np.savez(out, **arrays)
"""


def _run(tmp_path: Path, kind: str, world: int) -> list[dict[str, np.ndarray]]:
    outs = [tmp_path / f"{kind}-{rank}.npz" for rank in range(world)]
    unit_tests = os.pathsep.join([str(TESTS / "unit"), str(TESTS), os.environ.get("PYTHONPATH", "")])
    commands = [[sys.executable, "-c", WORKER, str(rank), str(world), str(out), kind] for rank, out in enumerate(outs)]
    codes, errors, _ = run_ranks(commands, lambda rank, port: rank_env(rank, world, port, PYTHONPATH=unit_tests), 60)
    assert codes == [0] * world, errors
    results = []
    for out in outs:
        with np.load(out) as data:
            results.append({key: data[key] for key in data.files})
    return results


@pytest.mark.parametrize("kind", ["pendulum", "dict"])
def test_two_gloo_ranks_merge_to_the_one_process_statistics(tmp_path: Path, kind: str) -> None:
    ranks = _run(tmp_path, kind, 2)
    names = sorted(key.split("__")[1] for key in ranks[0] if key.startswith("final__"))
    assert names == (["obs", "ret"] if kind == "pendulum" else ["pos", "ret", "vel"])
    for name in names:
        final = f"final__{name}__stats"
        np.testing.assert_array_equal(ranks[1][final], ranks[0][final], err_msg=name)  # bit for bit
        base = ranks[0][f"base__{name}__stats"]
        assert ranks[1][f"base__{name}__stats"][0] != base[0]  # the bases differed: rank 0's is the one kept
        size = (base.size - 1) // 2
        expected = RunningMeanStd(shape=(size,) if name != "ret" else ())
        expected.count, expected.mean, expected.var = base[0], base[1 : 1 + size], base[1 + size :]
        if name == "ret":
            expected.mean, expected.var = expected.mean.reshape(()), expected.var.reshape(())
        for rank in ranks:
            for batch in rank[f"batches__{name}"]:
                expected.update(batch)
        got = ranks[0][final]
        np.testing.assert_allclose(got[0], expected.count, rtol=1e-9, err_msg=name)
        np.testing.assert_allclose(got[1 : 1 + size], np.ravel(expected.mean), rtol=1e-9, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(got[1 + size :], np.ravel(expected.var), rtol=1e-9, err_msg=name)
