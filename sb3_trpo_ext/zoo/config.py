"""Hyperparameter files: where they are, which block the Zoo will read, and the checks ``train`` runs first."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import inspect
import io
import re
import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from sb3_trpo_ext.zoo.registry import ZOO_ALGORITHMS

__all__ = ["ZooConfigError", "find_earlier_version_block", "hyperparams_path"]

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


def hyperparams_path(algo: str) -> Path:
    """Path of the hyperparameter file shipped for one of our keys (any key of ``ZOO_ALGORITHMS``).

    Inside an installed wheel the files live in ``sb3_trpo_ext/hyperparams/``; in a source checkout
    (or an editable install) in the top-level ``hyperparams/`` folder.

    :raises KeyError: if ``algo`` is not one of our keys
    """
    name = ZOO_ALGORITHMS[algo].hyperparams_file
    packaged = Path(str(resources.files("sb3_trpo_ext"))) / "hyperparams" / name
    if packaged.is_file():
        return packaged
    # sb3_trpo_ext/zoo/config.py -> the checkout's root
    return Path(__file__).resolve().parents[2] / "hyperparams" / name


def _zoo_hyperparams_path(algo: str) -> Path:
    """Where the Zoo looks for ``{algo}.yml`` by default: the ``config`` of its own ``ExperimentManager``."""
    from rl_zoo3.exp_manager import ExperimentManager

    with tempfile.TemporaryDirectory() as folder:
        return Path(ExperimentManager(argparse.Namespace(), algo, "CartPole-v1", log_folder=folder).config)


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


def _train_preparser() -> argparse.ArgumentParser:
    """The few ``train`` flags we need to see before the Zoo parses the command line."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--algo", default="ppo")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("-conf", "--conf-file", default=None)
    parser.add_argument("-params", "--hyperparams", nargs="+", default=None)
    parser.add_argument("--gym-packages", nargs="+", default=[])
    return parser


def _algo_env_flags(argv: Sequence[str]) -> tuple[str, str]:
    """``--algo`` and ``--env`` of a Zoo command line (the Zoo's defaults when absent)."""
    known, _ = _train_preparser().parse_known_args(list(argv))
    return known.algo, known.env


def zoo_selected_block(config: dict[str, Any], env_id: str) -> str | None:
    """The id of the block of ``config`` that the Zoo's own ``ExperimentManager.read_hyperparameters`` selects for
    ``env_id`` (its id, ``"atari"`` or ``"default"``), or None where it finds none.

    The Zoo's method reads a file and returns the block's contents, not its id: it is called on a copy of
    ``config`` in which every block is replaced by a marker naming it.
    """
    from rl_zoo3.exp_manager import ExperimentManager

    markers = {key: {_BLOCK_MARKER: key} for key in config}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "blocks.yml"
        path.write_text(yaml.safe_dump(markers, sort_keys=False))
        manager = ExperimentManager(argparse.Namespace(), "ppo", env_id, log_folder=folder, config=str(path))
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # it prints the file and the block
                hyperparams, _ = manager.read_hyperparameters()
        except ValueError:  # "Hyperparameters not found for ..."
            return None
    return hyperparams[_BLOCK_MARKER]


_BLOCK_MARKER = "__sb3_trpo_ext_block__"


def _select_block(config: dict[str, Any], env_id: str, is_atari: bool | None = None) -> str | None:
    """The block the Zoo's ``ExperimentManager.read_hyperparameters`` will use (:func:`zoo_selected_block`; the Zoo
    decides itself whether ``env_id`` is an Atari game, ``is_atari`` is kept for callers and not used)."""
    return zoo_selected_block(config, env_id)


def _check_block(algo: str, block: dict[str, Any], source: str) -> None:
    """Raise :class:`ZooConfigError` if ``block`` has a key our algorithm does not accept."""
    algo_class = ZOO_ALGORITHMS[algo].algo_class
    accepted: set[str] = set()
    for cls in algo_class.__mro__:  # a subclass may name only its own arguments and pass **kwargs on
        init = vars(cls).get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        accepted |= {p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    accepted -= {"self", "env", "_init_setup_model"}
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
    from rl_zoo3.utils import ALGOS

    known, _ = _train_preparser().parse_known_args(argv)
    if known.algo not in ALGOS:
        raise ZooConfigError(f"unknown --algo {known.algo!r}; available: {', '.join(sorted(ALGOS))}")
    for module in known.gym_packages:
        importlib.import_module(module)
    importlib.import_module("rl_zoo3.import_envs")  # the Zoo's own ids (CartPoleNoVel-v1, ...), as its train does
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
        block_id = zoo_selected_block(config, known.env)
        if block_id is not None:
            _check_block(known.algo, config[block_id], f"{config_path} (block {block_id!r})")
        overrides = {item.split(":")[0]: None for item in known.hyperparams or []}
        _check_block(known.algo, overrides, "--hyperparams")
    # In front: an explicit (or abbreviated) user flag later on the line wins in argparse.
    return [*extra, *argv]
