"""One benchmark run segment: the Zoo's ``train`` (our command) with a recording callback added.

``python -m sb3_trpo_ext.benchmark.zoo_train --bench-dir DIR [--offset-steps N --offset-seconds S
--segment K] -- train --algo A --env E --seed S -f DIR/zoo ...`` runs ``sb3_trpo_ext.zoo.main(["train", ...])``
in this process, after wrapping ``rl_zoo3.exp_manager.ExperimentManager.create_callbacks`` so that the Zoo's
callback list gets :class:`BenchRecorder` at its end (and a timing mark in front of its ``EvalCallback``).
Everything else (hyperparameters from the Zoo files, ``-n``, ``--trained-agent``, ``EvalCallback``,
``CheckpointCallback``) is the Zoo's own.

The recorder writes into ``--bench-dir``:

- ``timeline.jsonl``: one line per evaluation (``kind: "eval"``: timesteps, env_steps, wall_seconds,
  eval_mean, eval_std) and per checkpoint (``kind: "checkpoint"``: the path to resume from, timesteps,
  env_steps, wall_seconds), appended and flushed as they happen;
- ``progress.json`` (replaced atomically every ``PROGRESS_PERIOD`` seconds and at the end): timesteps, total,
  wall_seconds, finished, and the machine (CPU model, cores, torch version, host).

Counting, across resumed segments (the Zoo's ``--trained-agent`` restarts ``num_timesteps`` at 0):

- ``timesteps`` = ``--offset-steps`` + the model's ``num_timesteps`` (the steps of the checkpoint resumed from
  plus this segment's);
- ``env_steps`` = ``timesteps`` + ``getattr(model, "vine_branch_steps", 0)``: the simulator steps the vine
  branches took on top of the trajectory steps (cumulative and saved with the model, so a checkpoint resumes it);
- ``wall_seconds`` = ``--offset-seconds`` + wall-clock time since this segment's training started, **without**
  the time spent in evaluations (the periodic evaluations are the same overhead for every algorithm) and
  without the process start-up; checkpoint saving is included.

At each checkpoint a resume bundle ``resume/<steps>/`` is made: a hard link (or copy) of the Zoo's
``rl_model_<steps>_steps.zip`` and, when the run normalizes, ``<env>/vecnormalize.pkl`` with the statistics
of that moment, and for off-policy algorithms ``replay_buffer.pkl``, where the Zoo's ``--trained-agent`` looks
for them. Only the latest bundle is kept. (The Zoo restarts ``num_timesteps`` at 0 on ``--trained-agent``, so
an off-policy run resumed before its ``learning_starts`` is over starts that count again: the Zoo's own resume.)
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback

__all__ = ["PROGRESS_PERIOD", "BenchRecorder", "machine_info", "main", "write_json_atomic"]

#: Seconds between two writes of ``progress.json``.
PROGRESS_PERIOD = 1.0


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a temporary file in the same folder, then ``os.replace``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def machine_info() -> dict[str, Any]:
    """CPU model, number of cores, torch version, Python version and host name of this machine."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "host": socket.gethostname(),
    }


class _EvalMark(BaseCallback):
    """Placed just before the Zoo's ``EvalCallback``: notes the time, so that the recorder can subtract evaluations."""

    def __init__(self) -> None:
        super().__init__()
        self.time = 0.0

    def _on_step(self) -> bool:
        self.time = time.perf_counter()
        return True


class BenchRecorder(BaseCallback):
    """Records evaluations, checkpoints and progress of a Zoo run (see the module docstring).

    :param bench_dir: the run's folder (``timeline.jsonl``, ``progress.json``, ``resume/``)
    :param eval_callback: the Zoo's ``EvalCallback`` (None: no evaluations)
    :param checkpoint_callback: the Zoo's ``CheckpointCallback`` (None: no checkpoints)
    :param mark: the timing mark placed before ``eval_callback``
    :param env_name: the Zoo's file name of the environment (folder name of ``vecnormalize.pkl``)
    :param offset_steps: timesteps of the checkpoint this segment resumed from
    :param offset_seconds: wall_seconds of that checkpoint
    :param segment: number of this segment (0: first)
    """

    def __init__(
        self,
        bench_dir: Path,
        eval_callback: EvalCallback | None,
        checkpoint_callback: CheckpointCallback | None,
        mark: _EvalMark | None,
        env_name: str,
        offset_steps: int = 0,
        offset_seconds: float = 0.0,
        segment: int = 0,
    ):
        super().__init__()
        self.bench_dir = Path(bench_dir)
        self.eval_callback = eval_callback
        self.checkpoint_callback = checkpoint_callback
        self.mark = mark
        self.env_name = env_name
        self.offset_steps = offset_steps
        self.offset_seconds = offset_seconds
        self.segment = segment
        self._start = 0.0
        self._eval_seconds = 0.0
        self._n_evals = 0
        self._last_progress = 0.0
        self._machine: dict[str, Any] = {}

    # -- counters ------------------------------------------------------------------------------------------
    def _timesteps(self) -> int:
        return self.offset_steps + int(self.model.num_timesteps)

    def _env_steps(self) -> int:
        return self._timesteps() + int(getattr(self.model, "vine_branch_steps", 0) or 0)

    def _wall(self) -> float:
        return self.offset_seconds + time.perf_counter() - self._start - self._eval_seconds

    def _append(self, record: dict[str, Any]) -> None:
        with open(self.bench_dir / "timeline.jsonl", "a") as file:
            file.write(json.dumps(record) + "\n")
            file.flush()
            os.fsync(file.fileno())

    def _write_progress(self, finished: bool = False) -> None:
        total = self.offset_steps + int(getattr(self.model, "_total_timesteps", 0))
        progress = {
            "timesteps": self._timesteps(),
            "total": total,
            "wall_seconds": self._wall(),
            "segment": self.segment,
            "finished": finished,
            "machine": self._machine,
        }
        write_json_atomic(self.bench_dir / "progress.json", progress)
        self._last_progress = time.perf_counter()

    # -- callback hooks ------------------------------------------------------------------------------------
    def _on_training_start(self) -> None:
        self.bench_dir.mkdir(parents=True, exist_ok=True)
        self._machine = machine_info()
        self._start = time.perf_counter()
        self._write_progress()

    def _on_step(self) -> bool:
        evaluations = self.eval_callback.evaluations_results if self.eval_callback is not None else []
        if len(evaluations) > self._n_evals:
            self._n_evals = len(evaluations)
            if self.mark is not None and self.mark.time > 0:
                self._eval_seconds += time.perf_counter() - self.mark.time
            returns = [float(r) for r in evaluations[-1]]
            mean = sum(returns) / len(returns)
            std = (sum((r - mean) ** 2 for r in returns) / len(returns)) ** 0.5
            self._append(
                {
                    "kind": "eval",
                    "timesteps": self._timesteps(),
                    "env_steps": self._env_steps(),
                    "wall_seconds": self._wall(),
                    "eval_mean": mean,
                    "eval_std": std,
                    "segment": self.segment,
                }
            )
        checkpoint = self.checkpoint_callback
        if checkpoint is not None and checkpoint.n_calls % checkpoint.save_freq == 0:
            self._record_checkpoint(checkpoint)
        if time.perf_counter() - self._last_progress >= PROGRESS_PERIOD:
            self._write_progress()
        return True

    def _on_training_end(self) -> None:
        total = self.offset_steps + int(getattr(self.model, "_total_timesteps", 0))
        self._write_progress(finished=self._timesteps() >= total)

    def _record_checkpoint(self, checkpoint: CheckpointCallback) -> None:
        """Make the resume bundle of the checkpoint the Zoo's callback has just written, then log it."""
        source = Path(checkpoint.save_path) / f"{checkpoint.name_prefix}_{self.model.num_timesteps}_steps.zip"
        if not source.is_file():
            return
        steps = self._timesteps()
        resume_root = self.bench_dir / "resume"
        bundle = resume_root / str(steps)
        if bundle.exists():
            shutil.rmtree(bundle)
        bundle.mkdir(parents=True)
        target = bundle / f"rl_model_{steps}_steps.zip"
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
        vec_normalize = self.model.get_vec_normalize_env()
        if vec_normalize is not None:
            (bundle / self.env_name).mkdir()
            vec_normalize.save(str(bundle / self.env_name / "vecnormalize.pkl"))
        if getattr(self.model, "replay_buffer", None) is not None:
            # Off-policy runs: the Zoo's checkpoints hold no replay buffer, but its --trained-agent loads a
            # replay_buffer.pkl found next to the model, so a cut run continues with the transitions it had.
            self.model.save_replay_buffer(bundle / "replay_buffer.pkl")
        self._append(
            {
                "kind": "checkpoint",
                "path": str(target.relative_to(self.bench_dir)),
                "timesteps": steps,
                "env_steps": self._env_steps(),
                "wall_seconds": self._wall(),
                "segment": self.segment,
            }
        )
        for old in resume_root.iterdir():  # keep only the latest bundle
            if old != bundle and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)


def _install_recorder(bench_dir: Path, offset_steps: int, offset_seconds: float, segment: int) -> None:
    """Wrap ``ExperimentManager.create_callbacks`` so that the Zoo's list gets the recorder."""
    from rl_zoo3.exp_manager import ExperimentManager

    original = ExperimentManager.create_callbacks

    def create_callbacks(self: Any) -> None:
        original(self)
        callbacks = self.callbacks
        eval_cb = next((c for c in callbacks if isinstance(c, EvalCallback)), None)
        ckpt_cb = next((c for c in callbacks if isinstance(c, CheckpointCallback)), None)
        mark = None
        if eval_cb is not None:
            mark = _EvalMark()
            callbacks.insert(callbacks.index(eval_cb), mark)
        recorder = BenchRecorder(
            bench_dir, eval_cb, ckpt_cb, mark, str(self.env_name), offset_steps, offset_seconds, segment
        )
        callbacks.append(recorder)

    ExperimentManager.create_callbacks = create_callbacks


def main(argv: Sequence[str] | None = None) -> None:
    """Command line (see the module docstring); everything after ``--`` goes to ``sb3_trpo_ext.zoo.main``."""
    import argparse

    args = list(sys.argv[1:] if argv is None else argv)
    if "--" not in args:
        raise SystemExit("usage: python -m sb3_trpo_ext.benchmark.zoo_train --bench-dir DIR [...] -- train ...")
    split = args.index("--")
    parser = argparse.ArgumentParser(prog="python -m sb3_trpo_ext.benchmark.zoo_train")
    parser.add_argument("--bench-dir", required=True, type=Path)
    parser.add_argument("--offset-steps", type=int, default=0)
    parser.add_argument("--offset-seconds", type=float, default=0.0)
    parser.add_argument("--segment", type=int, default=0)
    ours = parser.parse_args(args[:split])
    _install_recorder(ours.bench_dir, ours.offset_steps, ours.offset_seconds, ours.segment)

    from sb3_trpo_ext.zoo import main as zoo_main

    zoo_main(args[split + 1 :])


if __name__ == "__main__":
    main()
