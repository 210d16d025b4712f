"""Command line: ``python -m sb3_trpo_ext.zoo COMMAND [ZOO FLAGS ...]`` (console script ``sb3-trpo-zoo``)."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import runpy
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

from sb3_trpo_ext.zoo.config import ZooConfigError, _algo_env_flags, _prepare_train
from sb3_trpo_ext.zoo.hub_compat import _hub_compat
from sb3_trpo_ext.zoo.loading import safe_zoo_scripts
from sb3_trpo_ext.zoo.masking import masked_evaluation, masked_play
from sb3_trpo_ext.zoo.optimize import DEFAULT_TRIAL_SEEDS, seeded_trials, trial_seeds_flag
from sb3_trpo_ext.zoo.registry import ZOO_ALGORITHMS, register
from sb3_trpo_ext.zoo.torchrun import torchrun_rank
from sb3_trpo_ext.zoo.vine_env import vine_branch_wrapper

__all__ = ["COMMANDS", "PROG", "main"]

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


def _usage() -> str:
    return f"""usage: {PROG} COMMAND [ZOO FLAGS ...]

Runs the RL Baselines3 Zoo's scripts with {", ".join(ZOO_ALGORITHMS)} added to its algorithms
and our hyperparameters used by default for them. Every flag is the Zoo's (`{PROG} COMMAND -h`).

commands:
  {", ".join(COMMANDS)}

examples:
  {PROG} train --algo trpo_ext --env Hopper-v5 -f logs/
  {PROG} train --algo ppo --env Hopper-v5 -f logs/
  {PROG} enjoy --algo trpo_ext --env Hopper-v5 -f logs/
  {PROG} plot_train --algo trpo_ext --env Hopper-v5 -f logs/

train -optimize trains every trial once per seed of --trial-seeds (ours; default {" ".join(map(str, DEFAULT_TRIAL_SEEDS))}
for our keys, the Zoo's unseeded single run for its keys) and scores the mean.

Under torchrun, train runs data-parallel (our TRPO keys; -optimize and -P refused): rank 0 writes the one run
folder, --eval-freq and --save-freq count every rank's steps (torchrun --nproc_per_node 2 -m sb3_trpo_ext.zoo train ...).

enjoy, record_video, push_to_hub and train -i load a run folder without running code from it (model,
vecnormalize.pkl, replay_buffer.pkl, config.yml, args.yml); add --trusted (ours) to read a folder you vouch
for as the Zoo does.
"""


#: Zoo scripts that load a run folder: run inside :func:`safe_zoo_scripts` (``--trusted``, ours, turns it off).
_LOADING_SCRIPTS = frozenset({"rl_zoo3.train", "rl_zoo3.enjoy", "rl_zoo3.record_video", "rl_zoo3.push_to_hub"})


def _run_script(module: str, argv: list[str]) -> None:
    """Run a Zoo script as ``__main__`` with ``argv`` as its command line; the scripts that load a model do so
    without running code from the run folder unless ``--trusted`` is given."""
    trusted = module in _LOADING_SCRIPTS and "--trusted" in argv
    if trusted:
        argv = [arg for arg in argv if arg != "--trusted"]
    saved_argv = sys.argv
    sys.argv = [module, *argv]
    try:
        with warnings.catch_warnings(), safe_zoo_scripts(trusted or module not in _LOADING_SCRIPTS):
            # rl_zoo3.plots' __init__ imports its scripts, so runpy warns that the module is already loaded.
            warnings.filterwarnings("ignore", message=".*found in sys.modules after import", category=RuntimeWarning)
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        sys.argv = saved_argv


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m sb3_trpo_ext.zoo COMMAND [ZOO FLAGS ...]`` (console script ``sb3-trpo-zoo``).

    :param argv: the command line without the program name (default: ``sys.argv[1:]``)
    :raises SystemExit: on a usage error (status 2), with the Zoo script's status otherwise
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        if not args:
            raise SystemExit(2)
        return
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"{PROG}: error: unknown command {command!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        raise SystemExit(2)
    register()
    with tempfile.TemporaryDirectory(prefix="sb3_trpo_zoo_") as tmpdir:
        trial_seeds = None
        if command == "train" and not {"-h", "--help"} & set(rest):
            try:
                rest, trial_seeds = _trial_seeds(rest)
                rest = _prepare_train(rest, tmpdir)
            except (ZooConfigError, ValueError) as error:
                print(f"{PROG} train: error: {error}", file=sys.stderr)
                raise SystemExit(2) from None
        if command in ("enjoy", "record_video", "push_to_hub"):
            problem = _run_folder_problem(command, rest)
            if problem is not None:
                print(f"{PROG} {command}: error: {problem}", file=sys.stderr)
                raise SystemExit(2)
        if command == "enjoy":
            rest = _headless_enjoy(rest)
        algo, env_id = _algo_env_flags(rest)
        train_only = command == "train"
        vine_envs = vine_branch_wrapper(algo) if train_only else contextlib.nullcontext()
        trials = seeded_trials(algo, trial_seeds) if train_only else contextlib.nullcontext()
        with (
            _hub_compat(algo, env_id),
            masked_evaluation(algo),
            masked_play(algo, command),
            vine_envs,
            trials,
            torchrun_rank(command, rest, tmpdir) as rank_argv,  # under torchrun: this rank's command line
        ):
            _run_script(COMMANDS[command], rank_argv)


def _trial_seeds(argv: list[str]) -> tuple[list[str], tuple[int, ...] | None]:
    """``train``'s command line without our ``--trial-seeds``, and the seeds of every Optuna trial: the flag's,
    else :data:`DEFAULT_TRIAL_SEEDS` for our keys under ``-optimize``; None (the Zoo's own objective) otherwise.

    :raises ValueError: a malformed ``--trial-seeds``, or ``--trial-seeds`` without ``-optimize``
    """
    argv, seeds = trial_seeds_flag(argv)
    optimizing = bool({"-optimize", "--optimize-hyperparameters"} & set(argv))
    if seeds is not None and not optimizing:
        raise ValueError("--trial-seeds applies to hyperparameter optimization: add -optimize")
    algo, _ = _algo_env_flags(argv)
    if optimizing and seeds is None and algo in ZOO_ALGORITHMS:
        seeds = DEFAULT_TRIAL_SEEDS
    return argv, seeds


def _has_display() -> bool:
    """Whether a window can be opened: always on macOS and Windows; on Linux and the BSDs only with an X11 or
    Wayland display (without one, MuJoCo's GLFW viewer aborts the process: ``glfwGetVideoMode`` assertion)."""
    if sys.platform == "darwin" or sys.platform.startswith(("win", "cygwin")):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _headless_enjoy(argv: list[str]) -> list[str]:
    """``enjoy``'s command line with the Zoo's ``--no-render`` added where no display can show the episodes
    (one line on stderr says so). ``MUJOCO_GL=egl`` does not help here: ``enjoy`` renders to a window."""
    if "--no-render" in argv or {"-h", "--help"} & set(argv) or _has_display():
        return argv
    print(
        f"{PROG} enjoy: no display (DISPLAY and WAYLAND_DISPLAY unset): running with --no-render; "
        "watch on a machine with a display, or record offscreen with MUJOCO_GL=egl ... record_video",
        file=sys.stderr,
    )
    return [*argv, "--no-render"]


def _run_folder_problem(command: str, argv: list[str]) -> str | None:
    """Why ``enjoy``/``record_video``/``push_to_hub`` would not find the run folder or model of ``argv``, in one
    line naming what is missing and what is there; None if the Zoo finds it (or decides itself: ``-h``, malformed
    flags, and ``enjoy``'s default ``rl-trained-agents`` folder, which it downloads from the hub)."""
    from rl_zoo3.utils import ALGOS, get_model_path

    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("-f", "--folder", default="rl-trained-agents")
    parser.add_argument("--algo", default="ppo")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--exp-id", default="0")
    parser.add_argument("--load-best", action="store_true")
    parser.add_argument("--load-checkpoint", default=None)
    parser.add_argument("--load-last-checkpoint", action="store_true")
    try:
        known, _ = parser.parse_known_args(argv)
        exp_id = int(known.exp_id)
    except (SystemExit, ValueError):  # a flag without its value, a non-integer id: the Zoo's parser says so
        return None
    if {"-h", "--help"} & set(argv) or known.algo not in ALGOS:  # the Zoo's parser lists the keys
        return None
    if command == "enjoy" and "rl-trained-agents" in known.folder:
        return None
    from huggingface_sb3 import EnvironmentName

    env_name = EnvironmentName(known.env)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints the run id it picks
            get_model_path(
                exp_id, known.folder, known.algo, env_name, known.load_best, known.load_checkpoint,
                known.load_last_checkpoint,
            )  # fmt: skip
    except ValueError as error:  # "No model found for ..." / "No checkpoint found for ...": the folder exists
        reason: str | None = str(error)
    except AssertionError:  # "The {log_path} folder was not found"
        reason = None
    else:
        return None
    folder = Path(known.folder)
    if not folder.is_dir():
        return f"the log folder {str(folder)!r} (-f) does not exist"
    algo_folder = folder / known.algo
    if not algo_folder.is_dir():
        algos = sorted(path.name for path in folder.iterdir() if path.is_dir())
        return f"no {known.algo} runs in {str(folder)!r} (-f): it has {', '.join(algos) or 'no run folders'}"
    runs = sorted(path.name for path in algo_folder.iterdir() if path.is_dir())
    ours = [name for name in runs if name.rpartition("_")[0] == env_name and name.rpartition("_")[2].isdigit()]
    if not ours and exp_id >= 0:
        return f"no run of {known.algo} on {env_name} in {str(algo_folder)!r}; it has {', '.join(runs) or 'none'}"
    listing = f"the runs of {known.algo} on {env_name} there: {', '.join(ours) or 'none'}"
    if reason is None:  # --exp-id names a run folder that is not there
        reason = f"no run folder {str(algo_folder / f'{env_name}_{exp_id}')!r}"
    return f"{reason}; {listing} (--exp-id N picks one)"
