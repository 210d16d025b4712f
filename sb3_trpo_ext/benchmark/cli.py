"""Command line: ``sb3-trpo-bench run ...`` and ``sb3-trpo-bench report ...`` (also ``python -m sb3_trpo_ext.benchmark``)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sb3_trpo_ext.benchmark.protocol import ProtocolError, load_protocol
from sb3_trpo_ext.benchmark.sweep import (
    DASK_EXTRA_MESSAGE,
    RunSpec,
    SweepConfig,
    SweepError,
    plan_runs,
    prepare_sweep,
    run_dask,
    run_local_jobs,
)
from sb3_trpo_ext.zoo.registry import ZOO_ALGORITHMS

__all__ = ["PROG", "main"]

PROG = "sb3-trpo-bench"

EXAMPLES = f"""examples:
  {PROG} run --protocol bench/protocol.yml --workers 2     # a pre-registered sweep, exactly as registered
  {PROG} run --algos trpo_ext trpo_vine trpo ppo td3 ddpg --envs Hopper-v5 --seeds 0 1 2 -f bench/
  {PROG} run --algos trpo_ext ppo --envs CartPole-v1 --seeds 0 1 -n 20000 --eval-freq 2000 -f bench/ --dask tcp://scheduler:8786
  {PROG} report bench/ -o docs/bench/
  {PROG} report logs/ -o docs/zoo-report/      # a plain Zoo log folder
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Benchmark sweeps through the RL Zoo (our command: python -m sb3_trpo_ext.zoo train), and their report.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run",
        help="run every (algo, env, seed), each in its own process; resumable",
        description="Run every (algo, env, seed) with the Zoo's training and periodic evaluation. Started again "
        "with the same arguments, finished runs are skipped and cut runs continue from their last checkpoint.",
    )
    run.add_argument(
        "--protocol",
        type=Path,
        default=None,
        help="a pre-registered protocol file (bench/protocol.yml): runs its groups exactly, in their folders; "
        "no other option that chooses runs, budgets or evaluation is accepted with it",
    )
    run.add_argument("--groups", nargs="+", default=None, help="with --protocol: only these groups (default: all)")
    run.add_argument("--algos", nargs="+", help=f"Zoo keys (ours: {', '.join(ZOO_ALGORITHMS)})")
    run.add_argument("--envs", nargs="+", help="gymnasium environment ids")
    run.add_argument("--seeds", nargs="+", type=int)
    run.add_argument("-f", "--folder", type=Path, help="output folder of the sweep")
    run.add_argument(
        "-n", "--n-timesteps", default=None, help="budget of every run (default: each Zoo file's n_timesteps)"
    )
    run.add_argument("--eval-freq", type=int, default=None, help="evaluate every N timesteps (default 10000)")
    run.add_argument("--eval-episodes", type=int, default=None, help="episodes per evaluation (default 10)")
    run.add_argument(
        "--final-eval-episodes",
        type=int,
        default=None,
        help="episodes of the evaluation every run ends with, whatever --eval-freq (default 20)",
    )
    run.add_argument(
        "--save-freq", type=int, default=None, help="checkpoint every N timesteps, for resumption (default 50000)"
    )
    run.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="local runs at a time (default: number of cores)"
    )
    run.add_argument("--dask", metavar="ADDRESS", default=None, help="run on a Dask distributed scheduler instead")
    run.add_argument(
        "--dask-cpu-resource",
        action="store_true",
        help='Dask tasks ask for resources={"CPU": 1} (workers started with --resources CPU=N); '
        "default: one task per worker thread",
    )
    run.add_argument("--no-progress", action="store_true", help="no live display (one line per finished run)")

    report = commands.add_parser("report", help="CSV, IQM tables and plots of sweep folders and Zoo log folders")
    report.add_argument("folders", nargs="+", type=Path, help="sweep folders (sweep.json) or Zoo log folders")
    report.add_argument("-o", "--output", type=Path, required=True, help="report folder")
    report.add_argument(
        "--reps", type=int, default=10_000, help="bootstrap replications of the confidence intervals (default 10000)"
    )
    report.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    report.add_argument(
        "--protocol",
        type=Path,
        action="append",
        default=None,
        help="a protocol file (repeat for several): state for each run whether it is one of their runs, and write "
        "their claims (claims.md)",
    )
    report.add_argument(
        "--readme",
        type=Path,
        default=None,
        help="replace the generated results block of this README (between its sb3-trpo-bench report markers)",
    )
    return parser


def _budget(value: str | None) -> int | None:
    """``-n``: a positive integer (``1e6`` and ``1_000_000`` accepted when integral)."""
    if value is None:
        return None
    try:
        number = float(value.replace("_", ""))
    except ValueError:
        raise SweepError(f"the budget -n/--n-timesteps must be a positive integer, got {value!r}") from None
    if not number.is_integer() or number <= 0:
        raise SweepError(f"the budget -n/--n-timesteps must be a positive integer, got {value!r}")
    return int(number)


#: ``run`` options that choose runs, budgets or evaluation: a protocol fixes them all.
_SWEEP_OPTIONS = (
    "algos",
    "envs",
    "seeds",
    "folder",
    "n_timesteps",
    "eval_freq",
    "eval_episodes",
    "final_eval_episodes",
    "save_freq",
)
_DEFAULTS = {"eval_freq": 10_000, "eval_episodes": 10, "final_eval_episodes": 20, "save_freq": 50_000}


def _prepare(args: argparse.Namespace) -> list[tuple[Path, SweepConfig]]:
    """The sweep folders to run and their configurations: the protocol's groups, or the one ad-hoc sweep."""
    if args.protocol is None:
        if args.groups is not None:
            raise SweepError("--groups needs --protocol")
        missing = [f"--{name}" for name in ("algos", "envs", "seeds", "folder") if getattr(args, name) is None]
        if missing:
            raise SweepError(f"give {', '.join(missing)} (or --protocol FILE)")
        settings = {
            key: value if (value := getattr(args, key)) is not None else default for key, default in _DEFAULTS.items()
        }
        config = prepare_sweep(
            args.folder,
            args.algos,
            args.envs,
            args.seeds,
            _budget(args.n_timesteps),
            eval_freq=settings["eval_freq"],
            eval_episodes=settings["eval_episodes"],
            save_freq=settings["save_freq"],
            final_eval_episodes=settings["final_eval_episodes"],
        )
        return [(args.folder, config)]
    given = [f"--{name.replace('_', '-')}" for name in _SWEEP_OPTIONS if getattr(args, name) is not None]
    if given:
        raise SweepError(
            f"{', '.join(given)} cannot be combined with --protocol: the protocol fixes the runs, budgets and "
            "evaluation (a run outside it is not part of it; use a separate sweep folder without --protocol)"
        )
    protocol = load_protocol(args.protocol)
    groups = args.groups or list(protocol.groups)
    unknown = [group for group in groups if group not in protocol.groups]
    if unknown:
        raise SweepError(f"unknown group(s) {unknown} in {args.protocol}: it has {list(protocol.groups)}")
    protocol.check_hyperparameters()
    for message in protocol.changed_files():  # the blocks are the registered ones, but their file is not
        print(f"{PROG} run: warning: {message}", file=sys.stderr)
    evaluation = protocol.evaluation
    sweeps = []
    for group in groups:
        spec = protocol.groups[group]
        # the file as the repository names it (bench/protocol.yml), whatever the working directory
        file = os.path.relpath(protocol.path, protocol.path.parent.parent)
        record = {"file": file, "sha256": protocol.sha256, "name": protocol.name, "group": group}
        config = prepare_sweep(
            protocol.folder(group),
            spec["algos"],
            spec["envs"],
            spec["seeds"],
            spec["n_timesteps"],
            evaluation["eval_freq"],
            evaluation["eval_episodes"],
            evaluation["save_freq"],
            evaluation["final_eval_episodes"],
            protocol=record,
        )
        sweeps.append((protocol.folder(group), config))
    return sweeps


def _run(args: argparse.Namespace) -> int:
    from sb3_trpo_ext.benchmark.progress import SweepProgress

    if args.dask is not None:
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise SweepError(DASK_EXTRA_MESSAGE) from None
    elif args.workers < 1:
        raise SweepError(f"--workers must be at least 1, got {args.workers}")
    sweeps = _prepare(args)
    finished: list[RunSpec] = []
    jobs: list[tuple[Path, SweepConfig, RunSpec]] = []
    for folder, config in sweeps:
        done, todo = plan_runs(folder, config)
        finished += done
        jobs += [(folder, config, spec) for spec in todo]
    # seeds outermost: a sweep cut short has every (algo, env) at its first seeds
    jobs.sort(key=lambda job: (job[1].seeds.index(job[2].seed), job[2].env, job[2].algo))
    enabled = not args.no_progress and sys.stderr.isatty()
    progress = SweepProgress([spec.run_id for _, _, spec in jobs], skipped=len(finished), enabled=enabled)
    folders = ", ".join(str(folder) for folder, _ in sweeps)
    # soft_wrap: rich would break the status lines at 80 columns when stderr is a file (logs of batch jobs) or at
    # the terminal's width mid-phrase; the terminal wraps an unbroken line itself, and copying it keeps it whole
    progress.console.print(
        f"{PROG}: {len(finished) + len(jobs)} runs in {folders}: {len(finished)} finished before, {len(jobs)} to run "
        f"({'Dask at ' + args.dask if args.dask else f'{args.workers} local worker(s)'})",
        soft_wrap=True,
    )

    def on_done(spec: RunSpec, result: dict[str, Any]) -> None:
        progress.finish(spec.run_id, result)

    with progress:
        if args.dask is not None:
            results = []
            for folder, config in sweeps:
                todo = [spec for out, _, spec in jobs if out == folder]
                results += run_dask(
                    folder,
                    config,
                    todo,
                    args.dask,
                    args.dask_cpu_resource,
                    on_progress=progress.update,
                    on_done=on_done,
                    tick=progress.refresh,
                )
        else:
            try:
                with _sigterm_as_interrupt():
                    results = run_local_jobs(
                        jobs, args.workers, on_progress=progress.update, on_done=on_done, tick=progress.refresh
                    )
            except KeyboardInterrupt:
                progress.console.print(
                    f"{PROG}: interrupted; finished runs are kept, the cut ones resume from their last checkpoint "
                    "when the same command is run again",
                    soft_wrap=True,
                )
                return 130
    failed = [r for r in results if r.get("status") != "done"]
    progress.console.print(
        f"{PROG}: {len(results) - len(failed)} run(s) finished now, {len(failed)} failed, {len(finished)} before; "
        f"report: {PROG} report {' '.join(str(folder) for folder, _ in sweeps)} -o REPORT_FOLDER",
        soft_wrap=True,
    )
    return 1 if failed else 0


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Stop on SIGTERM (``kill``, a batch system's stop) as on Ctrl-C: the running training processes are
    terminated with the sweep, not left behind, and resume from their checkpoints on the next run. A shell
    starts background jobs with Ctrl-C ignored, so ``kill`` is how such a sweep is stopped."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> None:
    """``sb3-trpo-bench``: ``run`` a sweep or ``report`` on sweep / Zoo folders.

    :raises SystemExit: 2 on an error before anything runs (message on stderr), 1 when some run failed
    """
    args = _parser().parse_args(None if argv is None else list(argv))
    try:
        if args.command == "run":
            code = _run(args)
        else:
            from sb3_trpo_ext.benchmark.report import write_report

            missing = [str(folder) for folder in args.folders if not folder.exists()]
            if missing:  # else "no evaluations found", as for a folder that holds no runs
                raise SweepError(
                    f"the folder {missing[0]!r} does not exist"
                    if len(missing) == 1
                    else f"the folders {', '.join(map(repr, missing))} do not exist"
                )
            written = write_report(
                args.folders, args.output, reps=args.reps, seed=args.seed, protocol=args.protocol, readme=args.readme
            )
            for path in written.values():
                print(path)
            code = 0
    except (SweepError, ProtocolError) as error:
        print(f"{PROG} {args.command}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except ValueError as error:
        if args.command != "report":
            raise
        print(f"{PROG} report: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if code:
        raise SystemExit(code)
