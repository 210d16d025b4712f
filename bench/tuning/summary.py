"""Every trial of a trpo_lstm study journal as a Markdown table (parameters, seeds, each seed's score, the trial's
score, the mean of all its evaluations), for bench/tuning/summary-ENV.md.

    python bench/tuning/summary.py CartPoleNoVel-v1 > bench/tuning/summary-CartPoleNoVel-v1.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

HERE = Path(__file__).resolve().parent


def main(env_id: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = f"trpo_lstm-{env_id}"
    study = optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(HERE / f"{name}.log"))))
    keys = sorted({key for trial in study.trials for key in trial.params})
    print(f"# Study `{name}` ({len(study.trials)} trials in the journal `{name}.log`)\n")
    print("Score: the mean over the seeds of each seed's last evaluation (5 deterministic episodes); 'all evals': the")
    print("mean of every evaluation the trial reported (4 per seed), the tie-break among equal scores.\n")
    print(
        "| trial | state | " + " | ".join(keys) + " | n_steps | batch_size | seeds | seed scores | score | all evals |"
    )
    print("|" + "---|" * (len(keys) + 8))
    for trial in study.trials:
        values = list(trial.intermediate_values.values())
        attrs = trial.user_attrs
        cells = [
            f"{trial.params[k]:.4g}" if isinstance(trial.params.get(k), float) else str(trial.params.get(k, ""))
            for k in keys
        ]
        score = "" if trial.value is None else f"{trial.value:.1f}"
        mean = f"{sum(values) / len(values):.1f}" if values else ""
        seed_scores = ", ".join(f"{v:.1f}" for v in attrs.get("seed_scores", []))
        print(
            f"| {trial.number} | {trial.state.name} | "
            + " | ".join(cells)
            + f" | {attrs.get('n_steps', '')} | {attrs.get('batch_size', '')} | {attrs.get('seeds', '')} | {seed_scores}"
            f" | {score} | {mean} |"
        )


if __name__ == "__main__":
    main(sys.argv[1])
