"""The fault bound of data-parallel training (:class:`sb3_trpo_ext.distributed.monitor.RankMonitor`): two real
processes meet through a ``TCPStore``; a rank in a long callback does not trip the bound, a rank hung in ``env.step``
or frozen stops the other with an error naming it, within the bound. Either rank can be the odd one out (rank 0 also
hosts the store). Only behaviour is asserted (these machines are noisy); the bound is 2 s, heartbeats every 0.2 s.

The jobs run all at once (a module fixture), each test asserts on its part: the file's wall time is one job's. A
"training" job per odd rank: 3 rollouts, 10 meetings back to back, a rollout where the odd rank ends in a 6 s
callback, one where it hangs in ``env.step``. A "frozen" job per odd rank: rank 1 stops itself (SIGSTOP), rank 0
holds the GIL in C code (rank 0 hosts the store, which a stopped process could not serve).

The store listens on a socket the test binds to 127.0.0.1 and hands to rank 0 (a ``TCPStore`` given a port listens on
every interface). Every process ends within a bounded time: the fixture kills what is left (a failure included), and
each worker dies with the test process (Linux) and after 90 s in any case.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP, SIGALRM and fd passing are POSIX")

ROOT = Path(__file__).resolve().parents[2]

WORKER = r"""
import contextlib, ctypes, datetime, json, os, signal, sys, time

with contextlib.suppress(Exception):  # Linux: die with the test process, even if it is killed itself
    ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
signal.alarm(90)  # and within 90 s in any case
import torch.distributed as dist
from sb3_trpo_ext.distributed.monitor import RankMonitor, RankStalledError

rank, listen_fd, scenario, odd = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
store = dist.TCPStore(
    os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), 2, rank == 0, timeout=datetime.timedelta(seconds=30),
    master_listen_fd=listen_fd if rank == 0 else None,
)
monitor = RankMonitor(dist.PrefixStore("monitor/", store), rank, 2, timeout=2.0, interval=0.2)


def report(**fields):
    print(json.dumps(fields), flush=True)


def meet(tag):
    begin = time.monotonic()
    try:
        monitor.wait_for_all(tag)
    except RankStalledError as error:
        report(event="stalled", tag=tag, ranks=list(error.ranks), message=str(error), waited=time.monotonic() - begin)
        os._exit(3)  # the job stops (torchrun would end the other ranks)
    report(event="met", tag=tag, waited=time.monotonic() - begin)


def steps(n):
    for _ in range(n):
        monitor.progress()  # one fake env.step
        time.sleep(0.001)


monitor.start()
if scenario == "training":
    for k in range(3):
        steps(20 * (rank + 1))
        meet(f"rollout-{k}")
    begin = time.perf_counter()
    for k in range(10):
        monitor.wait_for_all(f"fast-{k}")
    report(event="cost", per_meeting=(time.perf_counter() - begin) / 10)  # reported, not asserted
    steps(5)
    if rank == odd:
        with monitor.in_callback():
            time.sleep(6)  # a long evaluation: 3 bounds
    meet("callback")
    steps(5)
    if rank == odd:
        time.sleep(600)  # a simulator hung inside env.step
    meet("hang")
else:
    steps(5)
    if rank == odd:
        with monitor.in_callback():  # a callback, so that only the silent heartbeat can tell ...
            time.sleep(0.5)  # ... once the heartbeat said so
            if scenario == "sigstop":
                os.kill(os.getpid(), signal.SIGSTOP)  # the whole process stops
            else:
                ctypes.PyDLL(None).sleep(600)  # C code holding the GIL: the heartbeat thread cannot run
    meet("frozen")
"""

JOBS = {"training-0": ("training", 0), "training-1": ("training", 1), "sigstop-1": ("sigstop", 1), "gil-0": ("gil", 0)}


@dataclass
class Rank:
    code: int
    events: list[dict]
    err: str


@dataclass
class Job:
    odd: int  # the rank that hangs, sits in the callback or freezes
    ranks: list[Rank]
    odd_alive: bool  # when the other rank had ended

    @property
    def waiter(self) -> Rank:
        return self.ranks[1 - self.odd]

    def met(self, rank: int) -> dict[str, dict]:
        return {event["tag"]: event for event in self.ranks[rank].events if event["event"] == "met"}


def _launch(scenario: str, odd: int) -> list[subprocess.Popen[str]]:
    listener = socket.socket()
    processes: list[subprocess.Popen[str]] = []
    try:
        listener.bind(("127.0.0.1", 0))  # loopback only, and a port no other job can take
        listener.listen()
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(listener.getsockname()[1]),
            "GLOO_SOCKET_IFNAME": "lo",
            "OMP_NUM_THREADS": "1",
        }
        for rank in range(2):
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-c", WORKER, str(rank), str(listener.fileno()), scenario, str(odd)],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    pass_fds=(listener.fileno(),) if rank == 0 else (),
                )
            )
    except BaseException:
        for process in processes:
            process.kill()
            process.communicate()
        raise
    finally:
        listener.close()  # rank 0 has its own copy
    return processes


def _rank(process: subprocess.Popen[str], timeout: float | None = None) -> Rank:
    out, err = process.communicate(timeout=timeout)
    return Rank(process.returncode, [json.loads(line) for line in out.splitlines() if line.startswith("{")], err)


@pytest.fixture(scope="module")
def jobs() -> Iterator[dict[str, Job]]:
    """Runs every job at once; each waiting rank must end by itself within 60 s, the odd ones are then killed."""
    started: dict[str, list[subprocess.Popen[str]]] = {}
    try:
        for name, (scenario, odd) in JOBS.items():
            started[name] = _launch(scenario, odd)
        waiters = {name: _rank(started[name][1 - odd], timeout=60) for name, (_, odd) in JOBS.items()}
        alive = {name: started[name][odd].poll() is None for name, (_, odd) in JOBS.items()}
        time.sleep(1.0)  # the odd rank of training-1 beats into the store its host (rank 0) took away when it ended
        for processes in started.values():
            for process in processes:
                if process.poll() is None:
                    process.kill()
        done = {}
        for name, (_, odd) in JOBS.items():
            ranks = [waiters[name], _rank(started[name][odd])]
            done[name] = Job(odd, ranks if odd == 1 else ranks[::-1], alive[name])
        yield done
    finally:
        for processes in started.values():
            for process in processes:
                process.kill()  # a no-op for a process already reaped; a stopped one is killed too
                process.wait()
                for pipe in (process.stdout, process.stderr):
                    if pipe is not None:
                        pipe.close()


def _assert_stalled(job: Job, tag: str) -> str:
    """The waiting rank stopped at ``tag`` with a RankStalledError naming the odd rank, within the bound (never
    before it), while the odd rank was still there (hung, not crashed). Returns the message."""
    assert job.waiter.code == 3, job.waiter.err[-3000:]
    stalled = job.waiter.events[-1]
    assert stalled["event"] == "stalled" and stalled["tag"] == tag and stalled["ranks"] == [job.odd], stalled
    assert f"rank {job.odd}" in stalled["message"] and "distributed_timeout=2 seconds" in stalled["message"]
    assert 2.0 <= stalled["waited"] < 15.0
    assert job.odd_alive
    return str(stalled["message"])


@pytest.mark.parametrize("odd", [0, 1])
def test_ranks_meet_repeatedly(jobs: dict[str, Job], odd: int) -> None:
    job = jobs[f"training-{odd}"]
    for rank in range(2):
        assert list(job.met(rank))[:3] == ["rollout-0", "rollout-1", "rollout-2"], job.ranks[rank].err[-3000:]
        (cost,) = [event for event in job.ranks[rank].events if event["event"] == "cost"]
        print(f"rank {rank}: {cost['per_meeting'] * 1e3:.2f} ms per meeting")


@pytest.mark.parametrize("odd", [0, 1])
def test_a_long_callback_does_not_trip_the_bound(jobs: dict[str, Job], odd: int) -> None:
    job = jobs[f"training-{odd}"]
    assert "callback" in job.met(odd) and "callback" in job.met(1 - odd), job.waiter.err[-3000:]
    assert job.met(1 - odd)["callback"]["waited"] > 2.0  # the other rank did wait past the bound


@pytest.mark.parametrize("odd", [0, 1])
def test_a_rank_hung_in_env_step_stops_the_job(jobs: dict[str, Job], odd: int) -> None:
    job = jobs[f"training-{odd}"]
    message = _assert_stalled(job, "hang")
    assert "no progress" in message and "env.step" in message
    # the odd rank's heartbeat thread outlived the store (training-1) or the other rank (training-0) without a
    # Python traceback, and (a TCPStore client never reconnects) stopped at the first error: torch logs each one
    odd_err = job.ranks[odd].err
    assert "Traceback" not in odd_err and "Exception in thread" not in odd_err, odd_err[-3000:]
    assert odd_err.count("Exception raised from") <= 1, odd_err[-3000:]


@pytest.mark.parametrize("name", ["sigstop-1", "gil-0"])
def test_a_frozen_rank_stops_the_job(jobs: dict[str, Job], name: str) -> None:
    job = jobs[name]
    message = _assert_stalled(job, "frozen")
    assert f"rank {job.odd}'s heartbeat has been silent" in message and "last phase: callback" in message
