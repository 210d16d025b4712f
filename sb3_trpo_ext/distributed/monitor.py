"""The fault bound of data-parallel training: a rank that hangs stops the job with an error that says so.

Ranks meet once per rollout, before the update's collectives. A plain collective with a timeout cannot tell a rank
stuck in ``env.step`` from rank 0 busy in a long evaluation callback, so the meeting goes through a key-value store
(:class:`torch.distributed.Store`) instead, and each rank runs a heartbeat thread that publishes its progress
counter (one per env step) and its phase. A waiting rank blames a missing rank when, by its own clock, that rank's
counter has not moved for ``timeout`` seconds outside callbacks, or its heartbeat has gone silent for ``timeout``
seconds (the process is frozen holding the GIL, stopped, or dead). Clocks are never compared across machines.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from types import TracebackType

import torch.distributed as dist

__all__ = ["RankMonitor", "RankStalledError"]

_MOVING = ("callback", "waiting")  # phases where a still counter is allowed: a callback, or being at a meeting


class RankStalledError(RuntimeError):
    """A rank that others wait for made no progress (or went silent) for the bound; ``ranks`` names them."""

    def __init__(self, message: str, ranks: tuple[int, ...]) -> None:
        super().__init__(message)
        self.ranks = ranks


class _Seen:
    """What a waiting rank last saw of one missing rank, with the times (its own monotonic clock) it last changed."""

    def __init__(self, since: float) -> None:
        self.beat: int | None = None
        self.count: int | None = None
        self.phase = "unknown (no heartbeat seen)"
        self.beat_at = since  # the missing rank gets the whole bound from the moment the wait began
        self.moved_at = since


class RankMonitor:
    """One rank's side of the meetings: its heartbeat thread, its progress counter and :meth:`wait_for_all`.

    ``store`` is shared by all ranks; the caller gives it a prefix of its own, a new one for each monitor (the last
    meeting's keys stay: no rank can tell when the others have read them). ``interval`` is capped at
    ``timeout / 4`` so that a live heartbeat can never look silent, whatever bound the user picks. Time outside env
    steps and callbacks (resets, the update) counts against the bound: call :meth:`progress` in long work there.
    """

    def __init__(
        self, store: dist.Store, rank: int, world_size: int, timeout: float = 300.0, interval: float = 1.0
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in range(world_size={world_size})")
        if timeout <= 0 or interval <= 0:
            raise ValueError(f"timeout ({timeout}) and interval ({interval}) must be positive")
        self.store, self.rank, self.world_size, self.timeout = store, rank, world_size, float(timeout)
        self.interval = min(float(interval), self.timeout / 4)
        self._count = 0  # written by the main thread only, read by the heartbeat thread: no lock needed
        self._callbacks = 0  # depth of nested in_callback blocks
        self._waiting: str | None = None  # the tag of the meeting this rank is at
        self._previous: str | None = None  # the last meeting's tag: its key is deleted after the next meeting
        self._beat = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def _arrival(self, tag: str, rank: int) -> str:
        return f"at/{tag}/{rank}"

    def _phase(self) -> str:
        tag = self._waiting
        if tag is not None:
            return f"waiting at meeting {tag!r}"
        return "callback" if self._callbacks else "step"

    def _publish(self, phase: str) -> None:
        """One heartbeat: a beat number (so that any beat is a change), wall time (for people), counter, phase."""
        self._beat += 1
        self.store.set(f"hb/{self.rank}", f"{self._beat} {time.time():.3f} {self._count} {phase}")

    def _run(self, stopping: threading.Event) -> None:
        """The heartbeat loop. The first store error ends it, quietly: at the job's end the store goes away under
        the thread (no traceback wanted), and a ``TCPStore`` client never reconnects, so beating on would only
        repeat the error (torch logs each one). The silence is then what the other ranks see, which is the truth."""
        try:
            while not stopping.wait(self.interval):
                self._publish(self._phase())
            self._publish("stopped")  # so that a rank still waiting for this one can say why it went silent
        except Exception:
            return

    def start(self) -> None:
        """Publish a first heartbeat now (a broken store fails here, not later) and start the daemon thread: a
        daemon never keeps a finished or failing job alive."""
        if self._thread is not None:
            return
        self._publish(self._phase())
        self._stopping = threading.Event()  # a new one: a thread left behind by stop() never comes back to life
        self._thread = threading.Thread(
            target=self._run, args=(self._stopping,), name=f"rank-monitor-{self.rank}", daemon=True
        )
        self._thread.start()

    def progress(self, n: int = 1) -> None:
        """Count ``n`` env steps: called every step, so only an int add (the thread publishes it)."""
        self._count += n

    @contextlib.contextmanager
    def in_callback(self) -> Iterator[None]:
        """The main thread is in user callbacks (evaluation, checkpoints): they may take any time, no bound."""
        self._callbacks += 1
        try:
            yield
        finally:
            self._callbacks -= 1

    def wait_for_all(self, tag: str) -> None:
        """Return when every rank has arrived at ``tag`` (unique per meeting); raise :class:`RankStalledError` when
        a missing rank stalls (see the module). Polls with sleeps from 1 ms backing off to 4 ms: ranks in lock step
        arrive within milliseconds of each other, and each millisecond of sleep past the last arrival is lost by
        every rank (measured: a 50 ms cap cost 20-56 ms a meeting on Hopper); a long wait costs 250 store round
        trips a second (~0.1 ms each)."""
        if tag == self._previous:
            raise ValueError(f"meeting tag {tag!r} was used by the previous meeting: tags must be unique")
        start = time.monotonic()
        keys = [self._arrival(tag, rank) for rank in range(self.world_size)]
        seen: dict[int, _Seen] = {}
        self._waiting = tag
        try:
            self.store.set(keys[self.rank], "1")
            delay, next_look = 0.001, start + self.interval / 2
            while not self.store.check(keys):
                now = time.monotonic()
                if now >= next_look:  # heartbeats change once per interval: look at them twice per interval
                    self._look(tag, keys, seen, start, now)
                    next_look = now + self.interval / 2
                time.sleep(delay)
                delay = min(2 * delay, 0.004)
        finally:
            self._waiting = None
        # Everyone has arrived here, so everyone has left the previous meeting: no rank reads its key any more.
        if self._previous is not None:
            self.store.delete_key(self._arrival(self._previous, self.rank))
        self._previous = tag

    def _look(self, tag: str, keys: list[str], seen: dict[int, _Seen], start: float, now: float) -> None:
        """Update what this rank has seen of each missing rank; raise if any stalled for the bound."""
        stalled: list[tuple[int, str]] = []
        for rank in range(self.world_size):
            if rank == self.rank or self.store.check([keys[rank]]):
                continue
            last = seen.setdefault(rank, _Seen(start))
            if self.store.check([f"hb/{rank}"]):  # a get of an absent key would block for the store's timeout
                beat, _, count, phase = self.store.get(f"hb/{rank}").decode().split(" ", 3)
                if last.beat is not None and int(beat) != last.beat:
                    last.beat_at = now
                if (last.count is not None and int(count) != last.count) or phase.startswith(_MOVING):
                    last.moved_at = now
                last.beat, last.count, last.phase = int(beat), int(count), phase
            silent, still = now - last.beat_at, now - last.moved_at
            if silent >= self.timeout and last.beat is None:
                why = f"no heartbeat from rank {rank} in {silent:.1f} s (its monitor never started, or it is frozen or dead)"
            elif silent >= self.timeout and last.phase == "stopped":
                why = f"rank {rank} stopped its monitor {silent:.1f} s ago (it left training before this meeting)"
            elif silent >= self.timeout:
                why = f"rank {rank}'s heartbeat has been silent for {silent:.1f} s (last phase: {last.phase}; the "
                why += "process is frozen holding the GIL, stopped or dead, or its heartbeat lost the store)"
            elif still >= self.timeout:
                why = f"rank {rank} has made no progress for {still:.1f} s in phase {last.phase!r}, outside callbacks "
                why += f"(its step counter stuck at {last.count}: e.g. a simulator hung inside env.step)"
            else:
                continue
            stalled.append((rank, why))
        if stalled:
            message = "; ".join(why for _, why in stalled)
            message += f". Rank {self.rank} waited {now - start:.1f} s at meeting {tag!r}. The bound is "
            message += f"distributed_timeout={self.timeout:g} seconds: pass a larger distributed_timeout=... seconds "
            message += "if a rank legitimately spends longer than that outside env steps and callbacks."
            raise RankStalledError(message, tuple(rank for rank, _ in stalled))

    def stop(self) -> None:
        """Stop and join the heartbeat thread (idempotent). The join is bounded: a thread stuck in a store call on a
        store that went away is left behind (a daemon) rather than block the job's exit."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 2 * self.interval))
            self._thread = None

    def __enter__(self) -> RankMonitor:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
