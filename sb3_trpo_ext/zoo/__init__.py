"""RL Baselines3 Zoo integration: our TRPO as a Zoo algorithm, beside PPO, TD3, DDPG and sb3-contrib's TRPO.

Command line (every Zoo flag passes through)::

    python -m sb3_trpo_ext.zoo train --algo trpo_ext --env Hopper-v5 -f logs/
    python -m sb3_trpo_ext.zoo enjoy --algo trpo_ext --env Hopper-v5 -f logs/
    python -m sb3_trpo_ext.zoo train --algo ppo --env Hopper-v5 -f logs/   # peers through the same command
    sb3-trpo-zoo train ...                                                  # console script, same thing

The Zoo builds its ``--algo`` choices when a script's parser is made and looks for
``rl_zoo3/hyperparams/{algo}.yml``, so this module registers our keys in the Zoo's tables first, points
``--conf-file`` at our hyperparameter file (unless the user gave one), then runs the Zoo's own script as
``__main__`` with :mod:`runpy`.

From Python: :func:`register` (idempotent) adds our keys to the Zoo's algorithm, sampler and converter
tables; :func:`load_zoo_model` loads a Zoo-trained model with its environment wrapped in the saved
``VecNormalize`` statistics.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import inspect
import os
import re
import runpy
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo_ext.trpo import TRPO

__all__ = [
    "COMMANDS",
    "ZOO_ALGORITHMS",
    "ZooAlgorithm",
    "ZooConfigError",
    "convert_trpo_ext_params",
    "find_earlier_version_block",
    "hyperparams_path",
    "load_zoo_model",
    "main",
    "register",
    "sample_trpo_ext_params",
]

PACKAGE_NAME = "sb3-trpo-ext"
PROG = "python -m sb3_trpo_ext.zoo"

#: Zoo scripts reachable through our command line: name -> module run as ``__main__``.
COMMANDS: dict[str, str] = {
    "train": "rl_zoo3.train",
    "enjoy": "rl_zoo3.enjoy",
    "record_video": "rl_zoo3.record_video",
    "push_to_hub": "rl_zoo3.push_to_hub",
    "load_from_hub": "rl_zoo3.load_from_hub",
    "plot_train": "rl_zoo3.plots.plot_train",
    "all_plots": "rl_zoo3.plots.all_plots",
    "plot_from_file": "rl_zoo3.plots.plot_from_file",
}

#: Keys of a Zoo hyperparameter block that the Zoo consumes itself (never passed to the algorithm).
_ZOO_CONSUMED_KEYS = frozenset(
    {
        "n_timesteps",
        "n_envs",
        "normalize",
        "env_wrapper",
        "vec_env_wrapper",
        "frame_stack",
        "callback",
        "monitor_kwargs",
        "env_kwargs",
        "noise_type",
        "noise_std",
    }
)


class ZooConfigError(ValueError):
    """A hyperparameter file, block or override that our algorithm cannot use."""


# ---------------------------------------------------------------------------------------------- sampler
def sample_trpo_ext_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
    """Optuna sampler for our TRPO (the Zoo's ``HYPERPARAMS_SAMPLER`` signature).

    Only valid combinations are sampled, whatever ``n_envs``: the critic's minibatch is
    ``batch_size = n_steps / 2**critic_minibatches_pow`` (at least 32), so ``batch_size <= n_steps <=
    n_steps * n_envs`` always holds. ``target_kl`` is sampled on our true-KL scale (the KL of the whole
    action distribution, summed over action dimensions), log-uniform in [1e-3, 0.2].

    :param trial: the Optuna trial
    :param n_actions: action dimension for ``Box`` action spaces (0 otherwise); unused
    :param n_envs: number of training environments; unused, the sampled combination is valid for any
    :param additional_args: the Zoo's extra arguments (HER settings); unused
    :return: hyperparameters for :class:`sb3_trpo_ext.TRPO`
    """
    params = {
        "n_steps_pow": trial.suggest_int("n_steps_pow", 5, 12),
        "critic_minibatches_pow": trial.suggest_int("critic_minibatches_pow", 0, 6),
        "one_minus_gamma": trial.suggest_float("one_minus_gamma", 1e-4, 0.03, log=True),
        "one_minus_gae_lambda": trial.suggest_float("one_minus_gae_lambda", 1e-4, 0.1, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 3e-3, log=True),
        "n_critic_updates": trial.suggest_int("n_critic_updates", 5, 30),
        "cg_max_steps": trial.suggest_int("cg_max_steps", 5, 30),
        "cg_damping": trial.suggest_float("cg_damping", 1e-3, 0.3, log=True),
        "target_kl": trial.suggest_float("target_kl", 1e-3, 0.2, log=True),
        "net_arch": trial.suggest_categorical("net_arch", ["small", "medium"]),
        "activation_fn": trial.suggest_categorical("activation_fn", ["tanh", "relu"]),
    }
    hyperparams = convert_trpo_ext_params(params)
    # Display the true values in the study (as the Zoo's own samplers do)
    for key in ("gamma", "gae_lambda", "n_steps", "batch_size"):
        trial.set_user_attr(key, hyperparams[key])
    return hyperparams


def convert_trpo_ext_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """Turn the raw parameters of a trial (as stored by Optuna) into our TRPO's hyperparameters.

    Registered in the Zoo's ``HYPERPARAMS_CONVERTER`` (``train --storage ... --study-name ... --trial-id N``).

    :param sampled_params: ``trial.params`` of a trial sampled by :func:`sample_trpo_ext_params`
    :return: hyperparameters for :class:`sb3_trpo_ext.TRPO`
    """
    from rl_zoo3.hyperparams_opt import convert_onpolicy_params

    params = dict(sampled_params)
    minibatches_pow = params.pop("critic_minibatches_pow")
    hyperparams = convert_onpolicy_params(params)  # gamma, gae_lambda, n_steps, net_arch, activation_fn
    hyperparams["batch_size"] = 2 ** max(params["n_steps_pow"] - minibatches_pow, 5)
    return hyperparams


# -------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class ZooAlgorithm:
    """What the Zoo needs to know about one of our keys."""

    algo_class: type[BaseAlgorithm]
    #: file name of its hyperparameters in our ``hyperparams/`` folder
    hyperparams_file: str
    sampler: Callable[..., dict[str, Any]] = sample_trpo_ext_params
    converter: Callable[[dict[str, Any]], dict[str, Any]] = convert_trpo_ext_params


#: Our Zoo keys. Adding a key (e.g. ``"trpo_vine": ZooAlgorithm(TRPO, "trpo_vine.yml")``) is one entry.
ZOO_ALGORITHMS: dict[str, ZooAlgorithm] = {
    "trpo_ext": ZooAlgorithm(TRPO, "trpo_ext.yml"),
}


def register() -> None:
    """Add our keys to the Zoo's algorithm (``rl_zoo3.ALGOS``), sampler and converter tables.

    Idempotent; the Zoo's own keys (sb3-contrib's ``trpo`` included) are left alone.
    """
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER
    from rl_zoo3.utils import ALGOS

    for key, entry in ZOO_ALGORITHMS.items():
        ALGOS[key] = entry.algo_class
        HYPERPARAMS_SAMPLER[key] = entry.sampler
        HYPERPARAMS_CONVERTER[key] = entry.converter


def hyperparams_path(algo: str) -> Path:
    """Path of the hyperparameter file shipped for one of our keys.

    Inside an installed wheel the files live in ``sb3_trpo_ext/hyperparams/``; in a source checkout
    (or an editable install) in the top-level ``hyperparams/`` folder.

    :raises KeyError: if ``algo`` is not one of our keys
    """
    name = ZOO_ALGORITHMS[algo].hyperparams_file
    packaged = Path(str(resources.files("sb3_trpo_ext"))) / "hyperparams" / name
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "hyperparams" / name


def _zoo_hyperparams_path(algo: str) -> Path:
    """Where the Zoo looks for ``{algo}.yml`` by default (mirrors ``ExperimentManager``)."""
    import rl_zoo3

    package = Path(rl_zoo3.__file__).parent
    root = package if (package / "hyperparams").is_dir() else package.parent
    return root / "hyperparams" / f"{algo}.yml"


_VERSIONED_ID = re.compile(r"^(?P<task>.+)-v(?P<version>\d+)$")


def find_earlier_version_block(env_id: str, blocks: Sequence[str]) -> str | None:
    """The block for the most recent earlier version of the same task, if ``env_id`` has none.

    ``find_earlier_version_block("Hopper-v5", ["Hopper-v4", "Hopper-v3"]) == "Hopper-v4"``.

    :param env_id: a ``Name-vN`` environment id
    :param blocks: the environment ids of a hyperparameter file
    :return: the id of the block to use, or None (``env_id`` has a block, is not ``-vN``, or no earlier one)
    """
    match = _VERSIONED_ID.match(env_id)
    if env_id in blocks or match is None:
        return None
    best: tuple[int, str] | None = None
    for block in blocks:
        other = _VERSIONED_ID.match(block)
        if other and other["task"] == match["task"] and int(other["version"]) < int(match["version"]):
            candidate = (int(other["version"]), block)
            best = candidate if best is None else max(best, candidate)
    return None if best is None else best[1]


# ------------------------------------------------------------------------------------------------ train
def _train_preparser() -> argparse.ArgumentParser:
    """The few ``train`` flags we need to see before the Zoo parses the command line."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--algo", default="ppo")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("-conf", "--conf-file", default=None)
    parser.add_argument("-params", "--hyperparams", nargs="+", default=None)
    parser.add_argument("--gym-packages", nargs="+", default=[])
    return parser


def _select_block(config: dict[str, Any], env_id: str, is_atari: bool) -> str | None:
    """The block the Zoo's ``ExperimentManager.read_hyperparameters`` will use."""
    if env_id in config:
        return env_id
    if is_atari:
        return "atari"
    return "default" if "default" in config else None


def _check_block(algo: str, block: dict[str, Any], source: str) -> None:
    """Raise :class:`ZooConfigError` if ``block`` has a key our algorithm does not accept."""
    algo_class = ZOO_ALGORITHMS[algo].algo_class
    accepted = set(inspect.signature(algo_class.__init__).parameters) - {"self", "env", "_init_setup_model"}
    for key in block:
        if key not in accepted and key not in _ZOO_CONSUMED_KEYS:
            raise ZooConfigError(
                f"hyperparameter {key!r} in {source} is not accepted by {algo_class.__module__}.{algo_class.__name__} "
                f"(--algo {algo}); accepted: {', '.join(sorted(accepted | _ZOO_CONSUMED_KEYS))}"
            )


def _unknown_env_message(env_id: str) -> str:
    import gymnasium as gym

    close = difflib.get_close_matches(env_id, list(gym.envs.registry.keys()), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return (
        f"unknown environment id {env_id!r}: no gymnasium environment is registered under it{hint} "
        "(use --gym-packages MODULE for environments registered by another package)"
    )


def _prepare_train(argv: list[str], tmpdir: str) -> list[str]:
    """Check a ``train`` command line and add the ``--conf-file`` the Zoo should read.

    For our keys: our hyperparameter file (unless ``-conf``/``--conf-file`` was given), with every key of
    the block the Zoo will use, and of ``--hyperparams``, checked against our algorithm's arguments.
    For any key without ``--conf-file``: if the default file has no block for a ``-vN`` id but has one for
    an earlier version of the same task, a copy of the file with that block under the new id is used.

    :raises ZooConfigError: unknown algorithm, unknown environment id, or a hyperparameter we do not accept
    """
    import gymnasium as gym
    from rl_zoo3.exp_manager import ExperimentManager
    from rl_zoo3.utils import ALGOS

    known, _ = _train_preparser().parse_known_args(argv)
    if known.algo not in ALGOS:
        raise ZooConfigError(f"unknown --algo {known.algo!r}; available: {', '.join(sorted(ALGOS))}")
    for module in known.gym_packages:
        importlib.import_module(module)
    if known.env not in gym.envs.registry:
        raise ZooConfigError(_unknown_env_message(known.env))
    ours = known.algo in ZOO_ALGORITHMS

    if known.conf_file is None:
        config_path = hyperparams_path(known.algo) if ours else _zoo_hyperparams_path(known.algo)
    else:
        config_path = Path(known.conf_file)
    if config_path.suffix not in (".yml", ".yaml") or not config_path.is_file():
        return argv  # a Python config, or a missing file: the Zoo loads (or reports) it
    config = yaml.safe_load(config_path.read_text()) or {}
    extra: list[str] = []
    if known.conf_file is None:
        extra = ["--conf-file", str(config_path)]
        fallback = find_earlier_version_block(known.env, list(config))
        if fallback is not None:
            config[known.env] = config[fallback]
            derived = Path(tmpdir) / config_path.name
            derived.write_text(yaml.safe_dump(config, sort_keys=False))
            print(
                f"[sb3_trpo_ext.zoo] {config_path} has no {known.env} block: using its {fallback} block "
                f"for --algo {known.algo} (copied to {derived})",
                flush=True,
            )
            extra = ["--conf-file", str(derived)]
    if ours:
        block_id = _select_block(config, known.env, ExperimentManager.is_atari(known.env))
        if block_id is not None:
            _check_block(known.algo, config[block_id], f"{config_path} (block {block_id!r})")
        overrides = {item.split(":")[0]: None for item in known.hyperparams or []}
        _check_block(known.algo, overrides, "--hyperparams")
    # In front: an explicit (or abbreviated) user flag later on the line wins in argparse.
    return [*extra, *argv]


# -------------------------------------------------------------------------------- Hugging Face Hub shims
def _rewrite_model_card(text: str, algo: str, env_id: str) -> str:
    """Point a Zoo model card for one of our keys at our package and a command that resolves the key."""
    for script in ("load_from_hub", "enjoy", "train", "push_to_hub"):
        text = text.replace(f"python -m rl_zoo3.{script} ", f"python -m sb3_trpo_ext.zoo {script} ")
    text = text.replace("pip install rl_zoo3", f'pip install "{PACKAGE_NAME}[zoo]"')
    note = (
        f"\nThe agent is **`sb3_trpo_ext.TRPO`** from [{PACKAGE_NAME}](https://pypi.org/project/{PACKAGE_NAME}/) "
        f"(RL Zoo key `{algo}`), not sb3-contrib's TRPO: its `target_kl` bounds the true KL of the action "
        "distribution. The plain `rl_zoo3` scripts do not know the key; use "
        f"`python -m sb3_trpo_ext.zoo <command>` (same flags), e.g.\n\n"
        "```\n"
        f"python -m sb3_trpo_ext.zoo enjoy --algo {algo} --env {env_id} -f logs/\n"
        "```\n\n"
        "From Python:\n\n"
        "```python\n"
        "from sb3_trpo_ext.zoo import load_zoo_model\n\n"
        f'model, env = load_zoo_model("{algo}", "{env_id}", folder="logs")  # VecNormalize stats restored\n'
        "```\n"
    )
    lines = text.split("\n")
    title = next((i for i, line in enumerate(lines) if line.startswith("# ")), -1)
    lines.insert(title + 1, note)
    return "\n".join(lines)


@contextlib.contextmanager
def _hub_compat(algo: str | None, env_id: str | None) -> Iterator[None]:
    """Make the Zoo's hub scripts work with the installed ``huggingface_sb3`` / ``huggingface_hub``.

    - ``sb3-team-hf-integration`` 3.x (the ``huggingface_sb3`` rl-zoo3 2.9 requires) renamed
      ``generate_metadata`` to ``_generate_metadata`` (returning ``ModelCardData``), which
      ``rl_zoo3.push_to_hub`` still imports: provide it, returning the dict ``metadata_save`` expects.
    - ``rl_zoo3.load_from_hub`` treats a missing ``vec_normalize.pkl`` as ``requests``' ``HTTPError``;
      ``huggingface_hub`` 1.x/2.x raises ``EntryNotFoundError`` instead: translate it.
    - For our keys, the model card names our package and ``python -m sb3_trpo_ext.zoo`` commands.
    """
    import huggingface_hub.repocard
    import huggingface_sb3

    # The package's ``push_to_hub`` attribute is the function of that name, not the module.
    hf_push = importlib.import_module("huggingface_sb3.push_to_hub")

    saved: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, value: Any) -> None:
        saved.append((owner, name, getattr(owner, name, _MISSING)))
        setattr(owner, name, value)

    if not hasattr(hf_push, "generate_metadata") and hasattr(hf_push, "_generate_metadata"):
        new_metadata = hf_push._generate_metadata

        def generate_metadata(model_name: str, env_id: str, mean_reward: float, std_reward: float) -> dict[str, Any]:
            metadata = new_metadata(model_name, env_id, mean_reward, std_reward).to_dict()
            if algo in ZOO_ALGORITHMS:
                metadata["tags"] = [*metadata.get("tags", []), PACKAGE_NAME, "trpo"]
            return metadata

        patch(hf_push, "generate_metadata", generate_metadata)

    if algo in ZOO_ALGORITHMS:
        original_save = huggingface_hub.repocard.metadata_save

        def metadata_save(local_path: str | Path, data: dict[str, Any]) -> str | None:
            path = Path(local_path)
            if path.name == "README.md" and path.is_file():
                path.write_text(
                    _rewrite_model_card(path.read_text(encoding="utf-8"), algo, env_id or "<env>"), encoding="utf-8"
                )
            return original_save(local_path, data)

        patch(huggingface_hub.repocard, "metadata_save", metadata_save)

    try:
        import requests.exceptions
        from huggingface_hub.errors import EntryNotFoundError
    except ImportError:  # requests missing: rl_zoo3.load_from_hub cannot be imported anyway
        pass
    else:
        if not issubclass(EntryNotFoundError, requests.exceptions.HTTPError):
            original_load = huggingface_sb3.load_from_hub

            def load_from_hub(repo_id: str, filename: str) -> str:
                try:
                    return original_load(repo_id, filename)
                except EntryNotFoundError as error:
                    raise requests.exceptions.HTTPError(f"{filename} not found in {repo_id}: {error}") from error

            patch(huggingface_sb3, "load_from_hub", load_from_hub)
    try:
        yield
    finally:
        for owner, name, value in reversed(saved):
            if value is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, value)


_MISSING = object()


# ------------------------------------------------------------------------------------------------ loading
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


# ------------------------------------------------------------------------------------------ command line
_USAGE = f"""usage: {PROG} COMMAND [ZOO FLAGS ...]

Runs the RL Baselines3 Zoo's scripts with {", ".join(ZOO_ALGORITHMS)} added to its algorithms
and our hyperparameters used by default for them. Every flag is the Zoo's (`{PROG} COMMAND -h`).

commands:
  {", ".join(COMMANDS)}

examples:
  {PROG} train --algo trpo_ext --env Hopper-v5 -f logs/
  {PROG} train --algo ppo --env Hopper-v5 -f logs/
  {PROG} enjoy --algo trpo_ext --env Hopper-v5 -f logs/
  {PROG} plot_train --algo trpo_ext --env Hopper-v5 -f logs/
"""


def _run_script(module: str, argv: list[str]) -> None:
    """Run a Zoo script as ``__main__`` with ``argv`` as its command line."""
    saved_argv = sys.argv
    sys.argv = [module, *argv]
    try:
        with warnings.catch_warnings():
            # rl_zoo3.plots' __init__ imports its scripts, so runpy warns that the module is already loaded.
            warnings.filterwarnings("ignore", message=".*found in sys.modules after import", category=RuntimeWarning)
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        sys.argv = saved_argv


def _algo_env_flags(argv: Sequence[str]) -> tuple[str, str]:
    known, _ = _train_preparser().parse_known_args(list(argv))
    return known.algo, known.env


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m sb3_trpo_ext.zoo COMMAND [ZOO FLAGS ...]`` (console script ``sb3-trpo-zoo``).

    :param argv: the command line without the program name (default: ``sys.argv[1:]``)
    :raises SystemExit: on a usage error (status 2), with the Zoo script's status otherwise
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_USAGE)
        if not args:
            raise SystemExit(2)
        return
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"{PROG}: error: unknown command {command!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        raise SystemExit(2)
    register()
    with tempfile.TemporaryDirectory(prefix="sb3_trpo_zoo_") as tmpdir:
        if command == "train" and not {"-h", "--help"} & set(rest):
            try:
                rest = _prepare_train(rest, tmpdir)
            except ZooConfigError as error:
                print(f"{PROG} train: error: {error}", file=sys.stderr)
                raise SystemExit(2) from None
        with _hub_compat(*_algo_env_flags(rest)):
            _run_script(COMMANDS[command], rest)


if __name__ == "__main__":
    main()
