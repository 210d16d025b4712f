"""One benchmark run segment: the Zoo's ``train`` (our command) with a recording callback added.

``python -m sb3_trpo_ext.benchmark.zoo_train --bench-dir DIR [--offset-steps N --offset-seconds S
--segment K] -- train --algo A --env E --seed S -f DIR/zoo ...`` runs ``sb3_trpo_ext.zoo.main(["train", ...])``
in this process, after wrapping ``rl_zoo3.exp_manager.ExperimentManager.create_callbacks`` so that the Zoo's
callback list gets :class:`BenchRecorder` at its end (and a timing mark in front of its ``EvalCallback``).
Everything else (hyperparameters from the Zoo files, ``-n``, ``--trained-agent``, ``EvalCallback``,
``CheckpointCallback``) is the Zoo's own.

The recorder writes into ``--bench-dir``:

- ``timeline.jsonl``: one line per evaluation (``kind: "eval"``: timesteps, env_steps, wall_seconds,
  cpu_seconds, eval_mean, eval_std, load_average) and per checkpoint (``kind: "checkpoint"``: the path to resume
  from, timesteps, env_steps, wall_seconds, cpu_seconds), both with the segment's eval_wall_seconds and
  eval_cpu_seconds so far, appended and flushed as they happen;
- ``progress.json`` (replaced atomically every ``PROGRESS_PERIOD`` seconds and at the end): timesteps, total,
  wall_seconds, cpu_seconds, eval_wall_seconds, eval_cpu_seconds, finished, the machine (CPU model, cores,
  torch version, host) and the code this process runs (:func:`code_record`: the package version, the git commit
  of the source tree it imported ``sb3_trpo_ext`` from, and whether that tree had uncommitted changes); the sweep
  copies the code record into the segment's line of ``segments.jsonl``;
- at the end of a run that reached its budget, one more evaluation of ``--final-eval-episodes`` episodes
  (``kind: "final_eval"``, its returns listed), whatever ``--eval-freq``: every finished run has a final score.

Counting, across resumed segments (the Zoo's ``--trained-agent`` restarts ``num_timesteps`` at 0):

- ``timesteps`` = ``--offset-steps`` + the model's ``num_timesteps`` (the steps of the checkpoint resumed from
  plus this segment's);
- ``env_steps`` = ``timesteps`` + ``getattr(model, "vine_branch_steps", 0)``: the simulator steps the vine
  branches took on top of the trajectory steps (cumulative and saved with the model, so a checkpoint resumes it);
- ``wall_seconds`` = ``--offset-seconds`` + wall-clock time since this segment's training started, **without**
  the time spent in evaluations (the periodic evaluations are the same overhead for every algorithm) and
  without the process start-up; checkpoint saving is included;
- ``cpu_seconds`` = ``--offset-cpu-seconds`` + CPU time (user + system, ``resource.getrusage`` of this process and
  its waited-for children) since this segment's training started, without the evaluations'.
  ``eval_wall_seconds`` / ``eval_cpu_seconds``: the evaluations' own, this segment only. Each evaluation also
  records the 1-minute load average of the machine.

Unlike wall-clock time, CPU time leaves out the time other processes hold the cores, so it depends on the
machine's load less; but it does depend on it: processes sharing the cores compete for caches, memory bandwidth,
SMT siblings and the clock frequency (the headline protocol's Hopper-v5 runs of sb3-contrib's TRPO took from 374
CPU seconds at a load average of 2 to 776 at load averages of 3 to 8). A resumed run's ``cpu_seconds`` is the work
of the path that produced its final model; what a cut segment did after its last checkpoint is recorded apart by
the sweep, as lost work (:func:`sb3_trpo_ext.benchmark.sweep.execute_run`).

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
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

__all__ = ["PROGRESS_PERIOD", "BenchRecorder", "code_record", "git_output", "machine_info", "main", "write_json_atomic"]

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


#: Folders of a source tree whose uncommitted changes make a run's code differ from its commit.
CODE_PATHS = ("sb3_trpo_ext", "hyperparams")


def git_output(tree: Path, *args: str) -> str | None:
    """``git -C tree ARGS``'s output, None when git is missing or fails (not a checkout)."""
    try:
        done = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(tree), *args],  # no index refresh: others may work in the tree
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_record(package_dir: Path | None = None) -> dict[str, Any]:
    """The code this process runs: ``version`` (``sb3_trpo_ext.__version__``), ``tree`` (the folder holding the
    imported ``sb3_trpo_ext`` package), ``commit`` (``git rev-parse HEAD`` in that tree) and ``dirty`` (whether
    :data:`CODE_PATHS` there differ from that commit, untracked files included).

    ``commit`` and ``dirty`` are None unless the tree is the top of a git checkout or worktree: an installed
    package (site-packages, perhaps inside some other checkout's virtualenv) has no commit of its own.

    :param package_dir: the package folder (default: the imported one, so that a sweep records what its run
        processes imported, not what the sweep itself did)
    """
    import sb3_trpo_ext

    package = Path(package_dir if package_dir is not None else Path(sb3_trpo_ext.__file__).parent).resolve()
    tree = package.parent
    record: dict[str, Any] = {
        "version": sb3_trpo_ext.__version__,
        "tree": str(tree),
        "commit": None,
        "dirty": None,
    }
    top = git_output(tree, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != tree:
        return record
    commit = git_output(tree, "rev-parse", "HEAD")
    status = git_output(tree, "status", "--porcelain", "--untracked-files=normal", "--", *CODE_PATHS)
    if commit is not None:
        record["commit"] = commit
        record["dirty"] = None if status is None else bool(status)
    return record


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its children that have been waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class _EvalMark(BaseCallback):
    """Placed just before the Zoo's ``EvalCallback``: notes the time, so that the recorder can subtract evaluations."""

    def __init__(self) -> None:
        super().__init__()
        self.time = 0.0
        self.cpu = 0.0

    def _on_step(self) -> bool:
        self.time = time.perf_counter()
        self.cpu = cpu_seconds()
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
    :param offset_cpu_seconds: cpu_seconds of the checkpoint this segment resumed from
    :param final_eval_episodes: episodes of the evaluation at the end of a run that reached its budget (0: none)
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
        offset_cpu_seconds: float = 0.0,
        final_eval_episodes: int = 20,
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
        self.offset_cpu_seconds = offset_cpu_seconds
        self.final_eval_episodes = final_eval_episodes
        self._start = 0.0
        self._start_cpu = 0.0
        self._eval_seconds = 0.0
        self._eval_cpu = 0.0
        self._n_evals = 0
        self._last_progress = 0.0
        self._machine: dict[str, Any] = {}
        self._code: dict[str, Any] = {}

    # -- counters ------------------------------------------------------------------------------------------
    def _timesteps(self) -> int:
        return self.offset_steps + int(self.model.num_timesteps)

    def _env_steps(self) -> int:
        return self._timesteps() + int(getattr(self.model, "vine_branch_steps", 0) or 0)

    def _wall(self) -> float:
        return self.offset_seconds + time.perf_counter() - self._start - self._eval_seconds

    def _cpu(self) -> float:
        return self.offset_cpu_seconds + cpu_seconds() - self._start_cpu - self._eval_cpu

    def _eval_costs(self) -> dict[str, float]:
        """This segment's evaluation time so far (a resumed run subtracts a checkpoint's from a cut segment's)."""
        return {"eval_wall_seconds": self._eval_seconds, "eval_cpu_seconds": self._eval_cpu}

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
            "cpu_seconds": self._cpu(),
            "eval_wall_seconds": self._eval_seconds,
            "eval_cpu_seconds": self._eval_cpu,
            "segment": self.segment,
            "finished": finished,
            "machine": self._machine,
            "code": self._code,
        }
        write_json_atomic(self.bench_dir / "progress.json", progress)
        self._last_progress = time.perf_counter()

    # -- callback hooks ------------------------------------------------------------------------------------
    def _on_training_start(self) -> None:
        self.bench_dir.mkdir(parents=True, exist_ok=True)
        self._machine = machine_info()
        self._code = code_record()
        self._start = time.perf_counter()
        self._start_cpu = cpu_seconds()
        self._write_progress()

    def _on_step(self) -> bool:
        evaluations = self.eval_callback.evaluations_results if self.eval_callback is not None else []
        if len(evaluations) > self._n_evals:
            self._n_evals = len(evaluations)
            if self.mark is not None and self.mark.time > 0:
                self._eval_seconds += time.perf_counter() - self.mark.time
                self._eval_cpu += cpu_seconds() - self.mark.cpu
            self._append(self._eval_record("eval", [float(r) for r in evaluations[-1]]))
        checkpoint = self.checkpoint_callback
        if checkpoint is not None and checkpoint.n_calls % checkpoint.save_freq == 0:
            self._record_checkpoint(checkpoint)
        if time.perf_counter() - self._last_progress >= PROGRESS_PERIOD:
            self._write_progress()
        return True

    def _eval_record(self, kind: str, returns: list[float]) -> dict[str, Any]:
        mean = sum(returns) / len(returns)
        return {
            "kind": kind,
            "timesteps": self._timesteps(),
            "env_steps": self._env_steps(),
            "wall_seconds": self._wall(),
            "cpu_seconds": self._cpu(),
            "eval_mean": mean,
            "eval_std": (sum((r - mean) ** 2 for r in returns) / len(returns)) ** 0.5,
            "load_average": os.getloadavg()[0],
            **self._eval_costs(),
            "segment": self.segment,
        }

    def _on_training_end(self) -> None:
        total = self.offset_steps + int(getattr(self.model, "_total_timesteps", 0))
        finished = self._timesteps() >= total
        if finished and self.final_eval_episodes > 0 and self.eval_callback is not None:
            self._final_evaluation(self.eval_callback)
        self._write_progress(finished=finished)

    def _final_evaluation(self, eval_callback: EvalCallback) -> None:
        """Evaluate as the Zoo's periodic evaluation does (its environment, VecNormalize statistics synced,
        its determinism; masked algorithms with their masks), ``final_eval_episodes`` episodes, and record it."""
        from stable_baselines3.common.vec_env import sync_envs_normalization

        evaluate = _evaluate_policy_for(eval_callback)
        sync_envs_normalization(self.training_env, eval_callback.eval_env)
        wall, cpu = time.perf_counter(), cpu_seconds()
        returns, _ = evaluate(
            self.model,
            eval_callback.eval_env,
            n_eval_episodes=self.final_eval_episodes,
            deterministic=eval_callback.deterministic,
            return_episode_rewards=True,
        )
        self._eval_seconds += time.perf_counter() - wall
        self._eval_cpu += cpu_seconds() - cpu
        record = self._eval_record("final_eval", [float(r) for r in returns])
        self._append({**record, "episodes": len(returns), "returns": [float(r) for r in returns]})

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
        if isinstance(self.model, OffPolicyAlgorithm) and self.model.replay_buffer is not None:
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
                "cpu_seconds": self._cpu(),
                **self._eval_costs(),
                "segment": self.segment,
            }
        )
        for old in resume_root.iterdir():  # keep only the latest bundle
            if old != bundle and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)


def _evaluate_policy_for(eval_callback: EvalCallback) -> Any:
    """SB3's ``evaluate_policy``, or sb3-contrib's maskable one when the Zoo evaluates with masks."""
    from stable_baselines3.common.evaluation import evaluate_policy

    try:
        from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback
    except ImportError:  # sb3-contrib is optional for the benchmark of SB3's algorithms
        return evaluate_policy
    if isinstance(eval_callback, MaskableEvalCallback):
        from sb3_contrib.common.maskable.evaluation import evaluate_policy as maskable_evaluate_policy

        return maskable_evaluate_policy
    return evaluate_policy


def _install_recorder(
    bench_dir: Path,
    offset_steps: int,
    offset_seconds: float,
    segment: int,
    offset_cpu_seconds: float = 0.0,
    final_eval_episodes: int = 20,
) -> None:
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
            bench_dir,
            eval_cb,
            ckpt_cb,
            mark,
            str(self.env_name),
            offset_steps,
            offset_seconds,
            segment,
            offset_cpu_seconds,
            final_eval_episodes,
        )
        callbacks.append(recorder)

    ExperimentManager.create_callbacks = create_callbacks  # type: ignore[method-assign]  # patch (private_api.md)


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
    parser.add_argument("--offset-cpu-seconds", type=float, default=0.0)
    parser.add_argument("--final-eval-episodes", type=int, default=20)
    ours = parser.parse_args(args[:split])
    _install_recorder(
        ours.bench_dir,
        ours.offset_steps,
        ours.offset_seconds,
        ours.segment,
        ours.offset_cpu_seconds,
        ours.final_eval_episodes,
    )

    from sb3_trpo_ext.zoo import main as zoo_main

    zoo_main(args[split + 1 :])


if __name__ == "__main__":
    main()
