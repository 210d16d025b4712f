"""Sweeps: the run specifications, the output folder, resumption, and the two engines (local pool, Dask).

Output folder (``-f``)::

    sweep.json                              the configuration (algos, envs, seeds, budgets, evaluation, checkpoints)
    runs/<algo>/<env>/seed_<s>/
        result.json                         the done marker (written atomically, last)
        error.json                          the last failure: return code, stderr tail (removed when a rerun succeeds)
        segments.jsonl                      one line per process started: its command line, resume point, budget,
                                            the code it ran, the work lost when it was cut (see execute_run)
        segment_<k>.out / segment_<k>.err   that process's output
        timeline.jsonl, progress.json       written by the run (see :mod:`sb3_trpo_ext.benchmark.zoo_train`)
        resume/<steps>/                     the latest checkpoint, in the layout ``--trained-agent`` expects
        zoo/<algo>/<env>_<k>/               the Zoo's own log folder(s): evaluations.npz, monitor CSVs, checkpoints

Each run is one process, ``python -m sb3_trpo_ext.benchmark.zoo_train ... -- train --algo A --env E --seed S
-f <run>/zoo --eval-freq F --eval-episodes K --save-freq C --num-threads 1 [-n N] [--trained-agent Z]``:
the Zoo's training through our command (hyperparameters from the Zoo files; ours for our keys).

Resumption (:func:`execute_run`): a run with ``result.json`` is skipped. A run whose process finished its
budget but whose marker is missing gets its marker. Otherwise, when ``timeline.jsonl`` records a checkpoint,
the run continues from the latest one with ``--trained-agent resume/<t>/rl_model_<t>_steps.zip -n <budget - t>``
(evaluations recorded after that checkpoint are dropped first); without one it starts over. The cut process's
work after that checkpoint is not part of the run's ``cpu_seconds``; its segment records it as ``lost_work``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sb3_trpo_ext.benchmark.protocol import block_digest, resolved_block
from sb3_trpo_ext.benchmark.zoo_train import write_json_atomic

__all__ = [
    "DASK_EXTRA_MESSAGE",
    "RunSpec",
    "SweepConfig",
    "SweepError",
    "execute_run",
    "plan_runs",
    "prepare_sweep",
    "resolve_budget",
    "run_dask",
    "run_local",
    "run_local_jobs",
]

#: The message of ``--dask`` without dask installed.
DASK_EXTRA_MESSAGE = (
    '--dask needs Dask distributed, which is not installed: pip install "sb3-trpo-ext[dask]" '
    "(installs dask and distributed)"
)
#: Lines of a failed run's stderr kept in ``error.json``.
STDERR_TAIL_LINES = 40
#: Dask event topic of the runs' progress.
PROGRESS_TOPIC = "sb3-trpo-bench-progress"

ProgressCallback = Callable[[str, dict[str, Any]], None]


class SweepError(ValueError):
    """A sweep that cannot start (unknown algorithm or environment, bad budget, another configuration...)."""


@dataclass(frozen=True)
class RunSpec:
    """One (algorithm, environment, seed) of a sweep, with its budget in timesteps."""

    algo: str
    env: str
    seed: int
    budget: int

    @property
    def run_id(self) -> str:
        """``<algo>/<env>/seed_<seed>``: the run's folder under ``runs/``."""
        return f"{self.algo}/{self.env}/seed_{self.seed}"


@dataclass
class SweepConfig:
    """A sweep's configuration; ``sweep.json`` in the output folder."""

    algos: list[str]
    envs: list[str]
    seeds: list[int]
    #: ``-n``: one budget for every run; None: each Zoo file's ``n_timesteps``
    n_timesteps: int | None
    eval_freq: int
    eval_episodes: int
    save_freq: int
    #: resolved budgets: algo -> env -> timesteps
    budgets: dict[str, dict[str, int]] = field(default_factory=dict)
    #: episodes of the evaluation every run ends with (whatever ``eval_freq``)
    final_eval_episodes: int = 20
    #: the protocol this sweep runs (``{"path", "sha256", "name", "group"}``), None for an ad-hoc sweep
    protocol: dict[str, Any] | None = None

    def runs(self) -> list[RunSpec]:
        """Every (algo, env, seed), seeds innermost."""
        return [RunSpec(a, e, s, self.budgets[a][e]) for a in self.algos for e in self.envs for s in self.seeds]

    def to_json(self) -> dict[str, Any]:
        """The JSON form (``sweep.json``)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SweepConfig:
        """Inverse of :meth:`to_json`."""
        return cls(**data)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SweepError(f"{name} must be a positive integer, got {value!r}")
    return value


def resolve_budget(algo: str, env: str) -> int | None:
    """``n_timesteps`` of the hyperparameter block the Zoo will use for ``algo`` on ``env`` (None: no block,
    or no budget in it); the block is :func:`~sb3_trpo_ext.benchmark.protocol.resolved_block`'s."""
    block = resolved_block(algo, env)
    return int(float(block["n_timesteps"])) if "n_timesteps" in block else None


def prepare_sweep(
    out: Path,
    algos: Sequence[str],
    envs: Sequence[str],
    seeds: Sequence[int],
    n_timesteps: int | None = None,
    eval_freq: int = 10_000,
    eval_episodes: int = 10,
    save_freq: int = 50_000,
    final_eval_episodes: int = 20,
    protocol: dict[str, Any] | None = None,
) -> SweepConfig:
    """Check a sweep and write (or compare with) ``out/sweep.json``, before anything runs.

    :raises SweepError: unknown algorithm (the Zoo's ``ALGOS`` with our keys registered) or environment id
        (gymnasium's registry), a budget or frequency that is not a positive integer, no hyperparameters
        (hence no budget) for a pair without ``-n``, or ``out`` holding a sweep of another configuration
    """
    import gymnasium as gym
    import rl_zoo3.import_envs  # noqa: F401  # the environments the Zoo registers itself (CartPoleNoVel-v1, ...)
    from rl_zoo3.utils import ALGOS

    from sb3_trpo_ext.zoo import register
    from sb3_trpo_ext.zoo.config import _unknown_env_message

    register()
    algos, envs, seeds = list(dict.fromkeys(algos)), list(dict.fromkeys(envs)), list(dict.fromkeys(seeds))
    if not algos or not envs or not seeds:
        raise SweepError("give at least one algorithm (--algos), environment (--envs) and seed (--seeds)")
    for algo in algos:
        if algo not in ALGOS:
            raise SweepError(f"unknown algorithm {algo!r}; the Zoo's keys are: {', '.join(sorted(ALGOS))}")
    for env in envs:
        if env not in gym.envs.registry:
            raise SweepError(_unknown_env_message(env))
    if n_timesteps is not None:
        _positive_int("the budget -n/--n-timesteps", n_timesteps)
    _positive_int("--eval-freq", eval_freq)
    _positive_int("--eval-episodes", eval_episodes)
    _positive_int("--save-freq", save_freq)
    _positive_int("--final-eval-episodes", final_eval_episodes)
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise SweepError(f"seeds must be integers >= 0, got {seed!r}")

    budgets: dict[str, dict[str, int]] = {}
    for algo in algos:
        budgets[algo] = {}
        for env in envs:
            budget = n_timesteps if n_timesteps is not None else resolve_budget(algo, env)
            if budget is None:
                raise SweepError(
                    f"no n_timesteps in the hyperparameters of --algo {algo} for {env}: give a budget with -n"
                )
            budgets[algo][env] = budget
    config = SweepConfig(
        algos, envs, seeds, n_timesteps, eval_freq, eval_episodes, save_freq, budgets, final_eval_episodes, protocol
    )

    out = Path(out)
    sweep_file = out / "sweep.json"
    if sweep_file.exists():
        # a sweep.json written before a field existed holds that field's default
        existing = {**SweepConfig([], [], [], None, 1, 1, 1).to_json(), **json.loads(sweep_file.read_text())}
        if _comparable(existing) != _comparable(config.to_json()):
            differences = [
                f"{key}: {existing.get(key)!r} there, {value!r} now"
                for key, value in config.to_json().items()
                if _comparable({key: existing.get(key)}) != _comparable({key: value})
            ]
            raise SweepError(
                f"{out} holds a sweep of another configuration ({sweep_file}): {'; '.join(differences)}. "
                "Rerun with the same arguments to resume it, or use another output folder (-f). Adding or removing "
                "algorithms, environments or seeds in an existing sweep is not supported: start a new folder."
            )
    else:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(sweep_file, config.to_json())
    return config


def _comparable(data: dict[str, Any]) -> dict[str, Any]:
    """A configuration with its lists as sets (the order of --algos, --envs, --seeds does not matter)."""
    return {key: sorted(value) if isinstance(value, list) else value for key, value in data.items()}


def run_dir_of(out: Path, spec: RunSpec) -> Path:
    """The folder of one run under the output folder."""
    return Path(out) / "runs" / spec.algo / spec.env / f"seed_{spec.seed}"


def is_done(run_dir: Path) -> bool:
    """Whether the run has its done marker."""
    return (Path(run_dir) / "result.json").is_file()


def plan_runs(out: Path, config: SweepConfig) -> tuple[list[RunSpec], list[RunSpec]]:
    """Split the sweep's runs into (finished, to run)."""
    finished: list[RunSpec] = []
    todo: list[RunSpec] = []
    for spec in config.runs():
        (finished if is_done(run_dir_of(out, spec)) else todo).append(spec)
    return finished, todo


# -- one run --------------------------------------------------------------------------------------------------
def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (none if it does not exist; a line cut by a kill is skipped)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill
            continue
    return records


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _final_model(run_dir: Path, spec: RunSpec) -> Path | None:
    """The Zoo's final model of the run's latest Zoo folder (``zoo/<algo>/<env>_<k>/<env>.zip``)."""
    from huggingface_sb3 import EnvironmentName

    env_name = str(EnvironmentName(spec.env))
    folders = sorted(
        (run_dir / "zoo" / spec.algo).glob(f"{env_name}_*"),
        key=lambda p: int(p.name.rsplit("_", 1)[1]) if p.name.rsplit("_", 1)[1].isdigit() else -1,
    )
    for folder in reversed(folders):
        model = folder / f"{env_name}.zip"
        if model.is_file():
            return model
    return None


#: Periodic evaluations averaged into a run's score (``last5_mean``).
SCORE_EVALUATIONS = 5


def _write_result(
    run_dir: Path, spec: RunSpec, config: SweepConfig, progress: dict[str, Any], segments: int
) -> dict[str, Any]:
    """The done marker: budget, times (wall and CPU, training and evaluation), the final evaluation, the score,
    the code the segments ran.

    Two costs, which count different work:

    - ``cpu_seconds`` / ``wall_seconds`` (training; ``eval_*`` for the last segment's evaluations): the work of the
      path that produced the final model, i.e. of each segment up to the checkpoint the next one resumed from.
      A run cut and resumed costs as much here as the same run uncut.
    - ``lost_work``: the work discarded by resumptions, what cut segments did after the checkpoint their successor
      resumed from (:func:`_lost_work`), summed: training ``cpu_seconds``, ``wall_seconds``, ``timesteps``,
      evaluation ``eval_cpu_seconds`` / ``eval_wall_seconds`` (None when a segment's is unknown), and ``segments``
      (how many were cut). A lower bound: what a segment did after its last record (``progress.json`` is written
      every second, the timeline at evaluations and checkpoints) is not seen. The machine's total cost of the run
      is ``cpu_seconds`` + ``lost_work.cpu_seconds`` (+ evaluations and process start-ups).
    """
    records = read_jsonl(run_dir / "segments.jsonl")
    timeline = read_jsonl(run_dir / "timeline.jsonl")
    evals = [r for r in timeline if r.get("kind") == "eval"]
    final = next((r for r in reversed(timeline) if r.get("kind") == "final_eval"), None)
    last = evals[-SCORE_EVALUATIONS:]
    result = {
        "status": "done",
        **asdict(spec),
        "timesteps": progress.get("timesteps"),
        "wall_seconds": progress.get("wall_seconds"),
        "cpu_seconds": progress.get("cpu_seconds"),
        "lost_work": _lost_work_summary(records),
        "eval_wall_seconds": progress.get("eval_wall_seconds"),
        "eval_cpu_seconds": progress.get("eval_cpu_seconds"),
        "segments": segments,
        # the evaluation every run ends with (20 episodes by default); the last periodic one when a run
        # predates it
        "final_eval_mean": final["eval_mean"] if final else (evals[-1]["eval_mean"] if evals else None),
        "final_eval_episodes": final["episodes"] if final else None,
        "last5_mean": sum(r["eval_mean"] for r in last) / len(last) if len(last) == SCORE_EVALUATIONS else None,
        "concurrent_runs": _concurrency_of(run_dir),
        "hyperparameters_sha256": (records or [{}])[-1].get("hyperparameters_sha256"),
        "code": _code_summary(records),
        "protocol": config.protocol,
        "machine": progress.get("machine", {}),
    }
    (run_dir / "error.json").unlink(missing_ok=True)
    write_json_atomic(run_dir / "result.json", result)
    return result


class _Concurrency:
    """How many runs this sweep process has running at once (the other runs sharing the machine with one)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0

    def change(self, delta: int) -> None:
        with self._lock:
            self.running += delta


_CONCURRENCY = _Concurrency()


def _concurrency_of(run_dir: Path) -> dict[str, Any] | None:
    """Runs of the sweep running at once while this run ran (itself included), over its segments: min, max and
    the time-weighted mean; None when not recorded (runs before it was)."""
    records = read_jsonl(run_dir / "concurrency.jsonl")
    if not records:
        return None
    seconds = sum(r["seconds"] for r in records)
    mean = sum(r["mean"] * r["seconds"] for r in records) / seconds if seconds > 0 else records[-1]["mean"]
    return {"min": min(r["min"] for r in records), "max": max(r["max"] for r in records), "mean": round(mean, 3)}


def _code_summary(segments: list[dict[str, Any]]) -> dict[str, Any]:
    """The code a run's segments ran (their ``code`` records, :func:`~sb3_trpo_ext.benchmark.zoo_train.code_record`):
    the distinct ``versions`` and ``commits`` in segment order, ``dirty`` (some segment ran a tree with uncommitted
    changes; None when no segment's tree was a checkout), ``differ`` (the segments' records are not all the same:
    a resumed run finished by other code) and ``unrecorded`` (segments without a record: cut before training
    started, or run before records existed)."""
    codes = [segment["code"] for segment in segments if segment.get("code")]
    dirty = [code.get("dirty") for code in codes if code.get("dirty") is not None]
    return {
        "versions": list(dict.fromkeys(code.get("version") for code in codes)),
        "commits": list(dict.fromkeys(code.get("commit") for code in codes)),
        "dirty": any(dirty) if dirty else None,
        # two dirty trees at one commit may differ too, unseen here: `dirty` says when that can be
        "differ": len({(code.get("version"), code.get("commit"), code.get("dirty")) for code in codes}) > 1,
        "unrecorded": len(segments) - len(codes),
    }


#: The costs :func:`_lost_work` compares: cumulative over the run's path (training), then the segment's own
#: (evaluation).
_PATH_COSTS = ("timesteps", "cpu_seconds", "wall_seconds")
_SEGMENT_COSTS = ("eval_cpu_seconds", "eval_wall_seconds")


def _lost_work(
    segment: int, progress: dict[str, Any], timeline: list[dict[str, Any]], point: dict[str, Any] | None
) -> dict[str, Any]:
    """What ``segment`` (a cut one) did beyond ``point``, the checkpoint the next segment resumes from (None: the
    next one starts over), from its last record (``progress.json`` if it is the segment's, or its last timeline
    record, read before the timeline is cut back to ``point``).

    Training ``timesteps``, ``cpu_seconds`` and ``wall_seconds`` are cumulative along the run's path: the last
    record's minus the checkpoint's. Evaluation ``eval_cpu_seconds`` / ``eval_wall_seconds`` count from the
    segment's start: the last record's, minus the checkpoint's when the segment wrote that checkpoint itself (None
    when that checkpoint predates these fields). ``recorded``: False when the segment left no record (nothing seen
    lost: it was cut before its training started, or within its first second).
    """
    records = [r for r in timeline if r.get("segment") == segment]
    if progress.get("segment") == segment:
        records.append(progress)
    if not records:
        return {**dict.fromkeys(_PATH_COSTS, 0), **dict.fromkeys(_SEGMENT_COSTS, 0.0), "recorded": False}
    # training time stands still during evaluations, which the evaluation time then orders
    last = max(records, key=lambda r: (r.get("wall_seconds") or 0.0, r.get("eval_wall_seconds") or 0.0))
    base = point or {}
    lost: dict[str, Any] = {key: max(0, (last.get(key) or 0) - (base.get(key) or 0)) for key in _PATH_COSTS}
    own_checkpoint = point is not None and point.get("segment") == segment
    for key in _SEGMENT_COSTS:
        before = base.get(key) if own_checkpoint else 0.0
        lost[key] = None if before is None else max(0.0, (last.get(key) or 0.0) - before)
    return {**lost, "recorded": True}


def _lost_work_summary(segments: list[dict[str, Any]]) -> dict[str, Any]:
    """The segments' ``lost_work`` summed (see :func:`_write_result`); ``segments``: how many were cut."""
    lost = [segment["lost_work"] for segment in segments if segment.get("lost_work")]
    summary: dict[str, Any] = {key: sum(record[key] for record in lost) for key in _PATH_COSTS}
    for key in _SEGMENT_COSTS:
        values = [record.get(key) for record in lost]
        summary[key] = None if None in values else sum(values)
    return {**summary, "segments": len(lost)}


def _update_segment(run_dir: Path, segment: int, fields: dict[str, Any]) -> None:
    """Add ``fields`` to ``segment``'s line of ``segments.jsonl`` (the file replaced atomically)."""
    path = run_dir / "segments.jsonl"
    records = read_jsonl(path)
    for record in records:
        if record.get("segment") == segment:
            record.update(fields)
    tmp = path.with_name(".segments.jsonl.tmp")
    tmp.write_text("".join(json.dumps(record) + "\n" for record in records))
    os.replace(tmp, path)


def _record_code(run_dir: Path, segments: list[dict[str, Any]], progress: dict[str, Any]) -> None:
    """Copy the code record of the last segment's process (its ``progress.json``) into its line, unless there."""
    if not segments or segments[-1].get("code") or not progress.get("code"):
        return
    if progress.get("segment") == segments[-1].get("segment"):
        _update_segment(run_dir, segments[-1]["segment"], {"code": progress["code"]})


def _resume_point(run_dir: Path, budget: int) -> dict[str, Any] | None:
    """The latest recorded checkpoint whose file exists, before the budget; evaluations after it are dropped."""
    timeline_path = run_dir / "timeline.jsonl"
    timeline = read_jsonl(timeline_path)
    checkpoints = [r for r in timeline if r.get("kind") == "checkpoint" and (run_dir / r["path"]).is_file()]
    checkpoints = [r for r in checkpoints if r["timesteps"] < budget]
    if not checkpoints:
        timeline_path.unlink(missing_ok=True)
        return None
    point = max(checkpoints, key=lambda r: r["timesteps"])
    kept = [r for r in timeline if r["timesteps"] <= point["timesteps"]]
    tmp = timeline_path.with_name(".timeline.jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, timeline_path)
    return point


def _tail(path: Path, lines: int = STDERR_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _previous_segments(run_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Create ``run_dir`` if missing; the segments recorded so far and the last process's ``progress.json``
    (empty when none), after copying that process's code record into its line if its sweep was killed first."""
    run_dir.mkdir(parents=True, exist_ok=True)
    segments = read_jsonl(run_dir / "segments.jsonl")
    progress = _read_json(run_dir / "progress.json") or {}
    # the code record of a process whose sweep was killed before it could copy it
    _record_code(run_dir, segments, progress)
    return segments, progress


def _finished_unmarked(spec: RunSpec, run_dir: Path, progress: dict[str, Any]) -> bool:
    """Whether the last process finished the run's budget and saved its final model (its marker not yet written)."""
    return bool(
        progress.get("finished") and progress.get("timesteps", 0) >= spec.budget and _final_model(run_dir, spec)
    )


def _resume(
    spec: RunSpec, run_dir: Path, segments: list[dict[str, Any]], progress: dict[str, Any]
) -> dict[str, Any] | None:
    """The checkpoint the next segment resumes from (None: it starts over), the timeline cut back to it; the cut
    last segment's line gets ``lost_work``, what it did after that checkpoint."""
    timeline = read_jsonl(run_dir / "timeline.jsonl")  # before _resume_point cuts it back
    point = _resume_point(run_dir, spec.budget)
    if segments:  # the last segment was cut (killed, failed or interrupted): what it did after `point` is lost
        last = segments[-1]["segment"]
        _update_segment(run_dir, last, {"lost_work": _lost_work(last, progress, timeline, point)})
    return point


def _segment_argv(
    spec: RunSpec, config: SweepConfig, run_dir: Path, segment: int, point: dict[str, Any] | None
) -> list[str]:
    """The command line of the segment's process: ``zoo_train`` with the offsets of ``point`` (the checkpoint it
    resumes from, None: from the start), then the Zoo's ``train`` arguments for the rest of the budget."""
    offset_steps = point["timesteps"] if point else 0
    offset_seconds = point["wall_seconds"] if point else 0.0
    offset_cpu = point.get("cpu_seconds", 0.0) if point else 0.0
    zoo_args = [
        "train",
        "--algo", spec.algo,
        "--env", spec.env,
        "--seed", str(spec.seed),
        "-f", str(run_dir / "zoo"),
        "--eval-freq", str(config.eval_freq),
        "--eval-episodes", str(config.eval_episodes),
        "--save-freq", str(config.save_freq),
        "--num-threads", "1",
        "--device", "cpu",
        "-n", str(spec.budget - offset_steps),
    ]  # fmt: skip
    if point:
        zoo_args += ["--trained-agent", str(run_dir / point["path"])]
    return [
        sys.executable, "-m", "sb3_trpo_ext.benchmark.zoo_train",
        "--bench-dir", str(run_dir),
        "--offset-steps", str(offset_steps),
        "--offset-seconds", str(offset_seconds),
        "--offset-cpu-seconds", str(offset_cpu),
        "--final-eval-episodes", str(config.final_eval_episodes),
        "--segment", str(segment),
        "--", *zoo_args,
    ]  # fmt: skip


def _start_segment_record(
    spec: RunSpec, config: SweepConfig, run_dir: Path, segment: int, point: dict[str, Any] | None
) -> dict[str, Any]:
    """Append the segment's line to ``segments.jsonl`` (command line, resume point, budget, hyperparameter
    digest; ``code`` filled in later), remove the previous process's ``progress.json``, and return the line."""
    offset_steps = point["timesteps"] if point else 0
    record = {
        "segment": segment,
        "argv": _segment_argv(spec, config, run_dir, segment, point),
        "trained_agent": point["path"] if point else None,
        "offset_steps": offset_steps,
        "n_timesteps": spec.budget - offset_steps,
        "started": time.time(),
        "hyperparameters_sha256": block_digest(resolved_block(spec.algo, spec.env)),
        # what the process imports, which may not be what this one did: filled in from its progress.json
        "code": None,
    }
    with open(run_dir / "segments.jsonl", "a") as file:
        file.write(json.dumps(record) + "\n")
    (run_dir / "progress.json").unlink(missing_ok=True)
    return record


def _poll(
    process: subprocess.Popen[bytes],
    spec: RunSpec,
    run_dir: Path,
    offset_steps: int,
    samples: list[int],
    on_progress: ProgressCallback | None,
    poll_seconds: float,
    stop: threading.Event | None,
) -> int | None:
    """Wait for the process, every ``poll_seconds`` appending to ``samples`` how many runs are running and
    passing its ``progress.json`` to ``on_progress``; its exit status, or None when ``stop`` was set (the process
    is then terminated)."""
    if on_progress is not None:
        on_progress(spec.run_id, {"timesteps": offset_steps, "total": spec.budget, "state": "running"})
    stop = stop if stop is not None else threading.Event()  # never set: the wait is the poll interval
    while process.poll() is None:
        samples.append(_CONCURRENCY.running)
        if stop.wait(poll_seconds):
            process.terminate()
            process.wait()
            return None
        current = _read_json(run_dir / "progress.json")
        if on_progress is not None and current:
            on_progress(spec.run_id, {**current, "state": "running"})
    return process.returncode


def _record_sharing(run_dir: Path, segment: int, samples: list[int], started: float) -> None:
    """Append the segment's line to ``concurrency.jsonl``: its seconds since ``started`` (``perf_counter``) and
    the min, max and mean of the sampled number of runs at once (now's, counting itself, when none was sampled)."""
    samples = samples or [_CONCURRENCY.running + 1]
    sharing = {
        "segment": segment,
        "seconds": time.perf_counter() - started,
        "min": min(samples),
        "max": max(samples),
        "mean": sum(samples) / len(samples),
    }
    with open(run_dir / "concurrency.jsonl", "a") as file:
        file.write(json.dumps(sharing) + "\n")


def _run_segment(
    spec: RunSpec,
    run_dir: Path,
    record: dict[str, Any],
    on_progress: ProgressCallback | None,
    poll_seconds: float,
    stop: threading.Event | None,
) -> int | None:
    """Run the segment's process (output to ``segment_<k>.out`` / ``.err``), counted among the runs running at
    once; afterwards, even when interrupted or failing, record its sharing and its code. Its exit status, or None
    when ``stop`` was set."""
    segment = record["segment"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(run_dir / f"segment_{segment}.out", "w") as out, open(run_dir / f"segment_{segment}.err", "w") as err:
        process = subprocess.Popen(record["argv"], stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        _CONCURRENCY.change(+1)
        samples: list[int] = []
        started = time.perf_counter()
        try:
            return _poll(process, spec, run_dir, record["offset_steps"], samples, on_progress, poll_seconds, stop)
        finally:
            _CONCURRENCY.change(-1)
            _record_sharing(run_dir, segment, samples, started)
            _record_code(run_dir, read_jsonl(run_dir / "segments.jsonl"), _read_json(run_dir / "progress.json") or {})


def _segment_outcome(spec: RunSpec, config: SweepConfig, run_dir: Path, segment: int, rc: int) -> dict[str, Any]:
    """After the segment's process exited with ``rc``: the run's ``result.json`` when it finished its budget and
    saved its final model, else ``error.json`` (exit status or where it stopped, stderr tail), written and returned."""
    progress = _read_json(run_dir / "progress.json") or {}
    if rc == 0 and progress.get("timesteps", 0) >= spec.budget and _final_model(run_dir, spec):
        return _write_result(run_dir, spec, config, progress, segment + 1)
    reason = f"exit status {rc}" if rc != 0 else f"stopped at {progress.get('timesteps')} of {spec.budget} timesteps"
    error = {
        "status": "failed",
        **asdict(spec),
        "returncode": rc,
        "reason": reason,
        "segment": segment,
        "stderr_tail": _tail(run_dir / f"segment_{segment}.err"),
    }
    write_json_atomic(run_dir / "error.json", error)
    return error


def execute_run(
    spec: RunSpec,
    config: SweepConfig,
    run_dir: Path,
    on_progress: ProgressCallback | None = None,
    poll_seconds: float = 0.5,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Run (or resume, or skip) one run in ``run_dir``, in its own process; return its ``result.json`` or error.

    Never raises for a failed training: a non-zero exit, or an exit before the budget, writes ``error.json``
    (return code, stderr tail) and returns it with ``status: "failed"``.

    Each process started appends its line to ``segments.jsonl``: its command line, the checkpoint it resumes
    from, its budget, the digest of its hyperparameter block, and, once it has started training, ``code``: the
    version and git commit of the ``sb3_trpo_ext`` the process imported (from its ``progress.json``; a process
    may import another tree than this one, e.g. when started in another checkout). When a run is resumed, the
    line of the cut segment gets ``lost_work``: its work after the checkpoint resumed from (:func:`_lost_work`),
    which the run's ``cpu_seconds`` leaves out.

    :param on_progress: called with ``(run_id, progress)`` while the process runs (``progress.json``'s content)
    :param stop: when set, the run's process is terminated and ``status: "interrupted"`` returned (nothing is
        recorded as failed: the same sweep resumes the run from its last checkpoint)
    """
    run_dir = Path(run_dir)
    if is_done(run_dir):
        return json.loads((run_dir / "result.json").read_text())
    segments, progress = _previous_segments(run_dir)
    if _finished_unmarked(spec, run_dir, progress):
        return _write_result(run_dir, spec, config, progress, len(segments))  # finished, marker not yet written
    point = _resume(spec, run_dir, segments, progress)
    segment = len(segments)
    record = _start_segment_record(spec, config, run_dir, segment, point)
    rc = _run_segment(spec, run_dir, record, on_progress, poll_seconds, stop)
    if rc is None:
        return {"status": "interrupted", **asdict(spec), "segment": segment}
    return _segment_outcome(spec, config, run_dir, segment, rc)


# -- engines --------------------------------------------------------------------------------------------------
def run_local(
    out: Path,
    config: SweepConfig,
    specs: Iterable[RunSpec],
    workers: int,
    on_progress: ProgressCallback | None = None,
    on_done: Callable[[RunSpec, dict[str, Any]], None] | None = None,
    tick: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Run ``specs`` on ``workers`` local processes at a time (a thread pool, each thread waits on one run process).

    :param on_done: called in the calling thread with each run's result (or error) as it ends
    :param tick: called in the calling thread about twice a second (the live display)
    :raises KeyboardInterrupt: after stopping: queued runs are not started and running ones are terminated
        (resumable from their last checkpoint by the same command)
    """
    return run_local_jobs([(Path(out), config, spec) for spec in specs], workers, on_progress, on_done, tick)


def run_local_jobs(
    jobs: Sequence[tuple[Path, SweepConfig, RunSpec]],
    workers: int,
    on_progress: ProgressCallback | None = None,
    on_done: Callable[[RunSpec, dict[str, Any]], None] | None = None,
    tick: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """:func:`run_local` over runs of several sweep folders (``(folder, its config, run)``), in the order given."""
    results = []
    stop = threading.Event()
    outs = {id(spec): out for out, _, spec in jobs}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {
            pool.submit(execute_run, spec, config, run_dir_of(out, spec), on_progress, stop=stop): spec
            for out, config, spec in jobs
        }
        pending = set(futures)
        try:
            while pending:
                finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in finished:
                    spec = futures[future]
                    try:
                        result = future.result()
                    except Exception as error:  # a bug of ours, not of the training: record it and go on
                        result = {"status": "failed", **asdict(spec), "reason": repr(error), "stderr_tail": ""}
                        write_json_atomic(run_dir_of(outs[id(spec)], spec) / "error.json", result)
                    results.append(result)
                    if on_done is not None:
                        on_done(spec, result)
                if tick is not None:
                    tick()
        except KeyboardInterrupt:
            # Without this, leaving the pool would wait for every queued run to be trained.
            stop.set()
            for future in pending:
                future.cancel()
            raise
    return results


def _zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def _unzip_into(data: bytes, folder: Path) -> None:
    """Write an archive's files under ``folder``; ``result.json`` last and atomically (the done marker)."""
    folder = Path(folder)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        for name in names:
            if name == "result.json":
                continue
            target = (folder / name).resolve()
            if folder.resolve() not in target.parents:
                raise ValueError(f"unsafe path in a run archive: {name}")
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.part")
            tmp.write_bytes(archive.read(name))
            os.replace(tmp, target)
        if "result.json" in names:
            write_json_atomic(folder / "result.json", json.loads(archive.read("result.json")))
        else:
            (folder / "result.json").unlink(missing_ok=True)


def dask_task(spec_data: dict[str, Any], config_data: dict[str, Any], archive: bytes | None) -> bytes:
    """The Dask task of one run: unpack what the client has of it, run :func:`execute_run` in a temporary
    folder on the worker (posting progress as Dask events), return the run folder as a zip archive."""
    spec = RunSpec(**spec_data)
    config = SweepConfig.from_json(config_data)

    def post(run_id: str, progress: dict[str, Any]) -> None:
        from distributed import get_worker

        event = {"run_id": run_id, **{k: progress.get(k) for k in ("timesteps", "total", "wall_seconds", "state")}}
        with contextlib.suppress(Exception):  # progress is best effort
            get_worker().log_event(PROGRESS_TOPIC, event)

    with tempfile.TemporaryDirectory(prefix="sb3_trpo_bench_") as tmp:
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        if archive:
            _unzip_into(archive, run_dir)
        execute_run(spec, config, run_dir, on_progress=post)
        return _zip_folder(run_dir)


def run_dask(
    out: Path,
    config: SweepConfig,
    specs: Iterable[RunSpec],
    address: str,
    cpu_resource: bool = False,
    on_progress: ProgressCallback | None = None,
    on_done: Callable[[RunSpec, dict[str, Any]], None] | None = None,
    tick: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Run ``specs`` on the Dask distributed cluster at ``address``: one task per run.

    Each task gets the run folder's current files (a zip; empty for a new run, the checkpoints for a cut one),
    runs the run on its worker and returns the folder as a zip, which is written under the output folder as
    soon as the task ends (``result.json`` last). A task uses one CPU: by default the cluster is expected to run
    one task per worker thread (start workers with ``--nthreads 1``, or ``--nthreads`` = their cores);
    with ``cpu_resource`` the tasks ask for ``resources={"CPU": 1}`` (workers started with ``--resources CPU=N``).

    :raises SweepError: dask/distributed not installed (the message names the ``dask`` extra)
    """
    try:
        from distributed import Client
    except ImportError as error:
        raise SweepError(DASK_EXTRA_MESSAGE) from error

    results = []
    lock = threading.Lock()
    with Client(address) as client:
        if on_progress is not None:

            def handler(event: tuple[float, dict[str, Any]]) -> None:
                message = dict(event[1])
                with lock:
                    on_progress(message.pop("run_id"), message)

            client.subscribe_topic(PROGRESS_TOPIC, handler)
        futures = {}
        for spec in specs:
            run_dir = run_dir_of(out, spec)
            archive = _zip_folder(run_dir) if run_dir.is_dir() else None
            key = f"sb3-trpo-bench-{spec.algo}-{spec.env}-seed{spec.seed}-{time.time_ns()}"
            kwargs: dict[str, Any] = {"key": key, "pure": False}
            if cpu_resource:
                kwargs["resources"] = {"CPU": 1}
            future = client.submit(dask_task, asdict(spec), config.to_json(), archive, **kwargs)
            futures[future] = spec
        pending = set(futures)
        while pending:
            done_now = [f for f in list(pending) if f.done()]
            for future in done_now:
                pending.discard(future)
                spec = futures[future]
                run_dir = run_dir_of(out, spec)
                try:
                    _unzip_into(future.result(), run_dir)
                    result = _read_json(run_dir / "result.json") or _read_json(run_dir / "error.json") or {}
                except Exception as error:  # the task itself failed (e.g. its workers died)
                    result = {"status": "failed", **asdict(spec), "reason": repr(error), "stderr_tail": ""}
                    run_dir.mkdir(parents=True, exist_ok=True)
                    write_json_atomic(run_dir / "error.json", result)
                results.append(result)
                if on_done is not None:
                    on_done(spec, result)
            if tick is not None:
                with lock:
                    tick()
            if pending:
                time.sleep(0.5)
    return results
