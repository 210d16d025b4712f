"""``sb3-trpo-bench report``: tidy CSV, IQM tables with stratified-bootstrap confidence intervals, plots.

Inputs: sweep folders written by ``sb3-trpo-bench run`` (``sweep.json`` + ``runs/``) and plain Zoo log folders
(``<folder>/<algo>/<env>_<n>/evaluations.npz``). Outputs, in the report folder:

- ``results.csv``: one row per evaluation point: algo, env, seed, timesteps, env_steps, wall_seconds,
  eval_mean, eval_std (the mean and standard deviation of the evaluation episodes' returns);
- ``report.md``: the machine(s) and budgets, per environment a table of each algorithm's final score
  (IQM over seeds of the last evaluation, with its 95% stratified-bootstrap confidence interval from rliable),
  and the aggregate IQM over environments of the returns normalised by :data:`REFERENCE_SCORES`;
- ``curves_<env>.png`` (IQM over seeds with 95% bands, against timesteps and against wall-clock time) and
  ``aggregate.png`` (normalised IQM against the fraction of the budget, and the final aggregate IQM with CIs).

Where the columns come from:

- sweep folders: ``timeline.jsonl``, written during training by the run's callback
  (:mod:`sb3_trpo_ext.benchmark.zoo_train`): ``env_steps`` = timesteps + the model's ``vine_branch_steps``;
  ``wall_seconds`` = training wall-clock time without the evaluations, summed over resumed segments;
- plain Zoo folders: ``evaluations.npz``; ``env_steps`` adds ``vine_branch_steps`` read from the saved models'
  ``data`` (the Zoo's checkpoints ``rl_model_<t>_steps.zip`` and the final model), interpolated linearly between
  them (0 without any); ``wall_seconds`` from the Monitor CSVs (episode end times against the cumulative
  episode lengths of all training environments, interpolated; it counts from the environments' creation and
  includes the evaluations); the seed from ``<env>/args.yml``.
"""

from __future__ import annotations

import json
import re
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sb3_trpo_ext.benchmark.sweep import read_jsonl
from sb3_trpo_ext.safe_load import ZooYamlLoader

__all__ = [
    "COLUMNS",
    "REFERENCE_SCORES",
    "collect_rows",
    "iqm",
    "iqm_interval",
    "normalize",
    "write_report",
]

COLUMNS = ["algo", "env", "seed", "timesteps", "env_steps", "wall_seconds", "eval_mean", "eval_std"]

#: Per task (the id without ``-vN``): (random score, good score, source). Normalised score =
#: (score - random) / (good - random). MuJoCo: D4RL's reference scores (Fu et al. 2020, "D4RL", the
#: ``REF_MIN_SCORE``/``REF_MAX_SCORE`` of its -v2 locomotion tasks: random policy and its "expert" SAC policy),
#: used unchanged for -v4/-v5. Classic control: the return of a uniformly random policy (measured means) and the
#: task's maximum or a solved score.
REFERENCE_SCORES: dict[str, tuple[float, float, str]] = {
    "CartPole": (22.0, 500.0, "random policy; maximum return (500 steps)"),
    "Acrobot": (-500.0, -80.0, "random policy (never swings up); good policies reach about -80"),
    "Pendulum": (-1200.0, -150.0, "random policy; SB3 Zoo's tuned agents reach about -150"),
    "MountainCarContinuous": (-33.0, 93.0, "random policy; solved at 90+"),
    "InvertedPendulum": (6.0, 1000.0, "random policy; maximum return (1000 steps)"),
    "InvertedDoublePendulum": (55.0, 9350.0, "random policy; about the maximum return"),
    "Hopper": (-20.272305, 3234.3, "D4RL reference scores (random, expert)"),
    "HalfCheetah": (-280.178953, 12135.0, "D4RL reference scores (random, expert)"),
    "Walker2d": (1.629008, 4592.3, "D4RL reference scores (random, expert)"),
    "Ant": (-325.6, 3879.7, "D4RL reference scores (random, expert)"),
}


def _task(env: str) -> str:
    return re.sub(r"-v\d+$", "", env.split("/")[-1])


def normalize(env: str, score: np.ndarray | float) -> np.ndarray | float | None:
    """Normalised score of ``env`` (0: random, 1: good, :data:`REFERENCE_SCORES`); None without a reference."""
    reference = REFERENCE_SCORES.get(_task(env))
    if reference is None:
        return None
    low, high, _ = reference
    return (np.asarray(score, dtype=float) - low) / (high - low)


# -- statistics -----------------------------------------------------------------------------------------------
def iqm(scores: np.ndarray) -> float:
    """Interquartile mean (25% trimmed mean over every entry) of ``scores`` (rliable's ``aggregate_iqm``)."""
    from rliable import metrics

    return float(metrics.aggregate_iqm(np.asarray(scores, dtype=float)))


def iqm_interval(
    scores: np.ndarray, reps: int = 10_000, seed: int = 0, size: float = 0.95
) -> tuple[float, float, float]:
    """IQM of a (runs x tasks) score matrix and its stratified-bootstrap confidence interval (rliable).

    Runs are resampled with replacement within each task (column), ``reps`` times (percentile interval).

    :return: (IQM, lower bound, upper bound)
    """
    from rliable import library, metrics

    matrix = np.asarray(scores, dtype=float)
    if matrix.ndim == 1:
        matrix = matrix[:, None]
    # rliable 1.2's StratifiedBootstrap draws its indices from NumPy's global generator (np.random.choice), not
    # from random_state: seed the global generator for this call and restore its state afterwards.
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():  # arch (under rliable) deprecates random_state; rliable still passes it
            warnings.simplefilter("ignore", FutureWarning)
            points, intervals = library.get_interval_estimates(
                {"x": matrix},
                lambda x: np.array([metrics.aggregate_iqm(x)]),
                reps=reps,
                confidence_interval_size=size,
                random_state=np.random.RandomState(seed),
            )
    finally:
        np.random.set_state(saved)
    return float(points["x"][0]), float(intervals["x"][0][0]), float(intervals["x"][1][0])


def _bootstrap_band(matrix: np.ndarray, reps: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """IQM over runs (rows) at each column, and a 95% percentile bootstrap band over runs (vectorised; curves).

    The tables use rliable; the curves have one interval per evaluation point and use this vectorised
    equivalent (same resampling of runs, same IQM) to stay fast.
    """
    from scipy.stats import trim_mean

    point = trim_mean(matrix, 0.25, axis=0)
    index = rng.integers(0, matrix.shape[0], size=(reps, matrix.shape[0]))
    boot = trim_mean(matrix[index], 0.25, axis=1)  # reps x columns
    return point, np.percentile(boot, 2.5, axis=0), np.percentile(boot, 97.5, axis=0)


# -- reading --------------------------------------------------------------------------------------------------
def _bench_rows(folder: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows of a sweep folder and its information (configuration, machines, run states)."""
    config = json.loads((folder / "sweep.json").read_text())
    rows, machines, states = [], [], {}
    for algo in config["algos"]:
        for env in config["envs"]:
            for seed in config["seeds"]:
                run = folder / "runs" / algo / env / f"seed_{seed}"
                result = run / "result.json"
                evals = [r for r in read_jsonl(run / "timeline.jsonl") if r.get("kind") == "eval"]
                if result.is_file():
                    states[(algo, env, seed)] = "done"
                    machines.append(json.loads(result.read_text()).get("machine", {}))
                else:  # cut short (its last evaluation's timesteps) or never evaluated
                    states[(algo, env, seed)] = evals[-1]["timesteps"] if evals else "not started"
                for record in evals:
                    rows.append({"algo": algo, "env": env, "seed": seed, **{c: record[c] for c in COLUMNS[3:]}})
    return rows, {"config": config, "machines": machines, "states": states}


#: Safe YAML loader that reads the Zoo's ``args.yml`` (an ``OrderedDict`` dump): the one of safe loading.
_ArgsLoader = ZooYamlLoader


def _saved_counts(model_zip: Path) -> tuple[int, int] | None:
    """(``num_timesteps``, ``vine_branch_steps``) in a saved model's ``data`` (None when unreadable)."""
    try:
        with zipfile.ZipFile(model_zip) as archive:
            data = json.loads(archive.read("data"))
        return int(data.get("num_timesteps", 0) or 0), int(data.get("vine_branch_steps", 0) or 0)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def _monitor_clock(folder: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(cumulative training steps, seconds) at each episode end, over all Monitor CSVs of a Zoo run folder."""
    ends = []
    for csv in folder.glob("*.monitor.csv"):
        lines = csv.read_text().splitlines()[2:]
        for line in lines:
            parts = line.split(",")
            try:
                ends.append((float(parts[2]), int(parts[1])))
            except (IndexError, ValueError):
                continue
    if not ends:
        return None
    ends.sort()
    seconds = np.array([0.0] + [t for t, _ in ends])
    steps = np.cumsum([0] + [length for _, length in ends])
    return steps, seconds


def _zoo_rows(folder: Path) -> list[dict[str, Any]]:
    """Rows of a plain Zoo log folder (``<folder>/<algo>/<env>_<n>/evaluations.npz``)."""
    rows = []
    for npz in sorted(folder.glob("*/*_*/evaluations.npz")):
        run = npz.parent
        algo = run.parent.name
        env_name = run.name.rsplit("_", 1)[0]
        args_file = run / env_name / "args.yml"
        args = yaml.load(args_file.read_text(), Loader=_ArgsLoader) if args_file.is_file() else {}
        env = args.get("env", env_name)
        seed = args.get("seed", int(run.name.rsplit("_", 1)[1]))
        data = np.load(npz)
        timesteps, results = data["timesteps"], data["results"]
        known = [(0, 0)]  # (timesteps, vine_branch_steps) of the saved models: checkpoints and the final one
        for model_zip in [*run.glob("rl_model_*_steps.zip"), run / f"{env_name}.zip"]:
            counts = _saved_counts(model_zip) if model_zip.is_file() else None
            if counts is not None:
                known.append(counts)
        known.sort()
        vine = np.interp(timesteps, [k for k, _ in known], [v for _, v in known])
        clock = _monitor_clock(run)
        wall = np.interp(timesteps, *clock) if clock is not None else np.full(len(timesteps), np.nan)
        for i, t in enumerate(timesteps):
            returns = np.asarray(results[i], dtype=float)
            rows.append(
                {
                    "algo": algo,
                    "env": env,
                    "seed": int(seed),
                    "timesteps": int(t),
                    "env_steps": int(t + round(vine[i])),
                    "wall_seconds": float(wall[i]),
                    "eval_mean": float(returns.mean()),
                    "eval_std": float(returns.std()),
                }
            )
    return rows


def collect_rows(paths: Sequence[Path]) -> tuple[Any, list[dict[str, Any]]]:
    """The tidy table (a pandas DataFrame with :data:`COLUMNS`) of sweep and Zoo folders, and the sweeps' info."""
    import pandas as pd

    rows, infos = [], []
    for path in map(Path, paths):
        if (path / "sweep.json").is_file():
            folder_rows, info = _bench_rows(path)
            rows += folder_rows
            infos.append(info)
        else:
            rows += _zoo_rows(path)
    table = pd.DataFrame(rows, columns=COLUMNS)
    table = table.sort_values(["env", "algo", "seed", "timesteps"], kind="stable").reset_index(drop=True)
    return table, infos


# -- writing --------------------------------------------------------------------------------------------------
def _final_scores(table: Any) -> Any:
    """The last evaluation of each (algo, env, seed)."""
    return table.sort_values("timesteps").groupby(["algo", "env", "seed"], as_index=False).last()


def _machine_lines(infos: list[dict[str, Any]]) -> list[str]:
    from sb3_trpo_ext.benchmark.zoo_train import machine_info

    seen = {}
    for info in infos:
        for machine in info["machines"]:
            key = (machine.get("cpu"), machine.get("cores"), machine.get("torch"))
            seen[key] = seen.get(key, 0) + 1
    if not seen:
        here = machine_info()
        return [f"- report machine (no run recorded one): {here['cpu']}, {here['cores']} cores, torch {here['torch']}"]
    return [f"- {cpu}, {cores} cores, torch {torch}: {n} run(s)" for (cpu, cores, torch), n in seen.items()]


def _budget_lines(table: Any, infos: list[dict[str, Any]]) -> list[str]:
    lines = []
    for info in infos:
        config = info["config"]
        for algo, per_env in config["budgets"].items():
            budgets = ", ".join(f"{env} {n:,}" for env, n in per_env.items())
            source = "-n" if config.get("n_timesteps") else "the Zoo file's n_timesteps"
            lines.append(f"- `{algo}`: {budgets} timesteps ({source})")
        lines.append(
            f"- evaluation every {config['eval_freq']:,} timesteps, {config['eval_episodes']} episodes (deterministic); "
            f"checkpoints every {config['save_freq']:,}"
        )
    if not infos and len(table):
        for algo, group in table.groupby("algo"):
            lines.append(f"- `{algo}`: last evaluation at {int(group['timesteps'].max()):,} timesteps (Zoo folder)")
    return lines


def _plot_env(table: Any, env: str, out: Path, reps: int, rng: np.random.Generator) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (ax_steps, ax_wall) = plt.subplots(1, 2, figsize=(11, 4))
    for algo, group in table[table["env"] == env].groupby("algo"):
        pivot = group.pivot_table(index="timesteps", columns="seed", values="eval_mean").dropna()
        if len(pivot):
            point, low, high = _bootstrap_band(pivot.to_numpy().T, reps, rng)
            ax_steps.plot(pivot.index, point, label=algo)
            ax_steps.fill_between(pivot.index, low, high, alpha=0.25)
        seeds = [g.sort_values("timesteps") for _, g in group.groupby("seed")]
        seeds = [g for g in seeds if g["wall_seconds"].notna().all() and len(g)]
        if seeds:
            start = max(float(g["wall_seconds"].iloc[0]) for g in seeds)  # where every seed has a value
            end = min(float(g["wall_seconds"].iloc[-1]) for g in seeds)
            grid = np.linspace(start, max(start, end), 50)
            curves = np.array([np.interp(grid, g["wall_seconds"], g["eval_mean"]) for g in seeds])
            point, low, high = _bootstrap_band(curves, reps, rng)
            ax_wall.plot(grid, point, label=algo)
            ax_wall.fill_between(grid, low, high, alpha=0.25)
    ax_steps.set(xlabel="timesteps", ylabel="evaluation return (IQM over seeds)", title=env)
    ax_wall.set(xlabel="wall-clock seconds (training)", ylabel="evaluation return (IQM over seeds)", title=env)
    for axis in (ax_steps, ax_wall):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    path = out / f"curves_{env.replace('/', '-')}.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _aggregate(table: Any, reps: int, seed: int) -> tuple[dict[str, tuple[float, float, float]], list[str], Any]:
    """Final normalised IQM over (seed, env) per algorithm, with rliable's stratified bootstrap CI."""
    finals = _final_scores(table)
    envs = sorted(e for e in finals["env"].unique() if _task(e) in REFERENCE_SCORES)
    results = {}
    for algo, group in finals.groupby("algo"):
        pivot = group.pivot_table(index="seed", columns="env", values="eval_mean")
        columns = [e for e in envs if e in pivot.columns]
        pivot = pivot[columns].dropna()  # runs x tasks: the seeds every environment has
        if pivot.empty:
            continue
        matrix = np.column_stack([normalize(env, pivot[env].to_numpy()) for env in columns])
        results[algo] = iqm_interval(matrix, reps=reps, seed=seed)
    return results, envs, finals


def _plot_aggregate(
    table: Any, envs: list[str], results: dict[str, tuple[float, float, float]], out: Path, reps: int, rng: Any
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (ax_curve, ax_final) = plt.subplots(1, 2, figsize=(11, 4))
    grid = np.linspace(0.0, 1.0, 21)
    for algo, group in table[table["env"].isin(envs)].groupby("algo"):
        curves = []
        for (env, _), run in group.groupby(["env", "seed"]):
            run = run.sort_values("timesteps")
            fraction = run["timesteps"].to_numpy() / max(run["timesteps"].max(), 1)
            curves.append(np.interp(grid, fraction, normalize(env, run["eval_mean"].to_numpy())))
        if curves:
            point, low, high = _bootstrap_band(np.array(curves), reps, rng)
            ax_curve.plot(grid, point, label=algo)
            ax_curve.fill_between(grid, low, high, alpha=0.25)
    ax_curve.set(xlabel="fraction of the run", ylabel="normalised return (IQM)", title="aggregate over environments")
    ax_curve.grid(alpha=0.3)
    ax_curve.legend()
    names = list(results)
    for i, algo in enumerate(names):
        point, low, high = results[algo]
        ax_final.plot([low, high], [i, i], linewidth=6, alpha=0.5)
        ax_final.plot([point], [i], "k|", markersize=14)
    ax_final.set_yticks(range(len(names)), names)
    ax_final.set(xlabel="final normalised IQM (95% CI)", title="final, aggregate")
    ax_final.grid(alpha=0.3)
    figure.tight_layout()
    path = out / "aggregate.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def write_report(paths: Sequence[Path], out: Path, reps: int = 10_000, seed: int = 0) -> dict[str, Path]:
    """Read sweep and Zoo folders and write ``results.csv``, ``report.md`` and the PNG plots into ``out``.

    :param reps: bootstrap replications of the tables' confidence intervals (the curves use ``min(reps, 2000)``)
    :param seed: seed of the bootstrap
    :return: the written files by name (``csv``, ``markdown``, ``aggregate``, ``curves_<env>``)
    :raises ValueError: no evaluation found in ``paths``
    """
    table, infos = collect_rows(paths)
    if table.empty:
        raise ValueError(f"no evaluations found in {', '.join(map(str, paths))}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {"csv": out / "results.csv", "markdown": out / "report.md"}
    table.to_csv(written["csv"], index=False)
    rng = np.random.default_rng(seed)
    curve_reps = min(reps, 2000)

    lines = ["# Benchmark report", "", "Machine(s):", "", *_machine_lines(infos), "", "Budgets:", ""]
    lines += [*_budget_lines(table, infos), ""]
    unfinished, not_started = [], []
    for info in infos:
        for (algo, env, run_seed), state in info["states"].items():
            if state == "not started":
                not_started.append(f"{algo}/{env}/seed {run_seed}")
            elif state != "done":
                budget = info["config"]["budgets"][algo][env]
                unfinished.append(f"{algo}/{env}/seed {run_seed} ({state:,} of {budget:,} timesteps)")
    if unfinished:
        lines += [f"Unfinished runs (their last evaluation is used): {', '.join(unfinished)}", ""]
    if not_started:
        lines += [f"Runs not started (no rows): {', '.join(not_started)}", ""]
    lines += [
        f"Final score: the last evaluation of each run; IQM over seeds (interquartile mean, rliable) with its 95% "
        f"stratified-bootstrap confidence interval ({reps:,} replications, seed {seed}).",
        "",
    ]
    finals = _final_scores(table)
    for env in sorted(finals["env"].unique()):
        lines += [
            f"## {env}",
            "",
            "| algo | seeds | final timesteps | IQM | 95% CI | mean ± std |",
            "|---|---|---|---|---|---|",
        ]
        for algo, group in finals[finals["env"] == env].groupby("algo"):
            scores = group["eval_mean"].to_numpy()
            point, low, high = iqm_interval(scores, reps=reps, seed=seed)
            steps = f"{int(group['timesteps'].min()):,}" + (
                f"–{int(group['timesteps'].max()):,}" if group["timesteps"].nunique() > 1 else ""
            )
            lines.append(
                f"| {algo} | {len(scores)} | {steps} | {point:.1f} | [{low:.1f}, {high:.1f}] | "
                f"{scores.mean():.1f} ± {scores.std():.1f} |"
            )
        lines.append("")
        written[f"curves_{env}"] = _plot_env(table, env, out, curve_reps, rng)
        lines += [f"![{env}]({written[f'curves_{env}'].name})", ""]

    results, envs, _ = _aggregate(table, reps, seed)
    lines += ["## Aggregate over environments", ""]
    if results:
        lines += [
            f"IQM over (seed, environment) of the final returns normalised as (score - random) / (good - random), "
            f"environments: {', '.join(envs)}; 95% stratified-bootstrap CI (runs resampled within each environment).",
            "",
            "| algo | normalised IQM | 95% CI |",
            "|---|---|---|",
            *[f"| {a} | {p:.3f} | [{lo:.3f}, {hi:.3f}] |" for a, (p, lo, hi) in results.items()],
            "",
            "Reference scores (random, good):",
            "",
            *[
                f"- {_task(e)}: {REFERENCE_SCORES[_task(e)][0]:g}, {REFERENCE_SCORES[_task(e)][1]:g} "
                f"({REFERENCE_SCORES[_task(e)][2]})"
                for e in envs
            ],  # fmt: skip
            "",
        ]
        written["aggregate"] = _plot_aggregate(table, envs, results, out, curve_reps, rng)
        lines += ["![aggregate](aggregate.png)", ""]
    else:
        lines += ["No environment with reference scores: no aggregate.", ""]
    skipped = sorted({e for e in finals["env"].unique() if _task(e) not in REFERENCE_SCORES})
    if skipped:
        lines += [f"Not in the aggregate (no reference scores): {', '.join(skipped)}.", ""]
    written["markdown"].write_text("\n".join(lines))
    return written
