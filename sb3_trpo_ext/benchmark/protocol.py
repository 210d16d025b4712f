"""Pre-registered benchmark protocols: a YAML file, committed before its sweep's first run, that fixes what runs
(environments, algorithms, budgets, seeds, evaluation), the hyperparameters each run must get, the statistics and
the claims to test. ``sb3-trpo-bench run --protocol FILE`` runs exactly that and nothing else; ``report`` says for
each run whether it matches, and turns the claims into sentences from the numbers.

File layout (see ``bench/protocol.yml``)::

    name: <str>
    evaluation: {eval_freq, eval_episodes, final_eval_episodes, save_freq, deterministic: true}
    groups:                      # one sweep folder each
      <group>: {folder, algos: [...], envs: [...], seeds: [...], n_timesteps}
    hyperparameters:             # algo -> env -> the block the Zoo must resolve (comments in the file say why)
      <algo>: {<env>: {...}}
    hyperparameter_files:        # provenance at registration: our files' git blobs, the Zoo's sha256 and version
      hyperparams/<file>: {git_blob: <git hash-object of the file>}
      rl_zoo3/hyperparams/<file>: {rl_zoo3: <version>, sha256: <hex>}
    statistics: {...}            # read by the report: score, ci, bootstrap reps/seed, decision rule
    claims:                      # each tested on the protocol's runs (its seeds) only
      - {id, better, than, envs: [...]}
    targets:                     # optional: a point estimate to reach, reported met or missed per environment
      - {id, statistic: median, algo, at_least: <another algo>, envs: [...]}

``run --protocol`` refuses to start when a registered block no longer resolves the same
(:meth:`Protocol.check_hyperparameters`), and warns when a hyperparameter file changed since the registration
although its blocks did not (:meth:`Protocol.changed_files`): the files are compared with their registered blobs,
or, for a protocol that records none, with the files at the commit that added the protocol file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "Claim",
    "Protocol",
    "ProtocolError",
    "Target",
    "block_digest",
    "git_blob",
    "load_protocol",
    "resolved_block",
]


class ProtocolError(ValueError):
    """A protocol file that is malformed, or a run that the protocol does not allow."""


@dataclass(frozen=True)
class Claim:
    """``better`` scores higher than ``than`` on ``envs`` (each separately, and aggregated when several)."""

    id: str
    better: str
    than: str
    envs: tuple[str, ...]


#: Statistics a target may compare (of the per-seed scores of one environment).
TARGET_STATISTICS = ("median",)


@dataclass(frozen=True)
class Target:
    """On each of ``envs``, ``algo``'s ``statistic`` of its seeds' scores is at least ``at_least``'s: a point
    estimate fixed with the protocol, reported met or missed whatever the claims' confidence intervals say."""

    id: str
    statistic: str
    algo: str
    at_least: str
    envs: tuple[str, ...]


@dataclass(frozen=True)
class Protocol:
    """A parsed protocol file (see the module docstring)."""

    path: Path
    sha256: str
    name: str
    evaluation: dict[str, Any]
    groups: dict[str, dict[str, Any]]
    hyperparameters: dict[str, dict[str, dict[str, Any]]]
    statistics: dict[str, Any]
    claims: tuple[Claim, ...]
    #: provenance of the hyperparameter files at registration (``hyperparameter_files``; empty when not recorded)
    hyperparameter_files: dict[str, dict[str, Any]] = field(default_factory=dict)
    targets: tuple[Target, ...] = ()

    @property
    def root(self) -> Path:
        """The repository root the protocol's relative paths start from (the parent of its ``bench/`` folder)."""
        return self.path.parent.parent

    def folder(self, group: str) -> Path:
        """The sweep folder of ``group``, relative to the protocol file's repository root (its parent's parent
        when the file sits in ``bench/``) unless absolute."""
        folder = Path(self.groups[group]["folder"])
        return folder if folder.is_absolute() else self.root / folder

    def check_hyperparameters(self) -> None:
        """Raise :class:`ProtocolError` unless every (algo, env) of every group resolves to the registered block.

        The block is what the Zoo will read for the run (our files for our keys, the Zoo's otherwise, the
        ``-vN`` fallback included), so a later edit of a hyperparameter file cannot slip into the sweep.
        """
        problems = []
        for group, spec in self.groups.items():
            for algo in spec["algos"]:
                for env in spec["envs"]:
                    registered = self.hyperparameters.get(algo, {}).get(env)
                    if registered is None:
                        problems.append(f"{group}: no registered block for {algo} on {env}")
                        continue
                    actual = resolved_block(algo, env)
                    if _canonical(actual) != _canonical(registered):
                        changed = sorted(
                            key
                            for key in set(actual) | set(registered)
                            if _canonical(actual.get(key)) != _canonical(registered.get(key))
                        )
                        problems.append(f"{group}: {algo} on {env} now resolves to another block (keys {changed})")
        if problems:
            raise ProtocolError(
                f"the hyperparameters differ from the protocol {self.path}: " + "; ".join(problems) + ". A protocol "
                "is fixed before its runs: run the sweep from the commit it was registered with, or register a new one."
            )

    def changed_files(self) -> list[str]:
        """Hyperparameter files that changed since the registration, one message each (empty: none, or nothing to
        compare with); meant as warnings, since :meth:`check_hyperparameters` decides what may run.

        A block may still resolve the same after its file changed (a comment, another block, a key order), but the
        file is no longer the registered one, and a change there could still reach the runs (an ``env_wrapper``
        or ``default`` block read otherwise, a loader that changed): ``run --protocol`` says so. Our files are
        compared by git blob (``git hash-object``), with ``hyperparameter_files``' blobs or, when the protocol
        records none, with the files of our algorithms at the commit that added the protocol file (when it is
        tracked in a git checkout); the Zoo's files by sha256 and the Zoo's version.
        """
        registered = self.hyperparameter_files or self._blobs_at_registration_commit()
        messages = []
        for name, record in registered.items():
            path = self._file_of(name)
            if not path.is_file():
                messages.append(f"{name}: registered, but there is no file {path} now")
            elif "git_blob" in record and git_blob(path) != record["git_blob"]:
                where = f"at its registration commit {record['commit'][:12]}" if "commit" in record else "registered"
                messages.append(
                    f"{name} changed since the protocol's registration (git blob {record['git_blob']} {where}, "
                    f"{git_blob(path)} now in {path}), although the blocks it registered still resolve the same"
                )
            elif "sha256" in record and hashlib.sha256(path.read_bytes()).hexdigest() != record["sha256"]:
                messages.append(
                    f"{name} changed since the protocol's registration (sha256 {record['sha256']} registered with "
                    f"rl_zoo3 {record.get('rl_zoo3', '?')}, {hashlib.sha256(path.read_bytes()).hexdigest()} now in "
                    f"{path} with rl_zoo3 {_zoo_version()}), although the blocks it registered still resolve the same"
                )
        return messages

    def _file_of(self, name: str) -> Path:
        """The file a registered name stands for now: the one the runs will read (ours: :func:`hyperparams_path`
        of the algorithm it belongs to; the Zoo's: in the installed rl_zoo3), else the protocol's repository's."""
        from sb3_trpo_ext.zoo.config import hyperparams_path
        from sb3_trpo_ext.zoo.registry import ZOO_ALGORITHMS

        relative = Path(name)
        if relative.parts[:1] == ("hyperparams",):
            for algo, spec in ZOO_ALGORITHMS.items():
                if spec.hyperparams_file == relative.name:
                    return hyperparams_path(algo)
        if relative.parts[:1] == ("rl_zoo3",):
            import rl_zoo3

            return Path(rl_zoo3.__file__).parent.parent / relative
        return self.root / relative

    def _blobs_at_registration_commit(self) -> dict[str, dict[str, Any]]:
        """For a protocol that records no blobs: the blobs of our algorithms' files at the commit that added the
        protocol file (its registration), ``{}`` when that cannot be told (not tracked, no git)."""
        from sb3_trpo_ext.benchmark.zoo_train import git_output
        from sb3_trpo_ext.zoo.registry import ZOO_ALGORITHMS

        added = git_output(self.path.parent, "log", "--diff-filter=A", "--format=%H", "--", self.path.name)
        if not added:
            return {}
        commit = added.splitlines()[-1]  # the first commit that added it (log lists the newest first)
        algos = {algo for group in self.groups.values() for algo in group["algos"]}
        files = {}
        for algo in sorted(algos & set(ZOO_ALGORITHMS)):
            name = f"hyperparams/{ZOO_ALGORITHMS[algo].hyperparams_file}"
            blob = git_output(self.root, "rev-parse", f"{commit}:./{name}")
            if blob:
                files[name] = {"git_blob": blob, "commit": commit}
        return files


def git_blob(path: Path) -> str:
    """The git blob id of a file's bytes (``git hash-object FILE`` without filters), git not needed."""
    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _zoo_version() -> str:
    from importlib.metadata import version

    return version("rl_zoo3")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def block_digest(block: dict[str, Any]) -> str:
    """sha256 of a hyperparameter block's canonical JSON (recorded with every run)."""
    return hashlib.sha256(_canonical(block).encode()).hexdigest()


def resolved_block(algo: str, env: str) -> dict[str, Any]:
    """The hyperparameter block the Zoo will read for ``algo`` on ``env`` (the same file and block as
    ``python -m sb3_trpo_ext.zoo train`` without ``--conf-file``), or ``{}`` without one."""
    from rl_zoo3.exp_manager import ExperimentManager

    from sb3_trpo_ext.zoo.config import (
        _select_block,
        _zoo_hyperparams_path,
        find_earlier_version_block,
        hyperparams_path,
    )
    from sb3_trpo_ext.zoo.registry import ZOO_ALGORITHMS

    path = hyperparams_path(algo) if algo in ZOO_ALGORITHMS else _zoo_hyperparams_path(algo)
    if not path.is_file():
        return {}
    config = yaml.safe_load(path.read_text()) or {}
    fallback = find_earlier_version_block(env, list(config))
    if fallback is not None:
        config[env] = config[fallback]
    block = _select_block(config, env, ExperimentManager.is_atari(env))
    return dict(config[block]) if block is not None else {}


def _require(condition: bool, path: Path, message: str) -> None:
    if not condition:
        raise ProtocolError(f"{path}: {message}")


def load_protocol(path: Path | str) -> Protocol:
    """Read and check a protocol file.

    :raises ProtocolError: a missing or malformed field, naming it
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise ProtocolError(f"no protocol file {path}")
    raw = path.read_bytes()
    data = yaml.safe_load(raw)
    _require(isinstance(data, dict), path, "not a YAML mapping")
    for key in ("name", "evaluation", "groups", "hyperparameters", "statistics", "claims"):
        _require(key in data, path, f"the field {key!r} is missing")
    evaluation = data["evaluation"]
    for key in ("eval_freq", "eval_episodes", "final_eval_episodes", "save_freq"):
        value = evaluation.get(key)
        _require(isinstance(value, int) and value > 0, path, f"evaluation.{key} must be a positive integer")
    _require(evaluation.get("deterministic") is True, path, "evaluation.deterministic must be true (the Zoo's)")
    groups = data["groups"]
    _require(isinstance(groups, dict) and bool(groups), path, "groups must be a non-empty mapping")
    for name, group in groups.items():
        for key in ("folder", "algos", "envs", "seeds", "n_timesteps"):
            _require(key in group, path, f"groups.{name}.{key} is missing")
        _require(isinstance(group["n_timesteps"], int) and group["n_timesteps"] > 0, path, f"groups.{name}.n_timesteps")
    pairs = {(algo, env) for group in groups.values() for algo in group["algos"] for env in group["envs"]}
    claims = []
    for index, claim in enumerate(data["claims"]):
        for key in ("id", "better", "than", "envs"):
            _require(key in claim, path, f"claims[{index}].{key} is missing")
        for algo in (claim["better"], claim["than"]):
            for env in claim["envs"]:
                _require((algo, env) in pairs, path, f"claims[{index}]: no group runs {algo} on {env}")
        claims.append(Claim(claim["id"], claim["better"], claim["than"], tuple(claim["envs"])))
    targets = []
    for index, target in enumerate(data.get("targets") or []):
        for key in ("id", "statistic", "algo", "at_least", "envs"):
            _require(key in target, path, f"targets[{index}].{key} is missing")
        _require(
            target["statistic"] in TARGET_STATISTICS,
            path,
            f"targets[{index}].statistic is {target['statistic']!r}; allowed: {', '.join(TARGET_STATISTICS)}",
        )
        for algo in (target["algo"], target["at_least"]):
            for env in target["envs"]:
                _require((algo, env) in pairs, path, f"targets[{index}]: no group runs {algo} on {env}")
        targets.append(
            Target(target["id"], target["statistic"], target["algo"], target["at_least"], tuple(target["envs"]))
        )
    return Protocol(
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
        name=str(data["name"]),
        evaluation=dict(evaluation),
        groups={name: dict(group) for name, group in groups.items()},
        hyperparameters=data["hyperparameters"],
        statistics=dict(data["statistics"]),
        claims=tuple(claims),
        hyperparameter_files=dict(data.get("hyperparameter_files") or {}),
        targets=tuple(targets),
    )
