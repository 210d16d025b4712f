"""Which hyperparameter block the Zoo reads: we ask the Zoo's own ``ExperimentManager.read_hyperparameters``, and our
``-vN`` fallback (a block of an earlier version for an id without one) agrees with the Zoo wherever the Zoo has an
answer of its own."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
from pathlib import Path

import gymnasium as gym
import pytest
import yaml

pytest.importorskip("rl_zoo3")

from rl_zoo3.exp_manager import ExperimentManager  # noqa: E402

from sb3_trpo_ext.zoo.config import (  # noqa: E402
    _prepare_train,
    _zoo_hyperparams_path,
    find_earlier_version_block,
    hyperparams_path,
    zoo_selected_block,
)

FILES = {
    "trpo_ext": lambda: hyperparams_path("trpo_ext"),
    "trpo_vine": lambda: hyperparams_path("trpo_vine"),
    "ppo": lambda: _zoo_hyperparams_path("ppo"),
    "trpo": lambda: _zoo_hyperparams_path("trpo"),
}
VERSIONED = re.compile(r"^(?P<task>.+)-v(?P<version>\d+)$")


def _zoo_read(config_path: Path, env_id: str, tmp_path: Path) -> dict:
    """The hyperparameters the Zoo itself reads from ``config_path`` for ``env_id``."""
    manager = ExperimentManager(argparse.Namespace(), "ppo", env_id, log_folder=str(tmp_path), config=str(config_path))
    with contextlib.redirect_stdout(io.StringIO()):
        return manager.read_hyperparameters()[0]


def _config(name: str) -> tuple[Path, dict]:
    path = FILES[name]()
    assert path.is_file(), path
    return path, yaml.safe_load(path.read_text())


def test_zoo_selection_is_the_zoos() -> None:
    config = {"Hopper-v4": {"a": 1}, "atari": {"a": 2}, "default": {"a": 3}}
    assert zoo_selected_block(config, "Hopper-v4") == "Hopper-v4"
    assert zoo_selected_block(config, "PongNoFrameskip-v4") == "atari"
    assert zoo_selected_block(config, "CartPole-v1") == "default"
    assert zoo_selected_block({"Hopper-v4": {}}, "CartPole-v1") is None


@pytest.mark.parametrize("name", list(FILES))
def test_ids_with_blocks_are_left_to_the_zoo(name: str, tmp_path: Path) -> None:
    """Every registered id with a block: our fallback stays out of the way, and the Zoo reads that very block."""
    path, config = _config(name)
    ids = [key for key in config if key in gym.envs.registry]
    assert ids, f"no registered environment id in {path}"
    for env_id in ids:
        assert find_earlier_version_block(env_id, list(config)) is None
        assert zoo_selected_block(config, env_id) == env_id
        assert _zoo_read(path, env_id, tmp_path) == config[env_id]


@pytest.mark.parametrize("name", ["ppo", "trpo"])  # our files have a block for every version they cover
def test_fallback_gives_what_the_zoo_gives_for_the_earlier_version(name: str, tmp_path: Path) -> None:
    """For a registered ``Name-vN`` without a block whose earlier version has one, the file our ``train`` hands the
    Zoo makes the Zoo read exactly the Zoo's own block for the most recent earlier version."""
    path, config = _config(name)
    cases = []
    for block in config:
        match = VERSIONED.match(block)
        if not match:
            continue
        later = [
            f"{match['task']}-v{v}"
            for v in range(int(match["version"]) + 1, int(match["version"]) + 4)
            if f"{match['task']}-v{v}" in gym.envs.registry and f"{match['task']}-v{v}" not in config
        ]
        cases += [(env_id, find_earlier_version_block(env_id, list(config))) for env_id in later]
    assert cases, f"{path.name}: no registered later version without a block: nothing to compare"
    for env_id, fallback in sorted(set(cases)):
        assert fallback is not None
        argv = _prepare_train(["--algo", name, "--env", env_id], str(tmp_path))
        derived = Path(argv[argv.index("--conf-file") + 1])
        assert _zoo_read(derived, env_id, tmp_path) == _zoo_read(path, fallback, tmp_path), env_id
