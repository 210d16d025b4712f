"""Loading a Zoo-trained model from Python, with its environment built as ``enjoy`` builds it."""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack

from sb3_trpo_ext.safe_load import load_model, load_pickle_file, load_vec_normalize
from sb3_trpo_ext.zoo.registry import register
from sb3_trpo_ext.zoo.safe_config import ZooYamlLoader, check_wrapper_names, read_saved_hyperparams, safe_yaml_load

__all__ = ["load_zoo_model", "safe_create_test_env", "safe_zoo_scripts"]

#: The Zoo's own functions while :func:`safe_zoo_scripts` has pointed the Zoo's names at ours.
_zoo_originals: dict[str, Any] = {}


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
    *,
    trusted: bool = False,
    safe_globals: Iterable[Any] = (),
) -> tuple[BaseAlgorithm, VecEnv]:
    """Load a model trained by the Zoo (``train -f folder``) together with its test environment.

    The environment is built as ``enjoy`` builds it: the saved wrappers, frame stacking and the saved
    ``VecNormalize`` statistics (frozen: ``training=False``, ``norm_reward=False``) when the run normalized.

    Nothing from the run folder is executed: the model through :func:`sb3_trpo_ext.safe_load.load_model`
    (whatever the algorithm), ``vecnormalize.pkl`` through the same restricted unpickler, ``config.yml`` and
    ``args.yml`` through a safe YAML loader, ``normalize`` parsed as a literal, wrapper names only from
    :data:`sb3_trpo_ext.zoo.safe_config.WRAPPER_MODULES`.

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
    :param trusted: read the folder as the Zoo does (full unpickling, unsafe YAML, ``eval``): only for runs you
        vouch for
    :param safe_globals: classes or ``(module, name)`` pairs to allow in this load
    :return: the model (with the environment attached) and the environment
    """
    from huggingface_sb3 import EnvironmentName
    from rl_zoo3.utils import ALGOS, get_model_path

    register()
    env_name = EnvironmentName(env_id)
    _, model_path, log_path = get_model_path(
        exp_id, str(folder), algo, env_name, load_best, None if load_checkpoint is None else str(load_checkpoint)
    )
    stats_path = os.path.join(log_path, env_name)
    hyperparams, maybe_stats_path = read_saved_hyperparams(stats_path, test_mode=True, trusted=trusted)
    kwargs: dict[str, Any] = {}
    args_path = Path(stats_path) / "args.yml"
    if args_path.is_file():
        saved_args = safe_yaml_load(args_path, trusted=trusted) or {}
        kwargs.update(saved_args.get("env_kwargs") or {})
    kwargs.update(hyperparams.pop("env_kwargs", None) or {})
    kwargs.update(env_kwargs or {})
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    env = safe_create_test_env(
        env_name.gym_id,
        n_envs=n_envs,
        stats_path=maybe_stats_path,
        seed=seed,
        should_render=render_mode is not None,
        hyperparams=hyperparams,
        env_kwargs=kwargs,
        trusted=trusted,
        safe_globals=safe_globals,
    )
    model = load_model(ALGOS[algo], model_path, env=env, device=device, trusted=trusted, safe_globals=safe_globals)
    return model, env


def safe_create_test_env(
    env_id: str,
    n_envs: int = 1,
    stats_path: str | None = None,
    seed: int = 0,
    log_dir: str | None = None,
    should_render: bool = True,
    hyperparams: dict[str, Any] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    vec_env_cls: type[VecEnv] | None = None,
    vec_env_kwargs: dict[str, Any] | None = None,
    *,
    trusted: bool = False,
    safe_globals: Iterable[Any] = (),
) -> VecEnv:
    """rl_zoo3's ``create_test_env`` (same arguments) with ``vecnormalize.pkl`` read by the restricted
    unpickler and the wrapper names checked against the reviewed modules.

    The Zoo's function builds the environments and wrappers; only the statistics (and the frame stacking
    that goes above them) are ours, since the Zoo reads the statistics with a plain ``pickle.load``.

    :param trusted: the Zoo's own function, unchanged (only for runs you vouch for)
    :param safe_globals: classes or ``(module, name)`` pairs to allow in ``vecnormalize.pkl``
    :return: the test environment
    """
    import rl_zoo3.utils

    # the Zoo's function, also while safe_zoo_scripts points the Zoo's name at this one
    create_test_env = _zoo_originals.get("create_test_env", rl_zoo3.utils.create_test_env)
    hyperparams = {} if hyperparams is None else hyperparams
    arguments = dict(
        n_envs=n_envs,
        seed=seed,
        log_dir=log_dir,
        should_render=should_render,
        hyperparams=hyperparams,
        env_kwargs=env_kwargs,
        vec_env_cls=vec_env_cls,
        vec_env_kwargs=vec_env_kwargs,
    )
    if trusted:
        return create_test_env(env_id, stats_path=stats_path, **arguments)
    check_wrapper_names(hyperparams)
    env = create_test_env(env_id, stats_path=None, **arguments)
    if stats_path is None:
        return env
    if hyperparams.get("normalize"):
        path = os.path.join(stats_path, "vecnormalize.pkl")
        if not os.path.exists(path):
            raise ValueError(f"VecNormalize stats {path} not found")
        print("Loading running average")  # the Zoo's own messages
        print(f"with params: {hyperparams.get('normalize_kwargs')}")
        env = load_vec_normalize(path, env, safe_globals=safe_globals)
        env.training = False  # frozen statistics, as the Zoo's test environment
        env.norm_reward = False
    n_stack = hyperparams.get("frame_stack", 0)
    if n_stack > 0:
        env = VecFrameStack(env, n_stack)
    return env


@contextlib.contextmanager
def safe_zoo_scripts(trusted: bool = False) -> Iterator[None]:
    """Make the Zoo's ``train`` / ``enjoy`` / ``record_video`` / ``push_to_hub`` scripts load without running code
    from the run folder, for the duration of one command (everything is restored on exit).

    The scripts read ``config.yml`` with ``get_saved_hyperparams``, ``args.yml`` with ``yaml.UnsafeLoader``,
    the statistics in ``create_test_env`` (enjoy) or ``VecNormalize.load`` (``train -i``), the model with
    ``ALGOS[algo].load`` and an off-policy model's ``replay_buffer.pkl`` (``train -i``) with SB3's
    ``load_from_pkl``; each of those names is pointed at its safe counterpart here, so the Zoo's scripts run
    unchanged otherwise.

    :param trusted: leave the Zoo as it is (only for runs you vouch for)
    """
    if trusted:
        yield
        return
    import rl_zoo3
    import rl_zoo3.utils
    import yaml
    from stable_baselines3.common import off_policy_algorithm
    from stable_baselines3.common.vec_env import VecNormalize

    saved: list[tuple[Any, str, Any]] = []
    _zoo_originals["create_test_env"] = rl_zoo3.utils.create_test_env

    def patch(owner: Any, name: str, value: Any) -> None:
        # the attribute as stored (getattr would unwrap a staticmethod, which then comes back as a plain function)
        saved.append((owner, name, inspect.getattr_static(owner, name)))
        setattr(owner, name, value)

    for owner in (rl_zoo3, rl_zoo3.utils):
        patch(owner, "get_saved_hyperparams", read_saved_hyperparams)
        patch(owner, "create_test_env", safe_create_test_env)
    patch(yaml, "UnsafeLoader", ZooYamlLoader)  # what the scripts name when they read args.yml
    patch(VecNormalize, "load", staticmethod(load_vec_normalize))  # ExperimentManager._maybe_normalize
    patch(off_policy_algorithm, "load_from_pkl", load_pickle_file)  # OffPolicyAlgorithm.load_replay_buffer
    algos = rl_zoo3.utils.ALGOS
    original_algos = dict(algos)
    algos.update({key: _safely_loading(algo_class) for key, algo_class in original_algos.items()})
    try:
        yield
    finally:
        algos.clear()
        algos.update(original_algos)
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)
        _zoo_originals.clear()


def _safely_loading(algo_class: type[BaseAlgorithm]) -> type[BaseAlgorithm]:
    """A stand-in for ``algo_class`` in the Zoo's table whose ``load`` is :func:`load_model` (the model it
    returns is an ``algo_class`` instance, as before)."""

    def load(
        cls: type, path: Any, env: Any = None, device: Any = "auto", custom_objects: Any = None, **kwargs: Any
    ) -> Any:
        return load_model(algo_class, path, env=env, device=device, custom_objects=custom_objects, **kwargs)

    namespace = {
        "load": classmethod(load),
        "__module__": algo_class.__module__,
        "__qualname__": algo_class.__qualname__,
    }
    return type(algo_class.__name__, (algo_class,), namespace)
