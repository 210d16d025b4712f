"""``learn()`` of data-parallel ranks: SB3's on-policy loop (collect, log, update) with the meeting of the ranks
after each rollout, where every decision that changes what the ranks do next is taken together.

Per rollout, after the meeting: one all-reduce decides whether training goes on (a callback on rank 0 may have
stopped it mid-rollout, and ``learn``'s budget counts global steps), the ranks' new episodes are shared (rank 0
logs every rank's), their ``VecNormalize`` statistics are merged, then the update runs (its means are global:
:mod:`sb3_trpo_ext.common.reduce`). Every ``CHECK_EVERY`` updates the ranks compare their parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stable_baselines3.common.callbacks import BaseCallback

from sb3_trpo_ext.distributed.ranks import Ranks
from sb3_trpo_ext.distributed.vecnormalize import VecNormalizeMerger

if TYPE_CHECKING:
    from sb3_trpo_ext.trpo.trpo import TRPO

__all__ = ["CHECK_EVERY", "learn_data_parallel"]

#: updates between two comparisons of every rank's parameters (one all-gather of the policy's parameters)
CHECK_EVERY = 10


def learn_data_parallel(
    model: TRPO,
    ranks: Ranks,
    total_timesteps: int,
    callback: Any,
    log_interval: int,
    tb_log_name: str,
    reset_num_timesteps: bool,
    progress_bar: bool,
) -> None:
    """Train ``model`` for ``total_timesteps`` global steps on every rank (see :meth:`TRPO.learn`)."""
    ranks.check_same_settings(model._settings())
    ranks.broadcast_parameters(model.policy.parameters())
    vec_normalize = model._vec_normalize_env
    # the statistics before the first reset: the reset's observations are this rank's change, merged as any other
    merger = VecNormalizeMerger(vec_normalize, ranks.sum, ranks.broadcast) if vec_normalize is not None else None
    total_timesteps, rank_callback = model._setup_learn(
        total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
    )
    assert isinstance(rank_callback, BaseCallback) and model.env is not None
    rank_callback.on_training_start(locals(), globals())
    iteration = 0
    while model.num_timesteps < total_timesteps:
        collected = model.collect_rollouts(
            model.env, rank_callback, model.rollout_buffer, n_rollout_steps=model.n_steps
        )
        ranks.meet()
        if not ranks.all_true(collected):
            break
        model._share_episodes()
        if merger is not None:
            merger.merge()
        iteration += 1
        model._update_current_progress_remaining(model.num_timesteps, total_timesteps)
        if ranks.is_main and log_interval is not None and iteration % log_interval == 0:
            model.dump_logs(iteration)
        model.train()
        if iteration % CHECK_EVERY == 0:
            ranks.check_parameters(list(model.policy.parameters()))
    rank_callback.on_training_end()
