"""Loading a Zoo-trained model from Python, with its environment built as ``enjoy`` builds it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo_ext.zoo.registry import register

__all__ = ["load_zoo_model"]


def load_zoo_model(
    algo: str,
    env_id: str,
    folder: str | os.PathLike[str] = "logs",
    exp_id: int = 0,
    load_best: bool = False,
    load_checkpoint: int | None = None,
    n_envs: int = 1,
    seed: int = 0,
    render_mode: str | None = None,
    device: str = "auto",
    env_kwargs: dict[str, Any] | None = None,
) -> tuple[BaseAlgorithm, VecEnv]:
    """Load a model trained by the Zoo (``train -f folder``) together with its test environment.

    The environment is built as ``enjoy`` builds it: the saved wrappers, frame stacking and the saved
    ``VecNormalize`` statistics (frozen: ``training=False``, ``norm_reward=False``) when the run normalized.

    :param algo: Zoo key (``trpo_ext``, ``ppo``, ``trpo``, ...)
    :param env_id: environment id the model was trained on
    :param folder: the Zoo's log folder (``-f``)
    :param exp_id: experiment id (0: the latest run, -1: no experiment sub-folder)
    :param load_best: load ``best_model.zip`` (saved by the evaluation callback) instead of the final model
    :param load_checkpoint: load the checkpoint saved after this many steps
    :param n_envs: number of test environments
    :param seed: seed of the test environments
    :param render_mode: gymnasium render mode (``"human"``, ``"rgb_array"``), None for no rendering
    :param device: torch device of the model
    :param env_kwargs: keyword arguments of the environment, over the ones saved with the run
    :return: the model (with the environment attached) and the environment
    """
    from huggingface_sb3 import EnvironmentName
    from rl_zoo3.utils import ALGOS, create_test_env, get_model_path, get_saved_hyperparams

    register()
    env_name = EnvironmentName(env_id)
    _, model_path, log_path = get_model_path(
        exp_id, str(folder), algo, env_name, load_best, None if load_checkpoint is None else str(load_checkpoint)
    )
    stats_path = os.path.join(log_path, env_name)
    hyperparams, maybe_stats_path = get_saved_hyperparams(stats_path, test_mode=True)
    kwargs: dict[str, Any] = {}
    args_path = Path(stats_path) / "args.yml"
    if args_path.is_file():
        saved_args = yaml.load(args_path.read_text(), Loader=yaml.UnsafeLoader) or {}
        kwargs.update(saved_args.get("env_kwargs") or {})
    kwargs.update(hyperparams.pop("env_kwargs", None) or {})
    kwargs.update(env_kwargs or {})
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    env = create_test_env(
        env_name.gym_id,
        n_envs=n_envs,
        stats_path=maybe_stats_path,
        seed=seed,
        should_render=render_mode is not None,
        hyperparams=hyperparams,
        env_kwargs=kwargs,
    )
    model = ALGOS[algo].load(model_path, env=env, device=device)
    return model, env
