"""Callbacks under data parallelism: every rank counts global steps, rank 0 alone runs the user's callbacks
(evaluation, checkpoints, the progress bar), each inside the monitor's callback window so that a long evaluation
never reads as a hung rank."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback, ProgressBarCallback

from sb3_trpo_ext.distributed.ranks import Ranks

__all__ = ["GlobalProgressBar", "RankCallback"]


class RankCallback(BaseCallback):
    """Wraps this rank's callback (rank 0: the user's, already initialised by SB3's ``_init_callback``; other
    ranks: None).

    At each step the model's ``num_timesteps`` grows by the steps the other ranks took in the same step (every
    rank steps ``n_envs`` environments in lock step), so that callbacks, logs and ``learn``'s budget count global
    steps; the monitor hears that the rank made progress.
    """

    def __init__(self, inner: BaseCallback | None, ranks: Ranks):
        super().__init__()
        self.inner = inner
        self.ranks = ranks

    @contextlib.contextmanager
    def _window(self) -> Iterator[None]:
        monitor = self.ranks.monitor
        with monitor.in_callback() if monitor is not None else contextlib.nullcontext():
            yield

    def _on_training_start(self) -> None:
        if self.inner is not None:
            with self._window():
                self.inner.on_training_start(self.locals, self.globals)

    def _on_rollout_start(self) -> None:
        if self.inner is not None:
            with self._window():
                self.inner.on_rollout_start()

    def _on_step(self) -> bool:
        self.model.num_timesteps += (self.ranks.world_size - 1) * self.training_env.num_envs
        if self.ranks.monitor is not None:
            self.ranks.monitor.progress()
        if self.inner is None:
            return True
        with self._window():
            return self.inner.on_step()

    def _on_rollout_end(self) -> None:
        if self.inner is not None:
            with self._window():
                self.inner.on_rollout_end()

    def _on_training_end(self) -> None:
        if self.inner is not None:
            with self._window():
                self.inner.on_training_end()

    def update_child_locals(self, locals_: dict[str, Any]) -> None:
        if self.inner is not None:
            self.inner.update_locals(locals_)


class GlobalProgressBar(ProgressBarCallback):
    """SB3's progress bar counting the steps of every rank (SB3's counts this process's environments)."""

    def __init__(self, world_size: int):
        super().__init__()
        self.world_size = world_size

    def _on_step(self) -> bool:
        self.pbar.update(self.training_env.num_envs * self.world_size)
        return True
