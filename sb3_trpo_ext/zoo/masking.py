"""Evaluation with action masks for the masked Zoo keys (``trpo_mask``, ``ppo_mask``).

The Zoo's ``ExperimentManager`` evaluates with SB3's ``EvalCallback`` (``TrialEvalCallback`` when optimising),
whose ``evaluate_policy`` ignores masks: a masked policy would be scored on actions it can never take. While a
masked key runs, :func:`masked_evaluation` puts sb3-contrib's ``MaskableEvalCallback`` (and
:class:`MaskableTrialEvalCallback`) in their place, so evaluations read the environment's ``action_masks()``.
Both are ``EvalCallback`` subclasses with the same files (``evaluations.npz``, ``best_model.zip``), so anything
that finds the Zoo's ``EvalCallback`` in its callback list (the benchmark's recorder) finds them too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback

# One direction only: the registry does not import this module (the ppo_mask sampler and converter live in
# sb3_trpo_ext.zoo.hyperparams_opt with the other keys'), so the table is read here at import time.
from sb3_trpo_ext.zoo.registry import ZOO_ALGORITHMS

__all__ = ["MaskableTrialEvalCallback", "masked_evaluation", "masked_play"]


class MaskableTrialEvalCallback(MaskableEvalCallback):
    """rl_zoo3's ``TrialEvalCallback`` (report every evaluation to the Optuna trial, prune) evaluating with masks.

    :param eval_env: the evaluation environment (with ``action_masks()``)
    :param trial: the Optuna trial
    :param n_eval_episodes: episodes per evaluation
    :param eval_freq: evaluate every ``eval_freq`` calls
    :param deterministic: deterministic actions
    :param verbose: verbosity
    :param best_model_save_path: where to save the best model
    :param log_path: where to write ``evaluations.npz``
    """

    def __init__(
        self,
        eval_env: Any,
        trial: Any,
        n_eval_episodes: int = 5,
        eval_freq: int = 10000,
        deterministic: bool = True,
        verbose: int = 0,
        best_model_save_path: str | None = None,
        log_path: str | None = None,
    ) -> None:
        super().__init__(
            eval_env=eval_env,
            n_eval_episodes=n_eval_episodes,
            eval_freq=eval_freq,
            deterministic=deterministic,
            verbose=verbose,
            best_model_save_path=best_model_save_path,
            log_path=log_path,
        )
        self.trial = trial
        self.eval_idx = 0
        self.is_pruned = False

    def _on_step(self) -> bool:
        if self.eval_freq > 0 and self.n_calls % self.eval_freq == 0:
            super()._on_step()
            self.eval_idx += 1
            self.trial.report(self.last_mean_reward, self.eval_idx)
            if self.trial.should_prune():
                self.is_pruned = True
                return False
        return True


@contextlib.contextmanager
def masked_evaluation(algo: str) -> Iterator[None]:
    """While the block runs, the Zoo's ``ExperimentManager`` evaluates ``algo`` with masks if it is one of our
    masked keys (:attr:`~sb3_trpo_ext.zoo.registry.ZooAlgorithm.masked`); any other key is left alone.

    :param algo: the ``--algo`` of the command
    """
    entry = ZOO_ALGORITHMS.get(algo)
    if entry is None or not entry.masked:
        yield
        return
    from rl_zoo3 import exp_manager

    saved = exp_manager.EvalCallback, exp_manager.TrialEvalCallback
    # MaskableTrialEvalCallback stands in for TrialEvalCallback (same interface) without subclassing it
    masked = MaskableEvalCallback, MaskableTrialEvalCallback
    exp_manager.EvalCallback, exp_manager.TrialEvalCallback = masked  # type: ignore[misc,assignment]  # the patch
    try:
        yield
    finally:
        exp_manager.EvalCallback, exp_manager.TrialEvalCallback = saved  # type: ignore[misc]  # the patch undone


#: Zoo commands that step an environment with ``model.predict(obs, ...)`` and no masks.
PLAY_COMMANDS = frozenset({"enjoy", "record_video"})


@contextlib.contextmanager
def masked_play(algo: str, command: str) -> Iterator[None]:
    """While the block runs, the Zoo's ``enjoy`` / ``record_video`` play a masked key with masks: they call
    ``model.predict(obs, state=..., episode_start=..., deterministic=...)`` without ``action_masks`` on a model
    loaded without an environment, so the environment the script creates (``create_test_env``) is noted and
    ``predict`` reads its ``action_masks()`` when none are given. Any other key or command is left alone.

    :param algo: the ``--algo`` of the command
    :param command: the Zoo command (``enjoy``, ``record_video``, ...)
    """
    entry = ZOO_ALGORITHMS.get(algo)
    if entry is None or not entry.masked or command not in PLAY_COMMANDS:
        yield
        return
    import rl_zoo3
    import rl_zoo3.utils
    from sb3_contrib.common.maskable.utils import get_action_masks

    played: dict[str, Any] = {}
    create_test_env = rl_zoo3.utils.create_test_env
    # a masked key's class (MaskableTRPO, MaskablePPO): its predict takes action_masks, which BaseAlgorithm's lacks
    predict: Callable[..., Any] = entry.algo_class.predict

    def create_and_note(*args: Any, **kwargs: Any) -> Any:
        played["env"] = create_test_env(*args, **kwargs)
        return played["env"]

    def predict_with_masks(
        self: Any,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = False,
        action_masks: Any = None,
    ) -> Any:
        if action_masks is None and "env" in played:
            action_masks = get_action_masks(played["env"])
        return predict(self, observation, state, episode_start, deterministic, action_masks=action_masks)

    saved = [(owner, "create_test_env", owner.create_test_env) for owner in (rl_zoo3, rl_zoo3.utils)]
    for owner, name, _ in saved:
        setattr(owner, name, create_and_note)
    entry.algo_class.predict = predict_with_masks  # type: ignore[method-assign]  # class-wide patch (private_api.md)
    try:
        yield
    finally:
        entry.algo_class.predict = predict  # type: ignore[method-assign]  # the patch undone
        for owner, name, value in saved:
            setattr(owner, name, value)
