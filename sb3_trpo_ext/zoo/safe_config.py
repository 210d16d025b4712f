"""Reading a Zoo run folder's settings without running code from it: ``config.yml`` / ``args.yml``, the
``normalize`` setting and the wrapper names.

The Zoo reads these with ``yaml.UnsafeLoader`` (any ``!!python/object`` tag runs), ``eval(normalize)`` and
``importlib`` on whatever wrapper module the file names. Here the YAML goes through :class:`ZooYamlLoader` (a
safe YAML loader with only the tags genuine files carry, ``!!python/name:`` limited to the checkpoint
allowlist), ``normalize`` is parsed as a literal (:func:`parse_normalize`) and wrapper names come only from
:data:`WRAPPER_MODULES` (:func:`check_wrapper_names`); :func:`read_saved_hyperparams` is the Zoo's
``get_saved_hyperparams`` built from them. Checkpoints themselves (the model, ``vecnormalize.pkl``) are
:mod:`sb3_trpo_ext.safe_load`'s, which this module builds on and which does not import the Zoo.
"""

from __future__ import annotations

import ast
import importlib
import os
import pathlib
import re
from collections.abc import Iterable
from typing import Any

import yaml

from sb3_trpo_ext.safe_load import WAYS_OUT, UnsafeCheckpointError, get_safe_globals

__all__ = [
    "WRAPPER_MODULES",
    "ZooYamlLoader",
    "check_wrapper_names",
    "parse_normalize",
    "read_saved_hyperparams",
    "safe_yaml_load",
]

#: Modules whose classes a Zoo ``config.yml`` may name as ``env_wrapper`` / ``vec_env_wrapper`` (exact
#: module names: a wrapper is found as an attribute of one of them, nothing else is imported).
WRAPPER_MODULES: tuple[str, ...] = (
    "gymnasium.wrappers",
    "stable_baselines3.common.atari_wrappers",
    "stable_baselines3.common.monitor",
    "stable_baselines3.common.vec_env",
    "sb3_contrib.common.wrappers",
    "rl_zoo3.wrappers",
    "sb3_trpo_ext.maskable.wrappers",
)


class ZooYamlLoader(yaml.SafeLoader):
    """Safe YAML loader for the Zoo's ``config.yml`` / ``args.yml``: YAML's safe types plus the tags genuine
    files carry: ``!!python/object/apply:collections.OrderedDict`` (read as a dict), ``!!python/tuple``,
    and ``!!python/name:`` for names on the allowlist (a Python ``--conf-file`` can put an activation class
    into ``policy_kwargs``). Any other tag fails as in ``yaml.safe_load``."""


def _construct_ordered_dict(loader: yaml.SafeLoader, node: yaml.Node) -> dict[Any, Any]:
    return dict(loader.construct_sequence(node, deep=True)[0])


def _construct_tuple(loader: yaml.SafeLoader, node: yaml.Node) -> tuple[Any, ...]:
    return tuple(loader.construct_sequence(node, deep=True))


def _construct_name(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    module, _, name = suffix.rpartition(".")
    if (module, name) not in get_safe_globals():
        raise yaml.constructor.ConstructorError(
            None, None, f"refused !!python/name:{suffix}: not on sb3_trpo_ext's allowlist. {WAYS_OUT}", node.start_mark
        )
    return getattr(importlib.import_module(module), name)


ZooYamlLoader.add_constructor("tag:yaml.org,2002:python/object/apply:collections.OrderedDict", _construct_ordered_dict)
ZooYamlLoader.add_constructor("tag:yaml.org,2002:python/tuple", _construct_tuple)
ZooYamlLoader.add_multi_constructor("tag:yaml.org,2002:python/name:", _construct_name)


def safe_yaml_load(path: str | os.PathLike[str], *, trusted: bool = False) -> Any:
    """Read a Zoo YAML file with :class:`ZooYamlLoader` (``yaml.UnsafeLoader``, as the Zoo does, if trusted).

    :param path: the file
    :param trusted: the Zoo's own unsafe loader (only for files you vouch for)
    :return: the parsed document
    :raises UnsafeCheckpointError: for a tag the safe loader does not admit, naming the file and the tag
    """
    text = pathlib.Path(path).read_text()
    if trusted:
        return yaml.load(text, Loader=yaml.UnsafeLoader)  # noqa: S506 - the user vouched for the file
    try:
        return yaml.load(text, Loader=ZooYamlLoader)  # noqa: S506 - a safe loader
    except yaml.constructor.ConstructorError as error:
        tag = re.search(r"tag '([^']+)'|(!!python/name:[\w.]+)", str(error))
        raise UnsafeCheckpointError(
            os.fspath(path),
            (tag.group(1) or tag.group(2)) if tag else "a YAML tag",
            f"Refused to read {os.fspath(path)!r}: {error}. Nothing from the file was executed. If you trust the "
            "file, pass trusted=True.",
        ) from error


def _literal(node: ast.AST) -> Any:
    """A literal, or ``dict(key=literal, ...)`` (how the Zoo's files write ``normalize``), never evaluated."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        if any(keyword.arg is None for keyword in node.keywords):
            raise ValueError("dict(**...) is not a literal")
        return {keyword.arg: _literal(keyword.value) for keyword in node.keywords}
    return ast.literal_eval(node)


def parse_normalize(value: Any) -> Any:
    """The Zoo's ``normalize`` setting without ``eval``: a bool, a dict, or a string holding a dict literal
    (``"{'norm_obs': True}"`` or ``"dict(norm_obs=True, norm_reward=False)"``).

    :param value: the saved setting
    :return: the parsed value
    :raises ValueError: if the string is anything but such a literal
    """
    if not isinstance(value, str):
        return value
    try:
        parsed = _literal(ast.parse(value.strip(), mode="eval").body)
    except (SyntaxError, ValueError) as error:
        raise ValueError(f"normalize={value!r} is not a literal (it is never evaluated): {error}") from error
    if not isinstance(parsed, (bool, dict)):
        raise ValueError(f"normalize={value!r} must be a bool or a dict of VecNormalize arguments")
    return parsed


def check_wrapper_names(hyperparams: dict[str, Any], keys: Iterable[str] = ("env_wrapper", "vec_env_wrapper")) -> None:
    """Refuse wrapper names outside :data:`WRAPPER_MODULES` before the Zoo imports them.

    :param hyperparams: the saved hyperparameters (``config.yml``)
    :param keys: the entries naming wrapper classes
    :raises UnsafeCheckpointError: naming the entry and the wrapper
    """
    for key in keys:
        entries = hyperparams.get(key)
        if entries is None:
            continue
        for entry in entries if isinstance(entries, list) else [entries]:
            name = next(iter(entry)) if isinstance(entry, dict) and len(entry) == 1 else entry
            if isinstance(name, type):
                continue  # a class the loader admitted (allowlisted)
            module, _, attribute = str(name).rpartition(".")
            allowed = module in WRAPPER_MODULES and isinstance(
                getattr(importlib.import_module(module), attribute, None), type
            )
            if not allowed:
                raise UnsafeCheckpointError(
                    key,
                    str(name),
                    f"Refused {key}={name!r}: wrappers are taken only from the reviewed modules {list(WRAPPER_MODULES)} "
                    "(importing another module could run code). If you trust the run folder, pass trusted=True.",
                )


def read_saved_hyperparams(
    stats_path: str | os.PathLike[str], norm_reward: bool = False, test_mode: bool = False, *, trusted: bool = False
) -> tuple[dict[str, Any], str | None]:
    """rl_zoo3's ``get_saved_hyperparams`` (same arguments and result) without running code from the folder:
    ``config.yml`` through :func:`safe_yaml_load`, ``normalize`` through :func:`parse_normalize`, wrapper
    names checked by :func:`check_wrapper_names`.

    :param stats_path: the run's ``<env>`` sub-folder
    :param norm_reward: as in the Zoo (test mode: whether to normalize rewards)
    :param test_mode: as in the Zoo
    :param trusted: the Zoo's own function (only for folders you vouch for)
    :return: the hyperparameters and the stats path (None if the folder does not exist)
    """
    if trusted:
        from rl_zoo3.utils import get_saved_hyperparams

        return get_saved_hyperparams(os.fspath(stats_path), norm_reward=norm_reward, test_mode=test_mode)
    folder = pathlib.Path(stats_path)
    if not folder.is_dir():
        return {}, None
    config_file = folder / "config.yml"
    hyperparams: dict[str, Any] = {}
    if config_file.is_file():
        hyperparams = dict(safe_yaml_load(config_file) or {})
        hyperparams["normalize"] = hyperparams.get("normalize", False)
    else:
        hyperparams["normalize"] = (folder / "obs_rms.pkl").is_file()
    check_wrapper_names(hyperparams)
    normalize = parse_normalize(hyperparams["normalize"])
    if normalize:
        if isinstance(normalize, dict):
            normalize_kwargs = dict(normalize)
            if test_mode and isinstance(hyperparams["normalize"], str):  # the Zoo's rule for a string setting
                normalize_kwargs["norm_reward"] = norm_reward
        else:
            normalize_kwargs = {"norm_obs": normalize, "norm_reward": norm_reward}
        hyperparams["normalize_kwargs"] = normalize_kwargs
    return hyperparams, os.fspath(stats_path)
