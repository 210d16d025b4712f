"""Live progress display of a sweep (rich): runs done / failed / running / queued, and each running run's
timesteps and ETA (from the run's ``progress.json``, or from the Dask events that carry it)."""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

__all__ = ["SweepProgress", "format_seconds"]


def format_seconds(seconds: float | None) -> str:
    """``1h02m``, ``3m04s``, ``12s``; ``?`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class SweepProgress:
    """State of a sweep's runs and its live rendering.

    ``update`` (from any thread) records a run's progress; ``finish`` its end; ``refresh`` redraws.
    Used as a context manager around the sweep; with ``enabled=False`` (``--no-progress``, or output that is not
    a terminal) it prints one line per finished run instead.

    :param run_ids: every run of the sweep that will run now (the queue)
    :param skipped: number of runs already finished before this invocation
    """

    def __init__(self, run_ids: list[str], skipped: int = 0, enabled: bool = True, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self.queued = list(run_ids)
        self.skipped = skipped
        self.running: dict[str, dict[str, Any]] = {}
        self.done: list[str] = []
        self.failed: list[str] = []
        self._lock = threading.Lock()
        self._live: Live | None = None
        self._start = time.time()

    def __enter__(self) -> SweepProgress:
        if self.enabled:
            self._live = Live(self.render(), console=self.console, refresh_per_second=2, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.update(self.render())
            self._live.__exit__(*exc)
            self._live = None

    def update(self, run_id: str, progress: dict[str, Any]) -> None:
        """Record a running run's progress (``timesteps``, ``total``, ``wall_seconds``)."""
        with self._lock:
            if run_id in self.done or run_id in self.failed:
                return
            if run_id in self.queued:
                self.queued.remove(run_id)
            entry = self.running.setdefault(run_id, {"since": time.time()})
            entry.update({k: v for k, v in progress.items() if v is not None})
            if "timesteps" in progress and "first_timesteps" not in entry:
                entry["first_timesteps"], entry["first_time"] = progress["timesteps"], time.time()

    def finish(self, run_id: str, result: dict[str, Any]) -> None:
        """Record the end of a run (``result["status"]`` is ``"done"`` or ``"failed"``)."""
        with self._lock:
            self.running.pop(run_id, None)
            if run_id in self.queued:
                self.queued.remove(run_id)
            ok = result.get("status") == "done"
            (self.done if ok else self.failed).append(run_id)
        if not ok:
            reason = result.get("reason", "")
            tail = (result.get("stderr_tail") or "").strip().splitlines()
            last = tail[-1] if tail else ""
            self.console.print(f"[red]failed[/red] {run_id}: {reason} {last}", soft_wrap=True)  # a path stays whole
        elif not self.enabled:
            self.console.print(f"done {run_id}", soft_wrap=True)

    def refresh(self) -> None:
        """Redraw the live display."""
        if self._live is not None:
            self._live.update(self.render())

    def _eta(self, entry: dict[str, Any]) -> float | None:
        """Remaining seconds from the run's speed since this invocation first saw it."""
        steps, total = entry.get("timesteps"), entry.get("total")
        if steps is None or not total or "first_time" not in entry:
            return None
        elapsed = time.time() - entry["first_time"]
        progressed = steps - entry["first_timesteps"]
        if progressed <= 0 or elapsed <= 0:
            return None
        return max(total - steps, 0) * elapsed / progressed

    def render(self) -> Group:
        """The display: one summary line and a table of the running runs."""
        with self._lock:
            summary = Text(
                f"runs: {len(self.done) + self.skipped} done ({self.skipped} before), {len(self.failed)} failed, "
                f"{len(self.running)} running, {len(self.queued)} queued   elapsed {format_seconds(time.time() - self._start)}"
            )
            table = Table(box=None, pad_edge=False)
            for column in ("run", "timesteps", "%", "ETA"):
                table.add_column(column, justify="left" if column == "run" else "right")
            for run_id, entry in sorted(self.running.items()):
                steps, total = entry.get("timesteps"), entry.get("total")
                if steps is not None and total:
                    # the Zoo rounds the last update up to whole rollouts: never show more than the budget
                    steps = min(steps, total)
                percent = f"{100 * steps / total:.0f}" if steps is not None and total else "?"
                table.add_row(
                    run_id,
                    f"{steps if steps is not None else '?'}/{total or '?'}",
                    percent,
                    format_seconds(self._eta(entry)),
                )
        return Group(summary, table)
