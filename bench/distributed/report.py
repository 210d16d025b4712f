"""Curves of bench/distributed/learning.sh's two Hopper-v5 runs (one process, 2 ranks): the Zoo's evaluations
against global steps, and rank 0's training episodes against wall-clock seconds.

    python bench/distributed/report.py        # writes docs/bench/distributed_hopper.png and prints a table
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
RUNS = {"one process (2 envs)": ("one-process", 1), "2 ranks (2 envs each)": ("two-ranks", 2)}


def monitor_curve(run: Path, ranks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank 0's episodes from its Monitor files: (end time in s, global steps so far, return), in time order."""
    rows = []
    for path in sorted(run.glob("*.monitor.csv")):
        with path.open() as file:
            next(file)  # the JSON header
            rows += [(float(r["t"]), int(r["l"]), float(r["r"])) for r in csv.DictReader(file)]
    rows.sort()
    times, lengths, returns = (np.array(column) for column in zip(*rows, strict=True))
    return times, np.cumsum(lengths) * ranks, returns  # every rank steps as many environments as rank 0


def main() -> None:
    folder = HERE / "hopper-1M"
    starts_ends = dict(line.rsplit(" ", 1) for line in (folder / "times.txt").read_text().splitlines())
    fig, (by_steps, by_time) = plt.subplots(1, 2, figsize=(11, 4))
    print("| run | wall-clock s | final evaluation (10 episodes) | best evaluation |")
    print("|---|---:|---:|---:|")
    for label, (name, ranks) in RUNS.items():
        run = next((folder / name / "trpo_ext").glob("Hopper-v5_*"))
        with np.load(run / "evaluations.npz") as data:
            steps, results = data["timesteps"], data["results"].mean(axis=1)
        by_steps.plot(steps, results, label=label)
        times, _, returns = monitor_curve(run, ranks)
        window = 20
        smooth = np.convolve(returns, np.ones(window) / window, mode="valid")
        by_time.plot(times[window - 1 :], smooth, label=label)
        wall = float(starts_ends[f"{name} end"]) - float(starts_ends[f"{name} start"])
        print(f"| {label} | {wall:.0f} | {results[-1]:.0f} | {results.max():.0f} |")
    by_steps.set(xlabel="global environment steps", ylabel="evaluation return (10 episodes)", title="Hopper-v5, seed 0")
    by_time.set(xlabel="wall-clock seconds", ylabel="training episode return (mean of 20)", title="rank 0's episodes")
    for axis in (by_steps, by_time):
        axis.legend()
        axis.grid(alpha=0.3)
    fig.tight_layout()
    out = HERE.parents[1] / "docs" / "bench" / "distributed_hopper.png"
    fig.savefig(out, dpi=90)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
