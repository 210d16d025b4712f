"""Rendezvous of the multi-process tests on 127.0.0.1 only.

A ``TCPStore`` given a port listens on every interface (checked with ``ss``), so the test process hosts the job's
store itself on a socket it binds to 127.0.0.1 (:func:`sb3_trpo_ext.distributed.ranks.loopback_store`), and the ranks connect to it as torchrun's workers connect to their
agent's store (``TORCHELASTIC_USE_AGENT_STORE=True``: every rank is a client of MASTER_ADDR:MASTER_PORT). Gloo's
own sockets stay on the loopback interface (``GLOO_SOCKET_IFNAME=lo``).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sb3_trpo_ext.distributed.ranks import loopback_store

TESTS = Path(__file__).resolve().parent


def rank_env(rank: int, world: int, port: int, **extra: str) -> dict[str, str]:
    """The environment of rank ``rank`` of ``world`` (as torchrun sets it), on the loopback interface, with
    ``tests/`` importable."""
    return {
        **os.environ,
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "TORCHELASTIC_USE_AGENT_STORE": "True",
        "GLOO_SOCKET_IFNAME": "lo",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        **extra,
    }


def run_ranks(
    commands: Sequence[Sequence[str]], env: Callable[[int, int], dict[str, str]], timeout: float
) -> tuple[list[int], list[str], float]:
    """Run one process per command (rank = its index) with the environment ``env(rank, port)``, the job's store on
    127.0.0.1 meanwhile; every process still running after ``timeout`` seconds is killed.

    :return: the exit codes (negative: killed by that signal), each process's stderr, and the seconds until the
        first process exited
    """
    with loopback_store() as port:
        processes = [
            subprocess.Popen(command, env=env(rank, port), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for rank, command in enumerate(commands)
        ]
        started, first_exit = time.monotonic(), None
        try:
            while any(process.poll() is None for process in processes) and time.monotonic() - started < timeout:
                if first_exit is None and any(process.poll() is not None for process in processes):
                    first_exit = time.monotonic() - started
                time.sleep(0.05)
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
        errors = [process.communicate()[1] for process in processes]
    return [process.returncode for process in processes], errors, first_exit or time.monotonic() - started
