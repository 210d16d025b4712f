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

import functools
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
from sb3_trpo_ext.zoo.safe_config import ZooYamlLoader

__all__ = [
    "AGGREGATES",
    "COLUMNS",
    "REFERENCE_SCORES",
    "RUN_COLUMNS",
    "aggregate_intervals",
    "claim_sentences",
    "collect_rows",
    "improvement_probability",
    "iqm",
    "iqm_interval",
    "normalize",
    "run_table",
    "target_sentences",
    "write_report",
]

COLUMNS = ["algo", "env", "seed", "timesteps", "env_steps", "wall_seconds", "eval_mean", "eval_std", "cpu_seconds"]
#: Columns of ``runs.csv``: one row per run.
RUN_COLUMNS = [
    "algo", "env", "seed", "set", "state", "timesteps", "budget", "score", "score_evaluations", "final_eval_mean",
    "final_eval_episodes", "wall_seconds", "cpu_seconds", "eval_wall_seconds", "eval_cpu_seconds",
    "concurrent_runs_mean", "protocol_match",
]  # fmt: skip
#: A run's score: the mean of its last periodic evaluations, this many (fewer when the run has fewer).
SCORE_EVALUATIONS = 5

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


def _normalized(env: str, scores: np.ndarray) -> np.ndarray:
    """:func:`normalize` of the scores of an environment that has a reference score (as every caller's has)."""
    normalized = normalize(env, scores)
    if normalized is None:
        raise ValueError(f"{env} has no reference score in REFERENCE_SCORES to normalise by")
    return np.asarray(normalized)


# -- statistics -----------------------------------------------------------------------------------------------
#: The aggregates of the tables, in rliable's definitions: name -> function of a (runs x tasks) matrix.
AGGREGATES = ("IQM", "mean", "median")


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean (25% trimmed mean over every entry) of ``scores`` (rliable's ``aggregate_iqm``)."""
    from rliable import metrics

    return float(metrics.aggregate_iqm(np.asarray(scores, dtype=float)))


def _rliable_intervals(data: Any, func: Any, reps: int, seed: int, size: float) -> tuple[np.ndarray, np.ndarray]:
    """rliable's ``get_interval_estimates`` of one entry (a matrix, or a pair of matrices), seeded.

    rliable 1.2's bootstraps draw their indices from NumPy's global generator (``np.random.choice``), not from
    ``random_state``: the global generator is seeded for this call and its state restored afterwards.
    """
    from rliable import library

    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():  # arch (under rliable) deprecates random_state; rliable still passes it
            warnings.simplefilter("ignore", FutureWarning)
            points, intervals = library.get_interval_estimates(
                {"x": data}, func, reps=reps, confidence_interval_size=size, random_state=np.random.RandomState(seed)
            )
    finally:
        np.random.set_state(saved)
    return np.asarray(points["x"], dtype=float), np.asarray(intervals["x"], dtype=float)


def _matrix(scores: np.ndarray) -> np.ndarray:
    matrix = np.asarray(scores, dtype=float)
    return matrix[:, None] if matrix.ndim == 1 else matrix


def aggregate_intervals(
    scores: np.ndarray, reps: int = 10_000, seed: int = 0, size: float = 0.95
) -> dict[str, tuple[float, float, float]]:
    """IQM, mean and median (over every score) of a (runs x tasks) score matrix with their stratified-bootstrap
    confidence intervals (rliable: runs resampled with replacement within each task, ``reps`` times, percentile intervals).

    :return: ``{"IQM": (point, low, high), "mean": ..., "median": ...}``
    """
    from rliable import metrics

    # rliable's aggregate_median is the median over tasks of the per-task means (with one task: the mean); the
    # median here is over every (run, task) score, as the IQM trims over every score.
    functions = (metrics.aggregate_iqm, metrics.aggregate_mean, np.median)
    points, intervals = _rliable_intervals(
        _matrix(scores), lambda x: np.array([f(x) for f in functions]), reps, seed, size
    )
    return {name: (points[i], intervals[0][i], intervals[1][i]) for i, name in enumerate(AGGREGATES)}


def iqm_interval(
    scores: np.ndarray, reps: int = 10_000, seed: int = 0, size: float = 0.95
) -> tuple[float, float, float]:
    """IQM of a (runs x tasks) score matrix and its stratified-bootstrap confidence interval (rliable).

    :return: (IQM, lower bound, upper bound)
    """
    from rliable import metrics

    points, intervals = _rliable_intervals(
        _matrix(scores), lambda x: np.array([metrics.aggregate_iqm(x)]), reps, seed, size
    )
    return float(points[0]), float(intervals[0][0]), float(intervals[1][0])


def improvement_probability(
    scores_x: np.ndarray, scores_y: np.ndarray, reps: int = 10_000, seed: int = 0, size: float = 0.95
) -> tuple[float, float, float]:
    """P(X > Y): the probability that a run of X scores above a run of Y on the same task (Mann-Whitney U / n m,
    averaged over tasks; rliable's ``probability_of_improvement``), with its stratified independent bootstrap
    confidence interval (the runs of X and of Y resampled separately within each task).

    :param scores_x: (runs of X) x tasks
    :param scores_y: (runs of Y) x tasks, the same tasks in the same order
    :return: (probability, lower bound, upper bound)
    """
    from rliable import metrics

    points, intervals = _rliable_intervals(
        (_matrix(scores_x), _matrix(scores_y)),
        lambda x, y: np.array([metrics.probability_of_improvement(x, y)]),
        reps,
        seed,
        size,
    )
    return float(points[0]), float(intervals[0][0]), float(intervals[1][0])


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
    """Rows of a sweep folder and its information (configuration, machines, run states, each run's result)."""
    config = json.loads((folder / "sweep.json").read_text())
    rows, machines, states, results, finals, periodic = [], [], {}, {}, {}, {}
    for algo in config["algos"]:
        for env in config["envs"]:
            for seed in config["seeds"]:
                run = folder / "runs" / algo / env / f"seed_{seed}"
                result = run / "result.json"
                timeline = read_jsonl(run / "timeline.jsonl")
                evals = [r for r in timeline if r.get("kind") == "eval"]
                final = next((r for r in reversed(timeline) if r.get("kind") == "final_eval"), None)
                if result.is_file():
                    states[(algo, env, seed)] = "done"
                    results[(algo, env, seed)] = json.loads(result.read_text())
                    machines.append(results[(algo, env, seed)].get("machine", {}))
                else:  # cut short (its last evaluation's timesteps) or never evaluated
                    states[(algo, env, seed)] = evals[-1]["timesteps"] if evals else "not started"
                if final is not None:
                    finals[(algo, env, seed)] = final
                periodic[(algo, env, seed)] = len(evals)
                if not evals and final is not None:
                    evals = [final]  # a budget below eval_freq: the final evaluation is the run's only point
                for record in evals:
                    rows.append(
                        {"algo": algo, "env": env, "seed": seed, **{c: record.get(c, np.nan) for c in COLUMNS[3:]}}
                    )
    info = {"folder": folder, "config": config, "machines": machines, "states": states}
    return rows, {**info, "results": results, "finals": finals, "periodic": periodic}


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
                    "cpu_seconds": np.nan,  # not recorded by the Zoo
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


# -- runs ---------------------------------------------------------------------------------------------------------
def _protocol_match(info: dict[str, Any], algo: str, env: str, seed: int, protocols: Sequence[Any]) -> str:
    """Whether a run of a sweep folder is a run of the protocol its sweep was started with, among ``protocols``:
    "yes", "pending", "no: <why>", "earlier protocol" (a sweep started without one), or "other protocol: <name>"
    (one not given, or another version of a given one)."""
    config = info["config"]
    registered = config.get("protocol")
    if not registered:
        return "earlier protocol"
    protocol = next((p for p in protocols if p.sha256 == registered.get("sha256")), None)
    if protocol is None:
        return f"other protocol: {registered.get('name')}"
    group = protocol.groups.get(registered.get("group"))
    if group is None or algo not in group["algos"] or env not in group["envs"] or seed not in group["seeds"]:
        return "no: not a run of the protocol's group"
    evaluation = protocol.evaluation
    for key in ("eval_freq", "eval_episodes", "final_eval_episodes", "save_freq"):
        if config.get(key) != evaluation[key]:
            return f"no: {key} {config.get(key)} instead of {evaluation[key]}"
    if config["budgets"][algo][env] != group["n_timesteps"]:
        return f"no: budget {config['budgets'][algo][env]} instead of {group['n_timesteps']}"
    result = info["results"].get((algo, env, seed))
    if result is None:
        return "pending"
    from sb3_trpo_ext.benchmark.protocol import block_digest

    if result.get("hyperparameters_sha256") != block_digest(protocol.hyperparameters[algo][env]):
        return "no: trained with another hyperparameter block"
    return "yes"


def run_table(table: Any, infos: list[dict[str, Any]], protocols: Sequence[Any] = ()) -> Any:
    """One row per run (:data:`RUN_COLUMNS`): its score (the mean of its last :data:`SCORE_EVALUATIONS` periodic
    evaluations), its final evaluation, its costs, its set (the protocol it was registered under, or "earlier")
    and, given ``protocols``, whether it is one of their runs."""
    import pandas as pd

    sweeps: dict[tuple[str, str, int], dict[str, Any]] = {}
    for sweep in infos:
        for key in sweep["states"]:
            sweeps[key] = sweep
    rows = []
    for (algo, env, seed), run in table.groupby(["algo", "env", "seed"]):
        run = run.sort_values("timesteps")
        info = sweeps.get((algo, env, seed))
        last = run["eval_mean"].to_numpy()[-SCORE_EVALUATIONS:]
        # 0: no periodic evaluation (a budget below eval_freq), the score is the final evaluation
        n_scored = len(last) if info is None or info["periodic"][(algo, env, seed)] else 0
        row: dict[str, Any] = {
            "algo": algo, "env": env, "seed": int(seed), "set": "earlier", "state": "zoo folder",
            "timesteps": int(run["timesteps"].max()), "budget": int(run["timesteps"].max()),
            "score": float(last.mean()), "score_evaluations": n_scored,
            "final_eval_mean": np.nan, "final_eval_episodes": np.nan, "wall_seconds": float(run["wall_seconds"].max()),
            "cpu_seconds": float(run["cpu_seconds"].max()), "eval_wall_seconds": np.nan, "eval_cpu_seconds": np.nan,
            "concurrent_runs_mean": np.nan, "protocol_match": "",
        }  # fmt: skip
        if info is not None:
            config, result = info["config"], info["results"].get((algo, env, seed), {})
            state = info["states"][(algo, env, seed)]
            row["state"] = "done" if state == "done" else f"cut at {state:,}"
            row["budget"] = config["budgets"][algo][env]
            row["set"] = (config.get("protocol") or {}).get("name", "earlier")
            final = info["finals"].get((algo, env, seed))
            if final is not None:
                row["final_eval_mean"], row["final_eval_episodes"] = final["eval_mean"], final["episodes"]
                row["timesteps"] = max(row["timesteps"], final["timesteps"])
            for key in ("wall_seconds", "cpu_seconds", "eval_wall_seconds", "eval_cpu_seconds"):
                if result.get(key) is not None:
                    row[key] = result[key]
            row["concurrent_runs_mean"] = (result.get("concurrent_runs") or {}).get("mean", np.nan)
            if protocols:
                row["protocol_match"] = _protocol_match(info, algo, env, int(seed), protocols)
        rows.append(row)
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def _label(algo: str, run_set: str) -> str:
    return algo if run_set == "earlier" else f"{algo} ({run_set})"


# -- writing ------------------------------------------------------------------------------------------------------
def _number(value: float) -> str:
    """Three significant figures, thousands separated: 4512, 3.54, -78.6, 0.125."""
    if not np.isfinite(value):
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _machine_lines(infos: list[dict[str, Any]]) -> list[str]:
    from sb3_trpo_ext.benchmark.zoo_train import machine_info

    seen: dict[tuple[Any, Any, Any], int] = {}
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
        registered = config.get("protocol")
        where = f"protocol {registered['name']} (group {registered['group']})" if registered else "earlier protocol"
        lines.append(f"- `{info['folder']}` ({where}), seeds {', '.join(map(str, config['seeds']))}:")
        for algo, per_env in config["budgets"].items():
            budgets = ", ".join(f"{env} {n:,}" for env, n in per_env.items())
            source = "-n" if config.get("n_timesteps") else "the Zoo file's n_timesteps"
            lines.append(f"  - `{algo}`: {budgets} timesteps ({source})")
        final = config.get("final_eval_episodes")
        lines.append(
            f"  - evaluation every {config['eval_freq']:,} timesteps, {config['eval_episodes']} episodes (deterministic)"
            + (f", and a final evaluation of {final} episodes" if final else ", no final evaluation (earlier runner)")
            + f"; checkpoints every {config['save_freq']:,}"
        )
    if not infos and len(table):
        for algo, group in table.groupby("algo"):
            lines.append(f"- `{algo}`: last evaluation at {int(group['timesteps'].max()):,} timesteps (Zoo folder)")
    return lines


def _score_cells(scores: np.ndarray, min_seeds: int, reps: int, seed: int) -> list[str]:
    """IQM, mean and median cells: with their 95% CIs, or, with fewer than ``min_seeds`` runs, the scores."""
    return list(_cells(tuple(float(v) for v in scores), min_seeds, reps, seed))


@functools.cache
def _cells(scores: tuple[float, ...], min_seeds: int, reps: int, seed: int) -> tuple[str, ...]:
    # cached: the report's tables and the README block show the same rows, and a bootstrap takes seconds
    if len(scores) < min_seeds:
        return f"seeds: {', '.join(_number(v) for v in scores)}", "—", "—"
    stats = aggregate_intervals(np.array(scores), reps=reps, seed=seed)
    return tuple(f"{_number(p)} [{_number(lo)}, {_number(hi)}]" for p, lo, hi in (stats[name] for name in AGGREGATES))


def _env_table(runs: Any, env: str, min_seeds: int, reps: int, seed: int) -> list[str]:
    lines = [
        "| algo | runs | timesteps | score IQM [95% CI] | mean | median | final evaluation (mean over runs) | "
        "training CPU s / run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (algo, run_set), group in runs[runs["env"] == env].groupby(["algo", "set"]):
        steps = f"{int(group['timesteps'].min()):,}" + (
            f"–{int(group['timesteps'].max()):,}" if group["timesteps"].nunique() > 1 else ""
        )
        finals = group["final_eval_mean"].dropna()
        final = (
            f"{_number(finals.mean())} ({int(group['final_eval_episodes'].max())} episodes, {len(finals)} runs)"
            if len(finals)
            else "—"
        )
        cpu = group["cpu_seconds"].dropna()
        cells = _score_cells(group["score"].to_numpy(), min_seeds, reps, seed)
        lines.append(
            f"| {_label(algo, run_set)} | {len(group)} | {steps} | {' | '.join(cells)} | {final} | "
            f"{_number(cpu.median()) if len(cpu) else '—'} |"
        )
    return [*lines, ""]


def _markers(n_points: int) -> dict[str, Any]:
    """Few points are drawn as points: a single evaluation as a line would show nothing."""
    return {"marker": "o"} if n_points <= 5 else {}


def _plot_env(table: Any, runs: Any, env: str, out: Path, reps: int, rng: np.random.Generator) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (ax_steps, ax_time) = plt.subplots(1, 2, figsize=(11, 4))
    labels = {(r.algo, r.seed): _label(r.algo, r.set) for r in runs[runs["env"] == env].itertuples()}
    env_table = table[table["env"] == env].copy()
    env_table["label"] = [labels[(a, s)] for a, s in zip(env_table["algo"], env_table["seed"])]
    cpu_everywhere = env_table["cpu_seconds"].notna().all()
    clock = "cpu_seconds" if cpu_everywhere else "wall_seconds"
    colors = {label: f"C{i % 10}" for i, label in enumerate(sorted(env_table["label"].unique()))}
    for label, group in env_table.groupby("label"):
        pivot = group.pivot_table(index="timesteps", columns="seed", values="eval_mean").dropna()
        if len(pivot):
            point, low, high = _bootstrap_band(pivot.to_numpy().T, reps, rng)
            (line,) = ax_steps.plot(pivot.index, point, label=label, color=colors[label], **_markers(len(pivot)))
            if pivot.shape[1] > 1:
                ax_steps.fill_between(pivot.index, low, high, alpha=0.25, color=line.get_color())
        seeds = [g.sort_values("timesteps") for _, g in group.groupby("seed")]
        seeds = [g for g in seeds if g[clock].notna().all() and len(g)]
        if seeds:
            start = max(float(g[clock].iloc[0]) for g in seeds)  # where every seed has a value
            end = min(float(g[clock].iloc[-1]) for g in seeds)
            n_points = min(len(g) for g in seeds)
            grid = np.linspace(start, max(start, end), 50 if n_points > 5 else n_points)
            curves = np.array([np.interp(grid, g[clock], g["eval_mean"]) for g in seeds])
            point, low, high = _bootstrap_band(curves, reps, rng)
            (line,) = ax_time.plot(grid, point, label=label, color=colors[label], **_markers(len(grid)))
            if len(seeds) > 1:
                ax_time.fill_between(grid, low, high, alpha=0.25, color=line.get_color())
    time_label = "CPU seconds (training)" if cpu_everywhere else "wall-clock seconds (training; may share the machine)"
    ax_steps.set(xlabel="timesteps", ylabel="evaluation return (IQM over seeds)", title=env)
    ax_time.set(xlabel=time_label, ylabel="evaluation return (IQM over seeds)", title=env)
    for axis in (ax_steps, ax_time):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    path = out / f"curves_{env.replace('/', '-')}.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _aggregate_sets(runs: Any) -> list[tuple[str, list[str], list[str], list[str]]]:
    """Per set of runs: (set, environments with reference scores, algorithms that ran every one of them, the
    algorithms left out because they did not)."""
    aggregates = []
    for run_set, group in runs.groupby("set"):
        envs = sorted(e for e in group["env"].unique() if _task(e) in REFERENCE_SCORES)
        if not envs:
            continue
        ran = group.groupby("algo")["env"].agg(set)
        included = sorted(a for a, done in ran.items() if set(envs) <= done)
        excluded = sorted(a for a in ran.index if a not in included)
        aggregates.append((run_set, envs, included, excluded))
    return aggregates


def _finished(runs: Any) -> Any:
    """The runs that reached their budget (or a plain Zoo folder's, whose state is unknown): a run still going
    has no score yet."""
    return runs[runs["state"].isin(["done", "zoo folder"])]


def _normalised_matrix(runs: Any, algo: str, run_set: str, envs: list[str]) -> np.ndarray:
    """(seeds run on every env) x envs matrix of normalised scores."""
    group = runs[(runs["algo"] == algo) & (runs["set"] == run_set)]
    pivot = group.pivot_table(index="seed", columns="env", values="score")[envs].dropna()
    return np.column_stack([_normalized(env, pivot[env].to_numpy()) for env in envs])


def _plot_aggregate(
    table: Any, runs: Any, aggregates: list[tuple[str, list[str], list[str], list[str]]], out: Path, reps: int, rng: Any
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import library

    figure, (ax_curve, ax_profile) = plt.subplots(1, 2, figsize=(11, 4))
    budgets = {(r.algo, r.env, r.seed): r.budget for r in runs.itertuples()}
    profiles, taus = {}, np.linspace(-0.1, 1.2, 53)
    for run_set, envs, included, _ in aggregates:
        for algo in included:
            label = _label(algo, run_set)
            group = table[(table["algo"] == algo) & table["env"].isin(envs)]
            seeds = set(runs[(runs["algo"] == algo) & (runs["set"] == run_set)]["seed"])
            runs_points = []
            for (env, seed), run in group[group["seed"].isin(seeds)].groupby(["env", "seed"]):
                run = run.sort_values("timesteps")
                # the fraction of the run's budget, never more than all of it
                fraction = np.minimum(run["timesteps"].to_numpy() / budgets[(algo, env, seed)], 1.0)
                runs_points.append((fraction, _normalized(env, run["eval_mean"].to_numpy())))
            if not runs_points:
                continue
            n_points = min(len(f) for f, _ in runs_points)
            # where every run has evaluations: no run's curve is extended past its last one
            start = max(float(f[0]) for f, _ in runs_points)
            end = max(start, min(float(f[-1]) for f, _ in runs_points))
            grid = np.linspace(start, end, 21 if n_points > 5 else n_points)
            curves = np.array([np.interp(grid, f, v) for f, v in runs_points])
            point, low, high = _bootstrap_band(curves, reps, rng)
            (line,) = ax_curve.plot(grid, point, label=label, **_markers(len(grid)))
            if len(curves) > 1:
                ax_curve.fill_between(grid, low, high, alpha=0.25, color=line.get_color())
            profiles[label] = _normalised_matrix(runs, algo, run_set, envs)
    ax_curve.set(xlabel="fraction of the budget", ylabel="normalised return (IQM)", title="aggregate over environments")
    ax_curve.set_xlim(0, 1.02)
    ax_curve.grid(alpha=0.3)
    ax_curve.legend()
    if profiles:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            distributions, distribution_cis = library.create_performance_profile(profiles, taus, reps=min(reps, 2000))
        for label, distribution in distributions.items():
            (line,) = ax_profile.plot(taus, distribution, label=label)
            low, high = distribution_cis[label]
            ax_profile.fill_between(taus, low, high, alpha=0.2, color=line.get_color())
        ax_profile.set(
            xlabel="normalised score τ",
            ylabel="fraction of runs with score > τ",
            title="performance profile (run scores, 95% CIs)",
        )
        ax_profile.grid(alpha=0.3)
        ax_profile.legend()
    figure.tight_layout()
    path = out / "aggregate.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _verdict(low: float, high: float, better: str, than: str) -> str:
    if low > 0.5:
        return f"established ({better} > {than})"
    if high < 0.5:
        return f"reversed: {than} > {better} established"
    return "not established"


def _protocol_runs(runs: Any, protocol: Any) -> Any:
    """The runs of ``protocol`` itself (its set, matching its registration): the only ones its claims read."""
    return runs[(runs["protocol_match"] == "yes") & (runs["set"] == protocol.name)]


def _done_runs(ours: Any, protocol: Any, algos: Sequence[str], envs: Sequence[str]) -> tuple[dict[str, Any], str]:
    """Each of ``algos``' finished protocol runs on ``envs``, and ``"pending (runs done: ...)"`` while any run
    the protocol registers for them is missing (``""`` once all are done)."""
    expected = {
        algo: sum(
            len(group["seeds"])
            for group in protocol.groups.values()
            if algo in group["algos"]
            for env in envs
            if env in group["envs"]
        )
        for algo in algos
    }
    done = {algo: ours[(ours["algo"] == algo) & ours["env"].isin(envs)] for algo in algos}
    if any(len(done[algo]) < expected[algo] for algo in algos):
        counts = ", ".join(f"{algo} {len(done[algo])} of {expected[algo]}" for algo in algos)
        return done, f"pending (runs done: {counts})"
    return done, ""


#: How a target's statistic is computed from one environment's per-seed scores (protocol.TARGET_STATISTICS).
TARGET_FUNCTIONS = {"median": np.median}


def target_sentences(runs: Any, protocol: Any) -> list[str]:
    """One sentence per target of ``protocol`` and environment, from its own runs only: met when ``algo``'s
    statistic of its seeds' scores is at least ``at_least``'s. A point estimate, fixed with the protocol; whether
    the difference is established is the claims' business."""
    ours = _protocol_runs(runs, protocol)
    sentences = []
    for target in protocol.targets:
        statistic = TARGET_FUNCTIONS[target.statistic]
        for env in target.envs:
            head = f"**Target: {target.algo}'s {target.statistic} >= {target.at_least}'s on {env}**"
            done, pending = _done_runs(ours, protocol, (target.algo, target.at_least), (env,))
            if pending:
                sentences.append(f"{head}: {pending}.")
                continue
            mine, theirs = (float(statistic(done[algo]["score"].to_numpy())) for algo in (target.algo, target.at_least))
            sizes = " vs ".join(str(len(done[algo])) for algo in (target.algo, target.at_least))
            verdict = "met" if mine >= theirs else "missed"
            shown = " vs ".join(_distinguished(mine, theirs))
            sentences.append(f"{head}: {shown} ({sizes} seeds): {verdict}.")
    return sentences


def _distinguished(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` with one decimal, or as many more (up to 6) as it takes to print unequal numbers unequal
    (a verdict of "missed" beside "500.0 vs 500.0" would read as a contradiction)."""
    for decimals in range(1, 7):
        shown = f"{a:,.{decimals}f}", f"{b:,.{decimals}f}"
        if a == b or shown[0] != shown[1]:
            break
    return shown


def claim_sentences(runs: Any, protocol: Any, reps: int, seed: int) -> list[str]:
    """One sentence per claim of ``protocol``, from its own runs only (``protocol_match == "yes"``), by its
    decision rule: the 95% CI of P(better > than) above 0.5 establishes the claim, below 0.5 reverses it."""
    min_seeds = int(protocol.statistics.get("min_seeds_for_ci", 5))
    size = float(protocol.statistics.get("confidence", 0.95))
    ours = _protocol_runs(runs, protocol)
    sentences = []
    for claim in protocol.claims:
        where = ", ".join(claim.envs)
        head = f"**{claim.better} > {claim.than} on {where}**"
        done, pending = _done_runs(ours, protocol, (claim.better, claim.than), claim.envs)
        if pending:
            sentences.append(f"{head}: {pending}.")
            continue
        matrices = {}
        for algo in done:
            pivot = done[algo].pivot_table(index="seed", columns="env", values="score")[list(claim.envs)].dropna()
            matrices[algo] = pivot.to_numpy()
        n_x, n_y = len(matrices[claim.better]), len(matrices[claim.than])
        if min(n_x, n_y) < min_seeds:
            listed = "; ".join(
                f"{algo}: {', '.join(_number(v) for v in matrices[algo].mean(axis=1))}" for algo in matrices
            )
            sentences.append(f"{head}: not established (fewer than {min_seeds} seeds; scores {listed}).")
            continue
        if len(claim.envs) == 1:
            x, y = matrices[claim.better][:, 0], matrices[claim.than][:, 0]
            kind = "IQM"
        else:
            x = np.column_stack([_normalized(e, matrices[claim.better][:, i]) for i, e in enumerate(claim.envs)])
            y = np.column_stack([_normalized(e, matrices[claim.than][:, i]) for i, e in enumerate(claim.envs)])
            kind = "normalised IQM"
        stat_x = aggregate_intervals(x, reps=reps, seed=seed, size=size)["IQM"]
        stat_y = aggregate_intervals(y, reps=reps, seed=seed, size=size)["IQM"]
        p, low, high = improvement_probability(
            matrices[claim.better], matrices[claim.than], reps=reps, seed=seed, size=size
        )
        sentences.append(
            f"{head}: {kind} {_number(stat_x[0])} [{_number(stat_x[1])}, {_number(stat_x[2])}] vs "
            f"{_number(stat_y[0])} [{_number(stat_y[1])}, {_number(stat_y[2])}] ({n_x} vs {n_y} seeds), "
            f"P({claim.better} > {claim.than}) = {p:.2f} [{low:.2f}, {high:.2f}]: {_verdict(low, high, claim.better, claim.than)}."
        )
    return sentences


#: Markers of the README block that ``write_report(..., readme=...)`` replaces.
README_BEGIN = "<!-- sb3-trpo-bench report: results begin -->"
README_END = "<!-- sb3-trpo-bench report: results end -->"


def _readme_block(runs: Any, claims: dict[str, list[str]], min_seeds: int, reps: int, seed: int) -> list[str]:
    """The README's results: per environment and algorithm the score (IQM [95% CI], or the seeds' scores), then
    each protocol's claims. Generated: edit the protocols or the runs, not this text."""
    names = ", ".join(claims) or "no protocol"
    lines = [
        README_BEGIN,
        f"<!-- generated by sb3-trpo-bench report --readme: do not edit by hand (protocols: {names}) -->",
        "",
        "| env | algo | runs | seeds | timesteps | score: IQM [95% CI] or the seeds' scores |",
        "|---|---|---|---|---|---|",
    ]
    finished = _finished(runs)
    for (env, algo, run_set), group in finished.groupby(["env", "algo", "set"]):
        score = _score_cells(group["score"].to_numpy(), min_seeds, reps, seed)[0]
        seeds = (
            f"{int(group['seed'].min())}-{int(group['seed'].max())}" if len(group) > 1 else str(group["seed"].iloc[0])
        )
        lines.append(
            f"| {env} | {_label(algo, run_set)} | {len(group)} | {seeds} | {int(group['timesteps'].max()):,} | {score} |"
        )
    lines += [
        "",
        f"Score of a run: the mean of its last {SCORE_EVALUATIONS} evaluations. Rows marked with a protocol are its "
        "pre-registered runs on held-out seeds; the others are the earlier protocol's (other seeds, earlier settings, "
        "docs/benchmark.md), never pooled with them. Finished runs only"
        + (f"; {len(runs) - len(finished)} run(s) still going are not shown." if len(finished) < len(runs) else "."),
        "",
    ]
    for name, sentences in claims.items():
        lines += [f"Pre-registered claims of `{name}` (decision: the 95% CI of P(X > Y) excludes 0.5):", ""]
        lines += [f"- {sentence}" for sentence in sentences]
        lines.append("")
    return [*lines, README_END]


def _splice_readme(readme: Path, block: list[str]) -> None:
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise ValueError(f"{readme} has no {README_BEGIN} ... {README_END} block to replace")
    before, rest = text.split(README_BEGIN, 1)
    _, after = rest.split(README_END, 1)
    readme.write_text(before + "\n".join(block) + after)


def _spread(values: Any) -> str:
    """``median (min–max)``, or the one value, or ``—`` when none is recorded."""
    if not len(values):
        return "—"
    if len(values) == 1 or values.min() == values.max():
        return _number(values.median())
    return f"{_number(values.median())} ({_number(values.min())}–{_number(values.max())})"


def _cost_lines(runs: Any) -> list[str]:
    """The report's cost section: per (environment, algorithm, set), the runs' training CPU time with its spread,
    training wall-clock and evaluation CPU time, and how many of the sweep's runs ran at once."""
    lines = [
        "## Cost",
        "",
        "Per run: training CPU time (user + system of the run's process, without evaluations), median and (min–max) "
        "over the runs; training wall-clock time and evaluation CPU time, medians; the mean number of this sweep's "
        "runs running at once (the sharing). CPU time leaves out the time other processes hold the cores, so the "
        "machine's load affects it less than wall-clock time, but it still affects it: processes sharing the cores "
        "compete for caches, memory bandwidth, SMT siblings and the clock frequency, and runs of one configuration "
        "have differed by a factor of two when the load average was above the number of cores (each evaluation "
        "records it, timeline.jsonl). Compare costs by their medians and spreads, not by single runs. A resumed "
        "run counts the work of the path to its final model; what its cut segments did after their last "
        "checkpoint is its result.json's `lost_work`.",
        "",
        "| env | algo | runs | training CPU s, median (min–max) | training wall s | evaluation CPU s | runs at once |",
        "|---|---|---|---|---|---|---|",
    ]
    for (env, algo, run_set), group in runs.groupby(["env", "algo", "set"]):
        cpu, wall, eval_cpu = (group[c].dropna() for c in ("cpu_seconds", "wall_seconds", "eval_cpu_seconds"))
        cells = [_spread(cpu), *(_number(values.median()) if len(values) else "—" for values in (wall, eval_cpu))]
        sharing = group["concurrent_runs_mean"].dropna()
        lines.append(
            f"| {env} | {_label(algo, run_set)} | {len(group)} | {' | '.join(cells)} | "
            f"{f'{sharing.mean():.2f}' if len(sharing) else '—'} |"
        )
    return [*lines, ""]


def _header_lines(table: Any, infos: list[dict[str, Any]]) -> list[str]:
    """The report's title, the machine(s) the sweeps ran on and the sweeps' budgets."""
    lines = ["# Benchmark report", "", "Machine(s):", "", *_machine_lines(infos), "", "Sweeps:", ""]
    return [*lines, *_budget_lines(table, infos), ""]


def _run_state_lines(infos: list[dict[str, Any]]) -> list[str]:
    """The sweeps' unfinished runs (with how far they got) and the runs not started, when there are any."""
    unfinished, not_started = [], []
    for info in infos:
        for (algo, env, run_seed), state in info["states"].items():
            if state == "not started":
                not_started.append(f"{algo}/{env}/seed {run_seed}")
            elif state != "done":
                budget = info["config"]["budgets"][algo][env]
                unfinished.append(f"{algo}/{env}/seed {run_seed} ({min(state, budget):,} of {budget:,} timesteps)")
    lines: list[str] = []
    if unfinished:
        lines += [f"Unfinished runs (their last evaluations are used): {', '.join(unfinished)}", ""]
    if not_started:
        lines += [f"Runs not started (no rows): {', '.join(not_started)}", ""]
    return lines


def _protocol_lines(runs: Any, registered: Sequence[Any]) -> list[str]:
    """The protocols section: each protocol file and its digest, how many runs match, and why the others do not
    (nothing without a protocol)."""
    if not registered:
        return []
    counts = runs["protocol_match"].value_counts()
    lines = [
        "## Protocols",
        "",
        *[f"- `{p.name}`: `{p.path.name}`, sha256 `{p.sha256[:16]}…`" for p in registered],
        "",
        "Runs: "
        + ", ".join(f"{state}: {n}" for state, n in counts.items())
        + ". A run matches when its sweep was started with one of these protocol files, it belongs to that "
        "protocol's group, its budget and evaluation are the protocol's and it trained with the registered "
        "hyperparameter block.",
        "",
    ]
    mismatched = runs[runs["protocol_match"].str.startswith("no")]
    for row in mismatched.itertuples():
        lines.append(f"- {row.algo}/{row.env}/seed {row.seed}: {row.protocol_match}")
    return [*lines, ""]


def _score_note_lines(min_seeds: int, reps: int, seed: int) -> list[str]:
    """The paragraph saying what a run's score is and how the tables' statistics and intervals are computed."""
    return [
        f"Score of a run: the mean of its last {SCORE_EVALUATIONS} periodic evaluations (fewer when it has fewer; "
        "column `score_evaluations` of runs.csv; 0: the run had none, its final evaluation is its score). IQM, mean and median over runs with 95% stratified-bootstrap "
        f"confidence intervals (rliable, {reps:,} replications, seed {seed}); with fewer than {min_seeds} runs the "
        "runs' scores are listed instead of an interval. Earlier-protocol rows and protocol rows are never pooled.",
        "",
    ]


def _env_sections(
    table: Any,
    runs: Any,
    out: Path,
    written: dict[str, Path],
    min_seeds: int,
    reps: int,
    seed: int,
    curve_reps: int,
    rng: np.random.Generator,
) -> list[str]:
    """One section per environment (sorted): its score table and its curves, plotted into ``out`` and added to
    ``written`` as ``curves_<env>``."""
    lines: list[str] = []
    for env in sorted(runs["env"].unique()):
        lines += [f"## {env}", "", *_env_table(runs, env, min_seeds, reps, seed)]
        written[f"curves_{env}"] = _plot_env(table, runs, env, out, curve_reps, rng)
        lines += [f"![{env}]({written[f'curves_{env}'].name})", ""]
    return lines


def _aggregate_rows(
    finished: Any,
    aggregates: list[tuple[str, list[str], list[str], list[str]]],
    min_seeds: int,
    reps: int,
    seed: int,
) -> list[str]:
    """The aggregate table's rows: per set and included algorithm its normalised IQM, mean and median (or the
    seeds' mean normalised scores when too few), then the set's algorithms left out."""
    lines: list[str] = []
    for run_set, envs, included, excluded in aggregates:
        for algo in included:
            matrix = _normalised_matrix(finished, algo, run_set, envs)
            if len(matrix) < min_seeds:  # too few seeds for an interval: the seeds' mean normalised scores
                cells = [f"seeds: {', '.join(f'{v:.3f}' for v in matrix.mean(axis=1))}", "—", "—"]
            else:
                stats = aggregate_intervals(matrix, reps=reps, seed=seed)
                cells = [f"{p:.3f} [{lo:.3f}, {hi:.3f}]" for p, lo, hi in (stats[n] for n in AGGREGATES)]
            lines.append(f"| {run_set} | {', '.join(envs)} | {algo} | {matrix.size} | {' | '.join(cells)} |")
        if excluded:
            lines.append(
                f"| {run_set} | | not aggregated (did not run every environment): {', '.join(excluded)} | | | | |"
            )
    return lines


def _reference_lines(aggregates: list[tuple[str, list[str], list[str], list[str]]]) -> list[str]:
    """The reference scores (random, good) of every environment in an aggregate, with their sources."""
    envs_all = sorted({env for _, envs, _, _ in aggregates for env in envs})
    lines = ["", "Reference scores (random, good):", ""]
    lines += [
        f"- {_task(e)}: {REFERENCE_SCORES[_task(e)][0]:g}, {REFERENCE_SCORES[_task(e)][1]:g} ({REFERENCE_SCORES[_task(e)][2]})"
        for e in envs_all
    ]
    d4rl = [e for e in envs_all if REFERENCE_SCORES[_task(e)][2].startswith("D4RL") and not e.endswith("-v2")]
    if d4rl:
        lines += [
            "",
            f"{', '.join(d4rl)} are normalised with D4RL's reference scores of the -v2 tasks (D4RL has none for "
            "later versions), used unchanged: the versions differ in their simulation, so a normalised score of 1 "
            "is D4RL's expert level only approximately.",
        ]
    return lines


def _aggregate_section(
    table: Any,
    runs: Any,
    out: Path,
    written: dict[str, Path],
    min_seeds: int,
    reps: int,
    seed: int,
    curve_reps: int,
    rng: np.random.Generator,
) -> list[str]:
    """The aggregate section over finished runs: its table, the reference scores and ``aggregate.png`` (added to
    ``written``), or why there is none; then the environments left out for want of reference scores."""
    # aggregates over finished runs only: a run still going would stand in for a final score
    finished = _finished(runs)
    aggregates = _aggregate_sets(finished)
    lines = ["## Aggregate over environments", ""]
    if aggregates:
        lines += [
            "Normalised scores (score - random) / (good - random) over (seed, environment), finished runs only; only "
            "algorithms that ran every environment of the aggregate, over the seeds that ran them all; 95% "
            "stratified-bootstrap CIs.",
            "",
            "| set | environments | algo | runs | IQM | mean | median |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += _aggregate_rows(finished, aggregates, min_seeds, reps, seed)
        lines += _reference_lines(aggregates)
        written["aggregate"] = _plot_aggregate(table, finished, aggregates, out, curve_reps, rng)
        lines += ["", "![aggregate](aggregate.png)", ""]
    else:
        lines += ["No environment with reference scores: no aggregate.", ""]
    skipped = sorted({e for e in runs["env"].unique() if _task(e) not in REFERENCE_SCORES})
    if skipped:
        lines += [f"Not in the aggregate (no reference scores): {', '.join(skipped)}.", ""]
    return lines


def _claim_lines(claims: dict[str, list[str]]) -> list[str]:
    """Each protocol's claims under its name: the content of ``claims.md`` and of the report's claims section."""
    lines: list[str] = []
    for name, sentences in claims.items():
        lines += [f"### `{name}`", "", *[f"- {sentence}" for sentence in sentences], ""]
    return lines


def write_report(
    paths: Sequence[Path],
    out: Path,
    reps: int = 10_000,
    seed: int = 0,
    protocol: Path | Sequence[Path] | None = None,
    readme: Path | None = None,
) -> dict[str, Path]:
    """Read sweep and Zoo folders and write ``results.csv``, ``runs.csv``, ``report.md`` and the PNG plots into
    ``out``; given ``protocol`` (one file or several), also state for each run whether it is one of their runs
    and write their claims (``claims.md``); given ``readme``, replace its generated results block.

    :param reps: bootstrap replications of the tables' confidence intervals (the curves use ``min(reps, 2000)``)
    :param seed: seed of the bootstrap
    :return: the written files by name (``csv``, ``runs``, ``markdown``, ``aggregate``, ``curves_<env>``, ...)
    :raises ValueError: no evaluation found in ``paths``
    """
    from sb3_trpo_ext.benchmark.protocol import load_protocol

    paths_given = [] if protocol is None else [protocol] if isinstance(protocol, (str, Path)) else list(protocol)
    registered = [load_protocol(path) for path in paths_given]
    # the tables use the first protocol's threshold (each protocol's claims use their own)
    min_seeds = int(registered[0].statistics.get("min_seeds_for_ci", 5)) if registered else 5
    table, infos = collect_rows(paths)
    if table.empty:
        raise ValueError(f"no evaluations found in {', '.join(map(str, paths))}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = run_table(table, infos, registered)
    written: dict[str, Path] = {"csv": out / "results.csv", "runs": out / "runs.csv", "markdown": out / "report.md"}
    table.to_csv(written["csv"], index=False)
    runs.to_csv(written["runs"], index=False)
    # one generator for all the curves' bands, drawn from in this order: each environment's, then the aggregate's
    rng = np.random.default_rng(seed)
    curve_reps = min(reps, 2000)

    lines = [*_header_lines(table, infos), *_run_state_lines(infos), *_protocol_lines(runs, registered)]
    lines += _score_note_lines(min_seeds, reps, seed)
    lines += _env_sections(table, runs, out, written, min_seeds, reps, seed, curve_reps, rng)
    lines += _aggregate_section(table, runs, out, written, min_seeds, reps, seed, curve_reps, rng)
    lines += _cost_lines(runs)

    claims = {p.name: claim_sentences(runs, p, reps, seed) + target_sentences(runs, p) for p in registered}
    claim_lines = _claim_lines(claims)
    if claims:
        lines += ["## Pre-registered claims", "", *claim_lines]
        written["claims"] = out / "claims.md"
        written["claims"].write_text("\n".join(claim_lines))
    written["markdown"].write_text("\n".join(lines))
    if readme is not None:
        _splice_readme(Path(readme), _readme_block(runs, claims, min_seeds, reps, seed))
        written["readme"] = Path(readme)
    return written
