"""The Zoo under ``torchrun`` (sb3_trpo_ext/zoo/torchrun.py, docs/zoo.md "Under torchrun"): one job, one run folder.

Two gloo ranks on 127.0.0.1 train CartPole through ``python -m sb3_trpo_ext.zoo train`` (one launch, ~15 s on 2
cores); the command-line rewriting and the refusals are checked without launching ranks, the rewritten lines
through the Zoo's own parser; and the Zoo lines the rewriting relies on are pinned.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import os
import socket
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

pytest.importorskip("rl_zoo3")

from sb3_trpo_ext import TRPO  # noqa: E402
from sb3_trpo_ext.zoo import main, register  # noqa: E402
from sb3_trpo_ext.zoo import torchrun as zoo_torchrun  # noqa: E402
from sb3_trpo_ext.zoo.torchrun import (  # noqa: E402
    data_parallel_argv,
    data_parallel_keys,
    per_rank_frequency,
    torchrun_problem,
    torchrun_rank,
)

ROOT = Path(__file__).resolve().parents[2]
BASE = ["--algo", "trpo_ext", "--env", "CartPole-v1"]
#: the job's log folder, TMPDIR, working folder and torchrun's result
Job = tuple[Path, Path, Path, "subprocess.CompletedProcess[str]"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ------------------------------------------------------------------------------------------ two ranks
@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Job:
    """One torchrun job of 2 ranks x 2 environments: 4096 global steps in rollouts of 256 steps per environment
    (1024 global steps each), evaluation and checkpoints every 2048 global steps; its own TMPDIR and working
    folder, so that what any rank leaves behind is seen."""
    base = tmp_path_factory.mktemp("zoo_torchrun")
    logs, tmp, cwd = base / "logs", base / "tmp", base / "cwd"
    tmp.mkdir()
    cwd.mkdir()
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "MASTER_ADDR": "127.0.0.1",
        "GLOO_SOCKET_IFNAME": "lo",
        "OMP_NUM_THREADS": "1",
        "TMPDIR": str(tmp),
    }
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT"):
        env.pop(name, None)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--master-addr", "127.0.0.1",
        "-m", "sb3_trpo_ext.zoo", "train", *BASE, "-f", str(logs), "-n", "4096", "--eval-freq", "2048",
        "--save-freq", "2048", "--eval-episodes", "2", "--seed", "0", "--num-threads", "1",
        "--hyperparams", "n_steps:256",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    return logs, tmp, cwd, result


def test_two_ranks_leave_one_run_folder_with_rank_0s_files(job: Job) -> None:
    logs, tmp, cwd, result = job
    assert [path.name for path in (logs / "trpo_ext").iterdir()] == ["CartPole-v1_1"]  # one run id: no race
    run = logs / "trpo_ext" / "CartPole-v1_1"
    # one set of Monitor files: rank 0's two environments, holding rank 0's steps (half the job's)
    monitors = sorted(path.name for path in run.glob("*.monitor.csv"))
    assert monitors == ["0.monitor.csv", "1.monitor.csv"]
    steps = 0
    for name in monitors:
        rows = (run / name).read_text().splitlines()[2:]  # a JSON header, the column names
        steps += sum(int(row.split(",")[1]) for row in rows)
    assert 0 < steps <= 4096 // 2
    expected = {
        "CartPole-v1.zip", "best_model.zip", "evaluations.npz", "rl_model_2048_steps.zip", "rl_model_4096_steps.zip",
        *monitors, "CartPole-v1",
    }  # fmt: skip
    assert {path.name for path in run.iterdir()} == expected
    assert {path.name for path in (run / "CartPole-v1").iterdir()} == {"args.yml", "config.yml", "command.txt"}
    assert not any(cwd.iterdir())
    # every rank's private folder (and the command's temporary folder) was deleted at exit
    assert not list(tmp.glob("sb3_trpo_zoo_*"))
    assert "rank 1 of 2 writes nothing under" in result.stdout


def test_the_saved_model_and_evaluations_are_the_jobs(job: Job) -> None:
    logs, _, _, result = job
    run = logs / "trpo_ext" / "CartPole-v1_1"
    model = TRPO.load(run / "CartPole-v1.zip")
    assert model.num_timesteps == 4096 and model.n_steps == 256 and model.n_envs == 2 and model.seed == 0
    best = TRPO.load(run / "best_model.zip")
    assert best.num_timesteps in (2048, 4096)
    evaluations = np.load(run / "evaluations.npz")
    assert evaluations["timesteps"].tolist() == [2048, 4096]  # every 2048 global steps
    assert evaluations["results"].shape == (2, 2)
    assert result.stdout.count("Eval num_timesteps=") == 2
    assert TRPO.load(run / "rl_model_2048_steps.zip").num_timesteps == 2048


# ------------------------------------------------------------------------------- without launching ranks
def _zoo_parsed(argv: list[str], wandb: object = None) -> argparse.Namespace:
    """The ``args`` the Zoo's own ``train`` parses from ``argv`` (its ExperimentManager replaced by a stop; ``wandb``
    stands in for Weights & Biases, which ``--track`` imports)."""
    import rl_zoo3.train as zoo_train

    register()
    seen: list[argparse.Namespace] = []

    class Parsed(Exception):
        pass

    def manager(args: argparse.Namespace, *_: object, **__: object) -> None:
        seen.append(args)
        raise Parsed

    with (
        mock.patch.object(zoo_train, "ExperimentManager", manager),
        mock.patch.object(sys, "argv", ["train", *argv]),
        mock.patch.dict(sys.modules, {"wandb": wandb}),
        pytest.raises(Parsed),
    ):
        zoo_train.train()
    return seen[0]


def test_rank_0_gets_global_frequencies_and_the_other_ranks_a_private_folder(tmp_path: Path) -> None:
    user = [*BASE, "-f", "mine", "-tb", "board", "--track", "--eval-freq=5000", "--save-freq", "3000",
            "--hyperparams", "n_steps:256", "batch_size:512"]  # fmt: skip
    wandb = mock.Mock()
    rank0 = _zoo_parsed(data_parallel_argv(user, 0, 4, 7, str(tmp_path)), wandb)
    assert (rank0.log_folder, rank0.track, rank0.seed) == ("mine", True, 7)
    assert wandb.init.call_count == 1 and rank0.tensorboard_log.startswith("runs/")  # --track's own folder
    assert (rank0.eval_freq, rank0.save_freq) == (1250, 750)
    assert rank0.hyperparams == {"n_steps": 256, "batch_size": 512}  # nargs="+" ends before the appended flags
    rank2 = _zoo_parsed(data_parallel_argv(user, 2, 4, 7, str(tmp_path)), wandb)
    assert wandb.init.call_count == 1  # not tracked again
    assert (rank2.log_folder, rank2.tensorboard_log, rank2.track, rank2.seed) == (str(tmp_path), "", False, 7)
    assert (rank2.eval_freq, rank2.save_freq) == (-1, -1)
    assert rank2.hyperparams == {"n_steps": 256, "batch_size": 512}
    # the Zoo's defaults: evaluation every 25000 global steps, no checkpoints
    default = _zoo_parsed(data_parallel_argv(BASE, 0, 2, 0, str(tmp_path)))
    assert (default.log_folder, default.eval_freq, default.save_freq) == ("logs", 12500, -1)


def test_per_rank_frequency() -> None:
    assert [per_rank_frequency(f, 2) for f in (2048, 2049, 3, 1, 0, -1)] == [1024, 1024, 1, 1, 0, -1]
    assert per_rank_frequency(25000, 3) == 8333


def test_refusals_name_the_value_and_what_is_allowed() -> None:
    register()
    assert torchrun_problem("train", BASE) is None
    assert data_parallel_keys() == ["trpo_ext", "trpo_lstm", "trpo_mask", "trpo_vine"]
    message = torchrun_problem("train", ["--algo", "ppo", "--env", "CartPole-v1"])
    assert message is not None and "--algo ppo" in message and "trpo_ext, trpo_lstm, trpo_mask, trpo_vine" in message
    assert "--algo ppo" in (torchrun_problem("train", ["--env", "CartPole-v1"]) or "")  # the Zoo's default
    assert "--algo ppo_mask" in (torchrun_problem("train", ["--algo", "ppo_mask"]) or "")  # sb3-contrib's
    assert "--algo trpo " in (torchrun_problem("train", ["--algo", "trpo"]) or "")  # sb3-contrib's TRPO
    for flag in ("-optimize", "--optimize-hyperparameters", "-opt"):
        assert "-optimize (hyperparameter search) is refused" in (torchrun_problem("train", [*BASE, flag]) or "")
    assert "-P/--progress is refused" in (torchrun_problem("train", [*BASE, "-P"]) or "")
    assert "enjoy does not run under torchrun" in (torchrun_problem("enjoy", BASE) or "")
    for token, flag in (
        ("--eval-f", "--eval-freq"),
        ("--se", "--seed"),
        ("-flogs", "-f"),
        ("--log-fold=x", "--log-folder"),
    ):
        message = torchrun_problem("train", [*BASE, token, "10"]) or ""
        assert f"{token!r}: write {flag} in full" in message, message
    assert "invalid int value" in (torchrun_problem("train", [*BASE, "--seed", "x"]) or "")
    # exact spellings, values that look like flags, and the Zoo's other flags pass
    assert torchrun_problem("train", [*BASE, "--seed=3", "--eval-freq", "-1", "-f=x", "--save-replay-buffer"]) is None


def test_the_entry_point_refuses_under_torchrun_before_joining(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    joined = mock.Mock(side_effect=AssertionError("joined"))
    monkeypatch.setattr(zoo_torchrun, "join", joined)
    for argv in (["train", "--algo", "ppo", "--env", "CartPole-v1"], ["train", *BASE, "-optimize"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert "python -m sb3_trpo_ext.zoo train: error: " in capsys.readouterr().err
    joined.assert_not_called()


def test_one_process_gets_its_command_line_untouched(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    argv = [*BASE, "-optimize", "-P"]
    with torchrun_rank("train", argv, str(tmp_path)) as rank_argv:
        assert rank_argv is argv
    monkeypatch.setenv("WORLD_SIZE", "1")
    with torchrun_rank("enjoy", argv, str(tmp_path)) as rank_argv:
        assert rank_argv is argv


# ------------------------------------------------------------------------------- what the Zoo must keep doing
def _zoo_train_flags() -> dict[tuple[str, ...], dict[str, object]]:
    """Every ``parser.add_argument`` of rl_zoo3's ``train.py``: option strings -> its keywords (literals, and
    ``type`` by name)."""
    import rl_zoo3.train as zoo_train

    flags: dict[tuple[str, ...], dict[str, object]] = {}
    for node in ast.walk(ast.parse(inspect.getsource(zoo_train))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
            names = tuple(ast.literal_eval(arg) for arg in node.args)
            keywords = {
                kw.arg: kw.value.id if isinstance(kw.value, ast.Name) else ast.literal_eval(kw.value)
                for kw in node.keywords
                if kw.arg in ("default", "type", "action")
            }
            flags[names] = keywords
    return flags


def test_the_zoo_flags_the_rewriting_reads_are_unchanged() -> None:
    """The rewriting's parser has the Zoo's option strings, defaults, types and actions for the flags it reads; no
    other Zoo flag could be mistaken for an abbreviation of them (the refusal of abbreviated flags relies on it)."""
    flags = _zoo_train_flags()
    ours = [action for action in zoo_torchrun._parser()._actions if action.option_strings]
    for action in ours:
        names = tuple(action.option_strings)
        assert names in flags, f"rl_zoo3's train.py no longer has {names}"
        zoo = flags[names]
        assert zoo.get("default") == action.default, names
        if "action" in zoo:
            assert zoo["action"] == "store_true" and action.const is True, names
        else:
            assert zoo.get("type", "str") == getattr(action.type, "__name__", "str"), names
    mine = {name for action in ours for name in action.option_strings}
    assert mine == set(zoo_torchrun._LONG_FLAGS) | set(zoo_torchrun._SHORT_FLAGS)
    others = {name for names in flags for name in names} - mine
    for other in others:
        assert not any(flag.startswith(other) for flag in mine), other  # would be refused as an abbreviation
        assert not any(len(flag) == 2 and other.startswith(flag) and not other.startswith("--") for flag in mine), other


def test_the_zoo_still_divides_the_frequencies_by_n_envs_and_writes_under_the_log_folder() -> None:
    """rank 0's frequencies are divided by the world size because the Zoo divides them by ``n_envs`` and its
    callbacks count steps (``n_calls``); the other ranks write nothing of the user's because the Zoo writes under
    ``-f`` (and ``-tb``)."""
    from rl_zoo3.exp_manager import ExperimentManager

    callbacks = inspect.getsource(ExperimentManager.create_callbacks)
    assert "self.eval_freq = max(self.eval_freq // self.n_envs, 1)" in callbacks
    assert "self.save_freq = max(self.save_freq // self.n_envs, 1)" in callbacks
    assert "eval_freq=self.eval_freq" in callbacks and "save_freq=self.save_freq" in callbacks
    init = inspect.getsource(ExperimentManager.__init__)
    assert 'self.log_path = f"{log_folder}/{self.algo}/"' in init
    assert 'self.tensorboard_log = None if tensorboard_log == "" else' in init
    assert "log_dir = None if eval_env or no_log else self.save_path" in inspect.getsource(
        ExperimentManager.create_envs
    )
