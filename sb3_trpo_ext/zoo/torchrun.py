"""``train`` under ``torchrun``: the ranks of one data-parallel job that leaves one run folder (docs/zoo.md, "Under
torchrun").

The Zoo is not rank-aware: run N times, it would pick N run ids (racing for the folders), write N sets of Monitor
files, configs and models, and its callbacks' frequencies would count one rank's steps. Nothing of the Zoo is
patched here: each rank's command line is rewritten before the Zoo parses it (:func:`data_parallel_argv`).

- The entry point joins the process group first (:func:`sb3_trpo_ext.distributed.ranks.join`, ``env://``, a
  :data:`JOIN_TIMEOUT` second collective timeout); the training's own join finds the group initialised.
- Every rank trains with rank 0's ``--seed`` (drawn there, as the Zoo draws it, when not given): the model's
  settings must agree across ranks, and each rank derives its own environment seeds from it.
- Rank 0 runs the Zoo on the user's folders, with ``--eval-freq`` and ``--save-freq`` divided by the world size:
  the Zoo divides them by ``n_envs`` and its callbacks count rank 0's steps (``n_calls``), each of which is
  ``world_size * n_envs`` global steps, so evaluations and checkpoints come every ``eval_freq`` / ``save_freq``
  global steps (rounded down to a multiple of ``world_size * n_envs``, at least one step).
- Every other rank runs the Zoo on a private temporary folder (``-f``, deleted at exit; no ``-tb``, no ``--track``,
  no evaluation or checkpoint callback: the training drops other ranks' callbacks anyway, and ``model.save`` does
  nothing there), so it writes nothing under the user's folders and picks no run id there.

Refused under ``torchrun`` (:func:`torchrun_problem`), before joining: commands other than ``train``,
``-optimize``, algorithms that are not data-parallel (any class but :class:`sb3_trpo_ext.TRPO` and its
subclasses), ``-P`` (the Zoo's progress bar counts one rank's steps), and abbreviations of the flags rewritten here
(the Zoo's parser would read them, this module could not).

Outside ``torchrun`` (``WORLD_SIZE`` unset or 1, no initialised process group) :func:`torchrun_rank` hands the
command line back untouched and nothing else happens.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType

import numpy as np
import torch.distributed as dist

from sb3_trpo_ext.distributed.ranks import Ranks, join
from sb3_trpo_ext.trpo import TRPO

__all__ = [
    "JOIN_TIMEOUT",
    "data_parallel_argv",
    "data_parallel_keys",
    "per_rank_frequency",
    "torchrun_problem",
    "torchrun_rank",
    "under_torchrun",
]

#: seconds: the collective timeout of the process group the entry point initialises (the training's
#: ``distributed_timeout`` still bounds its meetings)
JOIN_TIMEOUT = 300.0

#: the Zoo ``train`` flags read or rewritten here, spelled as rl_zoo3's ``train.py`` spells them (pinned by
#: ``tests/integration/test_zoo_distributed.py``): ``--``-flags, and single-dash ones
_LONG_FLAGS = (
    "--algo",
    "--optimize-hyperparameters",
    "--progress",
    "--seed",
    "--eval-freq",
    "--save-freq",
    "--log-folder",
    "--tensorboard-log",
    "--track",
)
_SHORT_FLAGS = ("-optimize", "-P", "-f", "-tb")
_REFUSED_FLAGS = frozenset({"-optimize", "--optimize-hyperparameters", "-P", "--progress"})


def under_torchrun() -> bool:
    """Whether this process is one rank of a job: ``WORLD_SIZE > 1`` (torchrun sets it for every worker), or a
    process group of more than one rank already initialised."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return True
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _parser() -> argparse.ArgumentParser:
    """The Zoo ``train`` flags read here, with the Zoo's defaults (exact spellings only: see :func:`_unspelled`)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    parser.add_argument("--algo", default="ppo")
    parser.add_argument("-optimize", "--optimize-hyperparameters", action="store_true", default=False)
    parser.add_argument("-P", "--progress", action="store_true", default=False)
    parser.add_argument("--seed", type=int, default=-1)
    parser.add_argument("--eval-freq", type=int, default=25000)
    parser.add_argument("--save-freq", type=int, default=-1)
    parser.add_argument("-f", "--log-folder", default="logs")
    parser.add_argument("-tb", "--tensorboard-log", default="")
    parser.add_argument("--track", action="store_true", default=False)
    return parser


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    """The flags of :func:`_parser` in ``argv``.

    :raises ValueError: a malformed value of one of them (``--seed x``, ``--eval-freq`` without its value)
    """
    try:
        known, _ = _parser().parse_known_args(list(argv))
    except argparse.ArgumentError as error:
        raise ValueError(str(error)) from None
    return known


def _unspelled(argv: Sequence[str]) -> tuple[str, list[str]] | None:
    """The first token that the Zoo's parser (``allow_abbrev``) may read as one of the flags of :func:`_parser`
    without spelling it (``--eval-f 10``, ``--se 3``, ``-opt``, ``-flogs``), with the flags it may stand for."""
    for token in argv:
        name = token.split("=", 1)[0]
        if len(name) < 2 or not name.startswith("-") or name == "--" or name in _LONG_FLAGS + _SHORT_FLAGS:
            continue
        if name.startswith("--"):
            hits = [flag for flag in _LONG_FLAGS if flag.startswith(name)]
        else:  # "-opt" abbreviates -optimize; "-flogs" is -f with its value attached
            hits = [flag for flag in _SHORT_FLAGS if len(flag) > 2 and flag.startswith(name)]
            hits += [flag for flag in _SHORT_FLAGS if len(flag) == 2 and name.startswith(flag)]
        if hits:
            return token, hits
    return None


def data_parallel_keys() -> list[str]:
    """The Zoo keys whose algorithm trains data-parallel under ``torchrun``: :class:`sb3_trpo_ext.TRPO` and its
    subclasses (``trpo_ext``, ``trpo_vine``, ``trpo_mask``, ``trpo_lstm``)."""
    from rl_zoo3.utils import ALGOS

    return sorted(key for key, cls in ALGOS.items() if isinstance(cls, type) and issubclass(cls, TRPO))


def torchrun_problem(command: str, argv: Sequence[str]) -> str | None:
    """Why ``command argv`` cannot run as the ranks of a ``torchrun`` job, in one line; None where it can.

    Pure: it reads the command line only (and the Zoo's algorithm table), so every rank refuses alike, before any
    rank joins the job.
    """
    if command != "train":
        return (
            f"{command} does not run under torchrun: only train is data-parallel; run "
            f"`python -m sb3_trpo_ext.zoo {command} ...` in one process"
        )
    unspelled = _unspelled(argv)
    if unspelled is not None:
        token, flags = unspelled
        if len(flags) > 1 or flags[0] not in _REFUSED_FLAGS:
            spelled = " or ".join(flags)
            return (
                f"{token!r}: write {spelled} in full under torchrun (each rank's command line is rewritten, and "
                "an abbreviated or attached flag would escape the rewriting)"
            )
        argv = [flags[0]]  # an abbreviation of a refused flag: refused as that flag
    try:
        known = _parse(argv)
    except ValueError as error:
        return str(error)
    if known.optimize_hyperparameters:
        return (
            "-optimize (hyperparameter search) is refused under torchrun: trials are not data-parallel; run the "
            "search in one process, then train the chosen configuration under torchrun (--storage ... "
            "--study-name ... --trial-id N)"
        )
    allowed = data_parallel_keys()
    if known.algo not in allowed:
        return (
            f"--algo {known.algo} is refused under torchrun: its algorithm does not train data-parallel (only "
            f"sb3_trpo_ext.TRPO and its subclasses do); allowed: {', '.join(allowed)}"
        )
    if known.progress:
        return (
            "-P/--progress is refused under torchrun: the Zoo's progress bar counts rank 0's steps against the "
            "job's global budget (it would stop at 1/world_size); follow rank 0's logs (time/total_timesteps)"
        )
    return None


def per_rank_frequency(frequency: int, world_size: int) -> int:
    """The ``--eval-freq`` / ``--save-freq`` rank 0's Zoo is given for one every ``frequency`` global steps: the
    Zoo divides it by ``n_envs`` and counts rank 0's steps (``world_size * n_envs`` global steps each); off
    (``<= 0``) stays off, and a positive one stays at least 1."""
    return max(frequency // world_size, 1) if frequency > 0 else frequency


def data_parallel_argv(argv: Sequence[str], rank: int, world_size: int, seed: int, private_folder: str) -> list[str]:
    """Rank ``rank``'s ``train`` command line (``argv`` passed :func:`torchrun_problem`): the flags it needs are
    appended (argparse keeps a flag's last value).

    Rank 0: ``--seed seed``, and ``--eval-freq`` / ``--save-freq`` for global steps (:func:`per_rank_frequency`).
    Other ranks: ``--seed seed``, ``-f private_folder``, no TensorBoard folder, no ``--track``, no evaluation and no
    checkpoints (rank 0 alone runs callbacks and saves).
    """
    known = _parse(argv)
    if rank == 0:
        return [
            *argv,
            "--seed", str(seed),
            "--eval-freq", str(per_rank_frequency(known.eval_freq, world_size)),
            "--save-freq", str(per_rank_frequency(known.save_freq, world_size)),
        ]  # fmt: skip
    return [
        *(token for token in argv if token != "--track"),
        "--seed", str(seed),
        "--log-folder", private_folder,
        "--tensorboard-log", "",
        "--eval-freq", "-1",
        "--save-freq", "-1",
    ]  # fmt: skip


def _shared_seed(requested: int, ranks: Ranks) -> int:
    """Rank 0's ``--seed``, drawn there as the Zoo draws it when none was given (negative), on every rank."""
    seed = requested
    if ranks.is_main and seed < 0:
        seed = np.random.randint(2**32 - 1, dtype="int64").item()
    return ranks.broadcast_seed(seed)


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """SIGTERM (torchrun's signal to the other ranks when one fails) exits through ``SystemExit``, so that the
    ``finally`` blocks run: the private folder is deleted, the patches are put back. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@contextlib.contextmanager
def torchrun_rank(command: str, argv: list[str], tmpdir: str) -> Iterator[list[str]]:
    """This rank's command line for the Zoo script (``argv`` itself outside ``torchrun`` and for ``-h``).

    Under ``torchrun``: refuses what cannot run (:func:`torchrun_problem`: a message on stderr, ``SystemExit(2)``),
    joins the job, shares rank 0's seed and rewrites the command line (:func:`data_parallel_argv`; other ranks'
    folder is ``tmpdir/rank{r}``: ``tmpdir`` is the command's temporary folder, deleted at exit). The process group
    is destroyed on the way out if it was initialised here.

    :raises SystemExit: status 2 for a refused command line
    """
    if not under_torchrun() or {"-h", "--help"} & set(argv):
        yield argv
        return
    from sb3_trpo_ext.zoo.cli import PROG  # cli imports this module

    problem = torchrun_problem(command, argv)
    if problem is not None:
        print(f"{PROG} {command}: error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    with _terminate_as_exit():
        created = not dist.is_initialized()
        ranks = join(JOIN_TIMEOUT, monitored=False)  # the model's own join starts the heartbeat its meetings read
        if ranks is None:
            raise RuntimeError("torchrun started this process, but torch.distributed is not available in this torch")
        try:
            known = _parse(argv)
            seed = _shared_seed(known.seed, ranks)
            private = str(Path(tmpdir) / f"rank{ranks.rank}")
            rank_argv = data_parallel_argv(argv, ranks.rank, ranks.world_size, seed, private)
            if ranks.rank == 0:
                note = f"rank 0 of {ranks.world_size} writes the run under {known.log_folder}"
                for flag, value in (("--eval-freq", known.eval_freq), ("--save-freq", known.save_freq)):
                    if value > 0:
                        given = per_rank_frequency(value, ranks.world_size)
                        note += (
                            f"; {flag} {value} counts global steps (rank 0's Zoo, counting its own, is given {given})"
                        )
            else:
                note = (
                    f"rank {ranks.rank} of {ranks.world_size} writes nothing under {known.log_folder} (its Zoo "
                    f"files go to {private}, deleted at exit)"
                )
            print(f"[sb3_trpo_ext.zoo] torchrun: {note}; seed {seed} on every rank", flush=True)
            yield rank_argv
        finally:
            if created and dist.is_initialized():
                dist.destroy_process_group()
