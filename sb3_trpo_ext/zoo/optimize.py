"""Hyperparameter optimization through the Zoo with seeded, repeated trials.

The Zoo's own ``ExperimentManager.objective`` trains each trial once with ``seed=None``: a study cannot be
replayed, and nothing keeps it off the seeds a benchmark reports. For ``train -optimize`` with one of our keys
(or with ``--trial-seeds`` for any key), :func:`seeded_trials` makes the Zoo's ``train`` script build a
:func:`seeded_experiment_manager`'s class instead, whose objective trains every trial once per seed of
``--trial-seeds`` (every trial the same seeds: the trials are compared on common random numbers) and scores the
trial by the mean over seeds of the last evaluation. Seed ``i``'s evaluations are reported to Optuna at steps
``i * n_evaluations + 1 ...``, so a pruner compares a trial's seed-``i`` curve with other trials' seed-``i``
curves.

A sampled ``policy_kwargs`` is merged into the block's (the ``trpo_lstm`` sampler samples only
``lstm_hidden_size``; the block's ``net_arch``, ``activation_fn``, ... stay), in the objective and when a
trial is loaded with ``--storage ... --study-name ... --trial-id N``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rl_zoo3.exp_manager import ExperimentManager

__all__ = ["DEFAULT_TRIAL_SEEDS", "seeded_experiment_manager", "seeded_trials", "trial_seeds_flag"]

#: Seeds of every trial of our keys when ``--trial-seeds`` is not given: in 0-99, which no benchmark protocol
#: reports (the protocols use 100 and above).
DEFAULT_TRIAL_SEEDS = (0, 1)


def trial_seeds_flag(argv: list[str]) -> tuple[list[str], tuple[int, ...] | None]:
    """Take our ``--trial-seeds S [S ...]`` out of a ``train`` command line.

    :return: the command line without the flag, and the seeds (None when the flag is absent)
    :raises ValueError: the flag without a seed, a seed that is not an integer >= 0, or a seed given twice
    """
    if "--trial-seeds" not in argv:
        return argv, None
    start = argv.index("--trial-seeds")
    end = start + 1
    while end < len(argv) and not argv[end].startswith("-"):
        end += 1
    values = argv[start + 1 : end]
    if not values:
        raise ValueError("--trial-seeds needs at least one seed, e.g. --trial-seeds 0 1")
    try:
        seeds = tuple(int(value) for value in values)
    except ValueError:
        raise ValueError(f"--trial-seeds takes integers >= 0, got {' '.join(values)}") from None
    if min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ValueError(f"--trial-seeds takes distinct integers >= 0, got {' '.join(values)}")
    return argv[:start] + argv[end:], seeds


def _merged_policy_kwargs_expression(block: Any, sampled: dict[str, Any]) -> str:
    """The block's ``policy_kwargs`` (the Zoo's string, evaluated by the Zoo) with ``sampled`` on top."""
    return f"dict({block or 'dict()'}, **{sampled!r})"


def seeded_experiment_manager(trial_seeds: tuple[int, ...] | None) -> type[ExperimentManager]:
    """A subclass of the installed Zoo's ``ExperimentManager`` whose Optuna objective trains each trial once per
    seed of ``trial_seeds`` (the model and its environments seeded, as ``train --seed`` seeds them) and returns
    the mean of the seeds' last evaluations; the seeds and per-seed scores are stored as the trial's user
    attributes ``seeds`` and ``seed_scores``. With ``trial_seeds=None`` the Zoo's own objective runs (only the
    ``policy_kwargs`` merge differs). Made on demand: importing this module does not import rl_zoo3."""
    import optuna
    from rl_zoo3.callbacks import TrialEvalCallback
    from rl_zoo3.exp_manager import ExperimentManager
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_SAMPLER
    from rl_zoo3.utils import ALGOS, get_callback_list

    class SeededManager(ExperimentManager):
        seeds = trial_seeds

        def load_trial(
            self, storage: str, study_name: str, trial_id: int | None = None, convert: bool = True
        ) -> dict[str, Any]:
            params = super().load_trial(storage, study_name, trial_id, convert)
            # merged in read_hyperparameters: the Zoo's update would replace the block's policy_kwargs
            self._study_policy_kwargs = params.pop("policy_kwargs", None) if convert else None
            return dict(params)

        def read_hyperparameters(self) -> tuple[dict[str, Any], dict[str, Any]]:
            self._study_policy_kwargs = None
            hyperparams, saved = super().read_hyperparameters()
            if self._study_policy_kwargs:
                merged = _merged_policy_kwargs_expression(hyperparams.get("policy_kwargs"), self._study_policy_kwargs)
                hyperparams["policy_kwargs"] = saved["policy_kwargs"] = merged
            return hyperparams, saved

        def objective(self, trial: optuna.Trial) -> float:
            if self.seeds is None:
                return float(super().objective(trial))
            kwargs = self._hyperparams.copy()
            sampled = HYPERPARAMS_SAMPLER[self.algo](trial, self.n_actions, self.n_envs, {})
            if isinstance(sampled.get("policy_kwargs"), dict):
                sampled = {**sampled, "policy_kwargs": {**kwargs.get("policy_kwargs", {}), **sampled["policy_kwargs"]}}
            kwargs.update(sampled)
            trial.set_user_attr("seeds", list(self.seeds))
            eval_freq = max(int(self.n_timesteps / self.n_evaluations) // self.n_envs, 1)
            scores = []
            manager_seed = self.seed  # the sampler's seed: put back after the trial
            try:
                for index, seed in enumerate(self.seeds):
                    self.seed = seed  # create_envs seeds the environments with self.seed
                    score, pruned = self._train_once(trial, kwargs, seed, eval_freq, index * self.n_evaluations)
                    scores.append(score)
                    trial.set_user_attr("seed_scores", scores)
                    if pruned:
                        raise optuna.TrialPruned()
            finally:
                self.seed = manager_seed
            return float(sum(scores) / len(scores))

        def _train_once(
            self, trial: optuna.Trial, kwargs: dict[str, Any], seed: int, eval_freq: int, first_step: int
        ) -> tuple[float, bool]:
            """One seed of a trial: (last evaluation's mean return, pruned)."""
            env = self.create_envs(self.n_envs, no_log=True)
            eval_env = self.create_envs(n_envs=self.n_eval_envs, eval_env=True)
            callback = TrialEvalCallback(
                eval_env, trial, n_eval_episodes=self.n_eval_episodes, eval_freq=eval_freq,
                deterministic=self.deterministic_eval,
            )  # fmt: skip
            callback.eval_idx = first_step
            try:
                model = ALGOS[self.algo](
                    env=env, tensorboard_log=None, seed=seed, verbose=self.verbose if self.verbose >= 2 else 0,
                    device=self.device, **kwargs,
                )  # fmt: skip
                callbacks = [*get_callback_list({"callback": self.specified_callbacks}), callback]
                model.learn(self.n_timesteps, callback=callbacks)
            except (AssertionError, ValueError) as error:  # as the Zoo: a diverging trial is pruned, not fatal
                print(f"trial {trial.number}, seed {seed}: {error}")
                raise optuna.TrialPruned() from error
            finally:
                env.close()
                eval_env.close()
            score = callback.last_mean_reward
            if not math.isfinite(score):
                raise optuna.TrialPruned(f"seed {seed}: non-finite score {score}")
            return float(score), callback.is_pruned

    SeededManager.__name__ = SeededManager.__qualname__ = "SeededExperimentManager"
    return SeededManager


@contextlib.contextmanager
def seeded_trials(algo: str, seeds: Sequence[int] | None) -> Iterator[None]:
    """While the block runs, the Zoo's ``train`` script builds its experiment with
    :func:`seeded_experiment_manager`'s class (``seeds``) instead of ``ExperimentManager``, for our keys (whose
    samplers rely on the ``policy_kwargs`` merge) and for any key given ``seeds``; the Zoo's class otherwise.

    The Zoo's ``train`` imports the name from ``rl_zoo3.exp_manager`` each time it runs (as ``__main__`` through
    runpy), so the module attribute is rebound for the block and put back after it (listed in
    ``docs/private_api.md``).
    """
    from sb3_trpo_ext.zoo.registry import ZOO_ALGORITHMS

    if seeds is None and algo not in ZOO_ALGORITHMS:
        yield
        return
    from rl_zoo3 import exp_manager

    original = exp_manager.ExperimentManager
    seeded = seeded_experiment_manager(None if seeds is None else tuple(seeds))
    exp_manager.ExperimentManager = seeded  # type: ignore[misc]  # patch of the Zoo's class name (private_api.md)
    try:
        yield
    finally:
        exp_manager.ExperimentManager = original  # type: ignore[misc]  # the patch undone
