"""Data-parallel TRPO (issue 24) with two ranks on this machine: each test starts two worker processes
(tests/dp_worker.py) as torchrun would (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR=127.0.0.1``, a free port,
``GLOO_SOCKET_IFNAME=lo``): every rendezvous binds 127.0.0.1 only, and every process is killed if it outlives
its timeout."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from loopback import rank_env, run_ranks

TESTS = Path(__file__).resolve().parents[1]
WORKER = TESTS / "dp_worker.py"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))  # loopback only
        return int(probe.getsockname()[1])


def loopback_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "GLOO_SOCKET_IFNAME": "lo",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        **extra,
    }


def launch(
    tmp_path: Path, scenario: str, world: int = 2, timeout: float = 120, **extra: str
) -> tuple[list[dict[str, Any]], list[int], list[str], float]:
    """Run ``scenario`` on ``world`` ranks (``world=1``: the one-process reference, no torch.distributed).

    :return: each rank's result, exit code and stderr, and the seconds until the first process exited
    """
    outs = [tmp_path / f"{scenario}-{world}-{rank}.json" for rank in range(world)]
    commands = [[sys.executable, str(WORKER), scenario, str(out)] for out in outs]
    codes, errors, first_exit = run_ranks(
        commands,
        lambda rank, port: rank_env(rank, world, port, **extra) if world > 1 else loopback_env(**extra),
        timeout,
    )
    results = [json.loads(out.read_text()) if out.exists() else {} for out in outs]
    return results, codes, errors, first_exit


def succeed(tmp_path: Path, scenario: str, world: int = 2, **extra: str) -> list[dict[str, Any]]:
    results, codes, errors, _ = launch(tmp_path, scenario, world, **extra)
    for result, code, error in zip(results, codes, errors, strict=True):
        assert code == 0, result.get("traceback") or error[-3000:]
    return results


def test_the_update_of_two_ranks_on_the_halves_of_a_batch_is_the_one_process_update_on_the_whole(tmp_path):
    (whole,) = succeed(tmp_path, "update", world=1)
    ranks = succeed(tmp_path, "update")
    for rank in ranks:
        assert rank["cg_iterations"] == whole["cg_iterations"]
        assert rank["line_search_steps"] == whole["line_search_steps"]
        # identical on every rank: each branch was decided on the same reduced values
        assert rank["actor"] == ranks[0]["actor"] and rank["critic"] == ranks[0]["critic"]
    # The critic fits the gathered batch in the shared order: the one-process regression, bit for bit.
    assert ranks[0]["critic"] == whole["critic"]
    # The actor's means are the halves' float32 means weighted and summed in float64, where one process takes one
    # float32 mean: they differ in the last bits (~1e-7 relative), which CG's iterations amplify. Measured on the
    # step (the change of the parameters): within 1e-3 of its norm.
    initial = np.array(whole["initial"])
    assert ranks[0]["initial"] == whole["initial"]
    one_process, two_ranks = np.array(whole["actor"]) - initial, np.array(ranks[0]["actor"]) - initial
    assert np.linalg.norm(one_process) > 0.01  # a step was taken
    assert np.linalg.norm(two_ranks - one_process) <= 1e-3 * np.linalg.norm(one_process)


def test_rank_seeds_and_global_steps(tmp_path):
    (reference,) = succeed(tmp_path, "seeds", world=1)
    ranks = succeed(tmp_path, "seeds")
    for rank, result in enumerate(ranks):
        # rank r's 2 environments are environments 2r, 2r+1 of one process with 4 (SB3's seed + i rule)
        assert result["obs"] == reference["obs"][2 * rank : 2 * rank + 2]
        assert result["num_timesteps"] == 256  # global steps: 2 ranks x 2 envs x 64 steps
    assert ranks[0]["draws"] != ranks[1]["draws"]  # each rank draws its own actions
    assert ranks[0]["params"] == ranks[1]["params"]
    again = succeed(tmp_path, "seeds")
    assert again[0]["params"] == ranks[0]["params"]  # reproducible from the seed


def test_a_stop_by_rank_0s_callback_mid_rollout_stops_every_rank(tmp_path):
    ranks = succeed(tmp_path, "stop_mid_rollout")
    for result in ranks:
        assert result["n_updates"] == 2
    assert ranks[0]["params"] == ranks[1]["params"]


def test_a_non_finite_batch_on_one_rank_is_skipped_by_every_rank(tmp_path):
    ranks = succeed(tmp_path, "non_finite")
    for rank, result in enumerate(ranks):
        assert not result["moved"], rank
        assert any("update is skipped" in message for message in result["warnings"]), rank
    assert any("another rank" in message for message in ranks[0]["warnings"])


def test_different_settings_are_refused_at_start(tmp_path):
    results, codes, _, _ = launch(tmp_path, "mismatch")
    assert codes == [3, 3]
    for result in results:
        assert result["error"] == "SettingsMismatchError"
        assert "target_kl" in result["message"] and "rank 1" in result["message"]


def test_a_rank_whose_parameters_differ_is_named(tmp_path):
    results, codes, _, _ = launch(tmp_path, "diverge")
    assert codes == [3, 3]
    for result in results:
        assert result["error"] == "ParameterMismatchError" and "[1]" in result["message"]


def test_rank_0_alone_writes_logs_and_saves_and_vecnormalize_is_merged(tmp_path):
    folder = tmp_path / "run"
    ranks = succeed(tmp_path, "rank_zero_speaks", DP_FOLDER=str(folder))
    assert sorted(path.name for path in folder.iterdir()) == ["model-rank0.zip", "tb"]
    assert len(list((folder / "tb").rglob("events.out.tfevents*"))) == 1
    # the two ranks normalise with the same statistics, which saw every rank's steps
    assert ranks[0]["obs_rms"] == ranks[1]["obs_rms"] and ranks[0]["ret_rms"] == ranks[1]["ret_rms"]
    assert ranks[0]["obs_rms"][2] == pytest.approx(512 + 2, abs=0.01)  # 512 global steps, each rank's reset, 1e-4
    assert ranks[0]["params"] == ranks[1]["params"]
    assert ranks[0]["episodes"] == 2  # one Pendulum episode (200 steps) on each rank, logged by rank 0


def test_a_model_built_on_one_rank_only_to_predict_joins_no_job(tmp_path):
    results, codes, _, _ = launch(tmp_path, "predict_only", timeout=60)
    assert codes == [0, 0] and not results[0]["initialised"]  # the ranks join in learn(), not at construction


@pytest.mark.parametrize("scenario", ["vine", "recurrent", "maskable"])
def test_the_family_trains_data_parallel(tmp_path, scenario):
    ranks = succeed(tmp_path, scenario)
    for result in ranks:
        assert result["moved"] and result["n_updates"] >= 1
    assert ranks[0]["params"] == ranks[1]["params"]


def test_a_hung_rank_stops_the_job_within_the_bound(tmp_path):
    results, codes, errors, first_exit = launch(tmp_path, "hang", timeout=90)
    assert codes[0] == 3, errors[0][-2000:]
    assert results[0]["error"] == "RankStalledError" and "rank 1" in results[0]["message"]
    assert first_exit < 60  # distributed_timeout=3 s: detected within seconds, not torch's 30 minutes


def test_a_long_callback_on_rank_0_does_not_trip_the_bound(tmp_path):
    ranks = succeed(tmp_path, "long_callback")  # a 6 s callback with distributed_timeout=2 s
    assert ranks[0]["params"] == ranks[1]["params"]


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="no torchrun")
def test_two_torchrun_nodes_on_this_machine(tmp_path):
    """Two ``torchrun --nnodes 2`` launches meeting at a c10d rendezvous on 127.0.0.1 stand in for two machines."""
    torchrun = str(Path(sys.executable).parent / "torchrun")
    port = str(free_port())
    outs = [tmp_path / f"node{node}.json" for node in range(2)]
    launches = [
        subprocess.Popen(
            [
                torchrun,
                "--nnodes",
                "2",
                "--nproc-per-node",
                "1",
                "--node-rank",
                str(node),
                "--rdzv-backend",
                "c10d",
                "--rdzv-endpoint",
                f"127.0.0.1:{port}",
                "--rdzv-id",
                "sb3-trpo-ext-test",
                "--master-addr",
                "127.0.0.1",
                "--local-addr",
                "127.0.0.1",
                str(WORKER),
                "seeds",
                str(out),
            ],
            env=loopback_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for node, out in enumerate(outs)
    ]
    try:
        for process in launches:
            _, error = process.communicate(timeout=150)
            assert process.returncode == 0, error[-3000:]
    finally:
        for process in launches:
            if process.poll() is None:
                process.kill()
    results = [json.loads(out.read_text()) for out in outs]
    assert results[0]["params"] == results[1]["params"]
    assert {result["num_timesteps"] for result in results} == {256}
