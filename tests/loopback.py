"""Rendezvous of the multi-process tests on 127.0.0.1 only.

A ``TCPStore`` given a port listens on every interface (checked with ``ss``), so the test process hosts the job's
store itself on a socket it binds to 127.0.0.1, and the ranks connect to it as torchrun's workers connect to their
agent's store (``TORCHELASTIC_USE_AGENT_STORE=True``: every rank is a client of MASTER_ADDR:MASTER_PORT). Gloo's
own sockets stay on the loopback interface (``GLOO_SOCKET_IFNAME=lo``).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import torch.distributed as dist

TESTS = Path(__file__).resolve().parent


@contextlib.contextmanager
def loopback_store(timeout: float = 120.0) -> Iterator[int]:
    """Host a job's store on 127.0.0.1 while the block runs; yields its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = int(listener.getsockname()[1])
    store = dist.TCPStore(
        "127.0.0.1", port, is_master=True, timeout=datetime.timedelta(seconds=timeout),
        master_listen_fd=listener.detach(), wait_for_workers=False,  # the store owns (and closes) the socket
    )  # fmt: skip
    try:
        yield port
    finally:
        del store


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
