"""The ranks of a data-parallel job (``torchrun``): who this process is, and the few collectives training needs
besides the update's means (:class:`~sb3_trpo_ext.common.reduce.DistributedReducer`).

Outside ``torchrun`` (no process group, ``WORLD_SIZE`` unset or 1) :func:`join` returns None and nothing here runs.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import hashlib
import itertools
import os
import socket
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch as th
import torch.distributed as dist

from sb3_trpo_ext.common.reduce import DistributedReducer
from sb3_trpo_ext.distributed.monitor import RankMonitor

__all__ = ["ParameterMismatchError", "Ranks", "SettingsMismatchError", "join", "loopback_store"]

#: the tolerance of the parameter comparison: below it a difference is float rounding of a different machine
#: (the ranks are put back on rank 0's parameters), above it the ranks have diverged (an error)
DRIFT_TOLERANCE = 1e-6


#: numbers the monitors this process starts (their store prefixes)
_MONITOR_NUMBERS = itertools.count(1)


class SettingsMismatchError(RuntimeError):
    """The ranks were started with different classes or hyperparameters."""


class ParameterMismatchError(RuntimeError):
    """A rank's parameters differ from rank 0's: the ranks no longer train one model."""


def join(timeout: float, monitored: bool = True) -> Ranks | None:
    """The data-parallel ranks of this process, or None in one process.

    Under ``torchrun`` (``WORLD_SIZE > 1``) the default process group is initialised here if the script has not
    done it (``env://``: torchrun's MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE; gloo for CPU tensors, NCCL for
    CUDA ones where CUDA is available), with ``timeout`` seconds as the collectives' timeout.

    :param monitored: start the meetings' fault bound (:class:`RankMonitor`); False for a caller that holds no
        meetings (the Zoo's entry point, which only needs the group, the rank and the size)
    """
    if not dist.is_available():
        return None
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return None
        backend = "cpu:gloo,cuda:nccl" if th.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout))
        atexit.register(_destroy_group)  # ours to close; atexit runs it after the monitor has stopped (LIFO)
    if dist.get_world_size() <= 1:
        return None
    ranks = Ranks(dist.get_rank(), dist.get_world_size(), _monitor(timeout) if monitored else None)
    # Stop the heartbeat thread before the interpreter exits: a thread inside a store call when the process tears
    # down its C++ objects aborts it ("terminate called without an active exception", exit status -6).
    atexit.register(ranks.close)
    return ranks


@contextlib.contextmanager
def loopback_store(timeout: float = 300.0) -> Iterator[int]:
    """Host a job's key-value store on a socket bound to 127.0.0.1 while the block runs, and yield its port: for
    starting ranks yourself on one machine (the tests and ``benchmarks/scale.py`` do). A ``TCPStore`` given only a
    port listens on every interface; ranks started with ``MASTER_ADDR=127.0.0.1``, ``MASTER_PORT=<port>`` and
    ``TORCHELASTIC_USE_AGENT_STORE=True`` connect to this one as torchrun's workers connect to their agent's."""
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


def _destroy_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _monitor(timeout: float) -> RankMonitor | None:
    """The meeting point with a fault bound (:class:`RankMonitor`) on a client of the job's store at
    MASTER_ADDR:MASTER_PORT (torchrun's, or rank 0's ``env://`` store), under a prefix of its own; None where the
    group was initialised some other way (then the collectives' own timeout is the only bound)."""
    address, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not (address and port):
        warnings.warn(
            "sb3_trpo_ext: MASTER_ADDR/MASTER_PORT are not set, so a hung rank is detected only by the process "
            "group's own timeout (a long evaluation on rank 0 can trip it): launch with torchrun",
            stacklevel=3,
        )
        return None
    client = dist.TCPStore(address, int(port), is_master=False, timeout=datetime.timedelta(seconds=timeout))
    # a prefix per monitor (every rank starts as many, in the same order: one per model that learns): a monitor's
    # keys stay in the store after it stops, and the next one must not read them
    prefix = f"sb3_trpo_ext/monitor/{next(_MONITOR_NUMBERS)}/"
    monitor = RankMonitor(dist.PrefixStore(prefix, client), dist.get_rank(), dist.get_world_size(), timeout)
    monitor.start()
    return monitor


@dataclass
class Ranks:
    """This process's place in the job and the collectives of training (every rank calls each in the same
    order)."""

    rank: int
    world_size: int
    monitor: RankMonitor | None
    reducer: DistributedReducer = field(default_factory=DistributedReducer)
    _meetings: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the rank that logs, saves and calls the user's callbacks."""
        return self.rank == 0

    def meet(self) -> None:
        """Wait until every rank has finished its rollout: the fault bound lives here (a rank that makes no
        progress outside a callback for ``timeout`` seconds raises :class:`RankStalledError` on the others)."""
        self._meetings += 1
        if self.monitor is not None:
            self.monitor.wait_for_all(f"rollout-{self._meetings}")

    def all_true(self, flag: bool) -> bool:
        """True when ``flag`` is True on every rank (a decision no rank takes alone)."""
        value = th.tensor([1.0 if flag else 0.0], dtype=th.float64)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item() == 1.0)

    def any_true(self, flag: bool) -> bool:
        """True when ``flag`` is True on some rank."""
        return not self.all_true(not flag)

    def sum(self, values: np.ndarray) -> np.ndarray:
        """The elementwise sum over ranks of a float64 array (the same on every rank)."""
        tensor = th.from_numpy(np.ascontiguousarray(values, dtype=np.float64)).clone()
        dist.all_reduce(tensor)
        return tensor.numpy()

    def broadcast(self, values: np.ndarray) -> np.ndarray:
        """Rank 0's float64 array, on every rank."""
        tensor = th.from_numpy(np.ascontiguousarray(values, dtype=np.float64)).clone()
        dist.broadcast(tensor, src=0)
        return tensor.numpy()

    def broadcast_seed(self, seed: int | None) -> int:
        """Rank 0's seed (drawn there when None), so that every rank derives its streams from one number."""
        chosen = seed if seed is not None else int(np.random.SeedSequence().generate_state(1)[0] >> 1)
        return int(self.broadcast(np.array([chosen], dtype=np.float64))[0])

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order."""
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def gather_rows(self, rows: np.ndarray) -> list[np.ndarray]:
        """Every rank's float64 ``rows`` (``(n_r, d)``, ``n_r`` may differ between ranks), in rank order: the
        counts, then the rows padded to the longest (two all-gathers)."""
        counts = self.gather(th.tensor([len(rows)], dtype=th.int64)).tolist()
        padded = np.zeros((max(counts), rows.shape[1]), dtype=np.float64)
        padded[: len(rows)] = rows
        everyone = self.gather(th.from_numpy(padded)).numpy().reshape(self.world_size, max(counts), rows.shape[1])
        return [everyone[rank, :count] for rank, count in enumerate(counts)]

    def gather(self, tensor: Any) -> Any:
        """Every rank's rows of ``tensor`` (or of each entry of a dict of tensors), concatenated in rank order:
        the batch one process with every rank's environments would hold (SB3's flattening puts environment
        after environment, and rank ``r`` holds environments ``r*k .. r*k+k-1``)."""
        if isinstance(tensor, dict):
            return {key: self.gather(value) for key, value in tensor.items()}
        parts = [th.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return th.cat(parts)

    def broadcast_parameters(self, params: Any) -> None:
        """Put rank 0's values into ``params`` on every rank (training starts from one model whatever each rank
        initialised or loaded)."""
        with th.no_grad():
            for param in params:
                dist.broadcast(param.data, src=0)

    def check_same_settings(self, settings: dict[str, str]) -> None:
        """Refuse to start when a rank's class or hyperparameters differ from rank 0's.

        :raises SettingsMismatchError: naming the rank and the settings that differ
        """
        digest = hashlib.sha256(repr(sorted(settings.items())).encode()).hexdigest()
        everyone = self.gather_objects((digest, settings))
        reference_digest, reference = everyone[0]
        for rank, (rank_digest, rank_settings) in enumerate(everyone):
            if rank_digest != reference_digest:
                differ = sorted(
                    k for k in reference.keys() | rank_settings.keys() if reference.get(k) != rank_settings.get(k)
                )
                details = "; ".join(
                    f"{k}: rank 0 {reference.get(k)!r}, rank {rank} {rank_settings.get(k)!r}" for k in differ
                )
                raise SettingsMismatchError(
                    f"Data-parallel training refused: rank {rank} was started with other settings than rank 0 "
                    f"({details}). Every rank must run the same script with the same arguments"
                )

    def check_parameters(self, params: Sequence[th.Tensor]) -> float:
        """Compare every rank's parameters with rank 0's (all-gather, as OpenAI baselines' ``trpo_mpi`` does):
        a difference within float rounding (:data:`DRIFT_TOLERANCE`, relative) is erased by taking rank 0's
        values; a larger one raises.

        :return: the largest difference found
        :raises ParameterMismatchError: naming the ranks whose parameters differ
        """
        flat = th.nn.utils.parameters_to_vector([p.detach() for p in params]).to(th.float64)
        parts = [th.empty_like(flat) for _ in range(self.world_size)]
        dist.all_gather(parts, flat)
        scale = 1.0 + parts[0].abs()
        gaps = [((part - parts[0]).abs() / scale).max().item() for part in parts]
        diverged = [rank for rank, gap in enumerate(gaps) if not gap <= DRIFT_TOLERANCE]
        if diverged:
            raise ParameterMismatchError(
                f"The parameters of rank(s) {diverged} differ from rank 0's (largest relative difference "
                f"{max(gaps[r] for r in diverged):.3g}): the ranks no longer train one model (a rank that "
                "changed its parameters alone, or a non-deterministic operation)"
            )
        if max(gaps) > 0:
            th.nn.utils.vector_to_parameters(parts[0].to(params[0].dtype), list(params))
        return max(gaps)

    def close(self) -> None:
        """Stop the monitor's heartbeat (the process group belongs to the script or torchrun)."""
        if self.monitor is not None:
            self.monitor.stop()
