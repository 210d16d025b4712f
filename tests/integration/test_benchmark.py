"""sb3_trpo_ext.benchmark: sweeps through the Zoo (local pool, Dask on loopback), resumption, report, errors.

Every sweep here is tiny (CartPole-v1, ~1k timesteps, evaluation every 500): most of the time is the start-up
of the run processes (torch + rl_zoo3 imports), a few seconds each.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rl_zoo3")
pd = pytest.importorskip("pandas")

from sb3_trpo_ext.benchmark import main  # noqa: E402
from sb3_trpo_ext.benchmark.report import (  # noqa: E402
    README_BEGIN,
    README_END,
    collect_rows,
    iqm,
    iqm_interval,
    normalize,
    write_report,
)

SWEEP = ["--algos", "trpo_ext", "ppo", "--envs", "CartPole-v1", "--seeds", "0", "1"]
SMALL = ["-n", "1000", "--eval-freq", "500", "--eval-episodes", "2", "--final-eval-episodes", "2", "--save-freq", "500",
         "--no-progress"]  # fmt: skip
DETERMINISTIC = ["algo", "env", "seed", "timesteps", "env_steps", "eval_mean", "eval_std"]


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny sweep, run once on 2 local workers."""
    folder = tmp_path_factory.mktemp("bench") / "local"
    main(["run", *SWEEP, *SMALL, "-f", str(folder), "--workers", "2"])
    return folder


def _segments(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "segments.jsonl").read_text().splitlines()]


def _has_checkpoint(run: Path) -> bool:
    """Whether the run has written a checkpoint into its timeline yet."""
    timeline = run / "timeline.jsonl"
    return timeline.is_file() and '"checkpoint"' in timeline.read_text()


# -- runner and report ------------------------------------------------------------------------------------------
def test_local_sweep_writes_runs_and_report(local_sweep: Path, tmp_path: Path) -> None:
    config = json.loads((local_sweep / "sweep.json").read_text())
    assert config["algos"] == ["trpo_ext", "ppo"] and config["seeds"] == [0, 1]
    assert config["budgets"] == {"trpo_ext": {"CartPole-v1": 1000}, "ppo": {"CartPole-v1": 1000}}
    for algo in ("trpo_ext", "ppo"):
        for seed in (0, 1):
            run = local_sweep / "runs" / algo / "CartPole-v1" / f"seed_{seed}"
            result = json.loads((run / "result.json").read_text())
            assert result["status"] == "done" and result["timesteps"] >= 1000
            argv = _segments(run)[0]["argv"]
            assert argv[argv.index("--") + 1 :][:7] == [
                "train",
                "--algo",
                algo,
                "--env",
                "CartPole-v1",
                "--seed",
                str(seed),
            ]

    out = tmp_path / "report"
    written = write_report([local_sweep], out, reps=500, seed=7)
    table = pd.read_csv(written["csv"])
    assert list(table.columns) == [
        "algo",
        "env",
        "seed",
        "timesteps",
        "env_steps",
        "wall_seconds",
        "eval_mean",
        "eval_std",
        "cpu_seconds",
    ]
    assert (table["cpu_seconds"] > 0).all()
    assert set(table["algo"]) == {"trpo_ext", "ppo"} and set(table["seed"]) == {0, 1}
    for (_, _), run in table.groupby(["algo", "seed"]):
        assert len(run) >= 2 and run["timesteps"].is_monotonic_increasing
        assert (run["wall_seconds"] > 0).all() and run["wall_seconds"].is_monotonic_increasing
    assert (table["env_steps"] == table["timesteps"]).all()  # no vine run here: no branch steps
    markdown = written["markdown"].read_text()
    for text in (
        "## CartPole-v1",
        "| trpo_ext |",
        "| ppo |",
        "95% CI",
        "Aggregate over environments",
        "torch",
        "1,000",
        "500 replications, seed 7)",  # the bootstrap's seed, not a run's
    ):
        assert text in markdown
    for name in ("curves_CartPole-v1", "aggregate"):
        assert written[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a plain Zoo log folder gives the same evaluations (from evaluations.npz)
    zoo_folder = local_sweep / "runs" / "ppo" / "CartPole-v1" / "seed_0" / "zoo"
    zoo_table, _ = collect_rows([zoo_folder])
    ours = table[(table["algo"] == "ppo") & (table["seed"] == 0)]
    assert zoo_table["timesteps"].tolist() == ours["timesteps"].tolist()
    np.testing.assert_allclose(zoo_table["eval_mean"], ours["eval_mean"])
    assert (zoo_table["wall_seconds"] > 0).all()


def test_report_names_unfinished_and_missing_runs(local_sweep: Path, tmp_path: Path) -> None:
    folder = tmp_path / "sweep"
    shutil.copytree(local_sweep, folder, ignore=shutil.ignore_patterns("zoo", "resume"))
    cut = folder / "runs" / "ppo" / "CartPole-v1" / "seed_1"
    (cut / "result.json").unlink()  # as if the sweep had been stopped during this run
    timeline = [json.loads(line) for line in (cut / "timeline.jsonl").read_text().splitlines()]
    last_eval = [record for record in timeline if record["kind"] == "eval"][-1]["timesteps"]
    shutil.rmtree(folder / "runs" / "trpo_ext" / "CartPole-v1" / "seed_0")  # never started
    readme = tmp_path / "README.md"
    readme.write_text(f"{README_BEGIN}\n{README_END}\n")
    written = write_report([folder], tmp_path / "report", reps=200, readme=readme)
    markdown = written["markdown"].read_text()
    # the README shows finished runs only: the cut one has no score yet
    assert (
        "| CartPole-v1 | ppo | 1 | 0 |" in readme.read_text()
        and "1 run(s) still going are not shown" in readme.read_text()
    )
    assert (
        # never more than the budget, though the Zoo's last rollout may run past it
        f"Unfinished runs (their last evaluations are used): ppo/CartPole-v1/seed 1 ({min(last_eval, 1000):,} of 1,000"
        in markdown
    )
    assert "Runs not started (no rows): trpo_ext/CartPole-v1/seed 0" in markdown
    assert "| earlier | CartPole-v1 | ppo | 1 |" in markdown  # the aggregate takes finished runs only
    table = pd.read_csv(written["csv"])
    assert set(zip(table["algo"], table["seed"])) == {("trpo_ext", 1), ("ppo", 0), ("ppo", 1)}


def test_rerun_skips_finished_runs(local_sweep: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in local_sweep.glob("runs/*/*/*/segments.jsonl")}
    assert len(before) == 4, sorted(before)  # 2 algorithms x 2 seeds: an empty glob would compare equal
    main(["run", *SWEEP, *SMALL, "-f", str(local_sweep), "--workers", "2"])
    assert {p: p.stat().st_mtime_ns for p in local_sweep.glob("runs/*/*/*/segments.jsonl")} == before


# -- Dask ---------------------------------------------------------------------------------------------------------
def test_dask_sweep_gives_the_same_rows(local_sweep: Path, tmp_path: Path) -> None:
    """Same rows as the local sweep: each run is the same process with the same seed on one torch thread, so
    timesteps and evaluation returns are identical; only wall_seconds differ."""
    distributed = pytest.importorskip("distributed")
    folder = tmp_path / "dask"
    with distributed.LocalCluster(
        host="127.0.0.1", n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        assert all(w.startswith("tcp://127.0.0.1:") for w in cluster.scheduler_info["workers"])
        assert all(nanny.address.startswith("tcp://127.0.0.1:") for nanny in cluster.workers.values())
        main(["run", *SWEEP, *SMALL, "-f", str(folder), "--dask", cluster.scheduler_address])
    local, _ = collect_rows([local_sweep])
    remote, _ = collect_rows([folder])
    pd.testing.assert_frame_equal(local[DETERMINISTIC], remote[DETERMINISTIC])
    runs = sorted(folder.glob("runs/*/*/*"))
    assert len(runs) == 4, runs  # 2 algorithms x 2 seeds (an empty glob would pass the loop below)
    for run in runs:  # the whole run folder came back
        assert (run / "result.json").is_file() and any(run.glob("zoo/*/*/evaluations.npz"))


# -- resumption ---------------------------------------------------------------------------------------------------
def test_killed_sweep_resumes_from_checkpoint(tmp_path: Path) -> None:
    folder = tmp_path / "cut"
    budget = 8000
    argv = [sys.executable, "-m", "sb3_trpo_ext.benchmark", "run", "--algos", "ppo", "--envs", "CartPole-v1"]
    argv += ["--seeds", "0", "1", "-n", str(budget), "--eval-freq", "500", "--eval-episodes", "2"]
    argv += ["--final-eval-episodes", "2", "--save-freq", "500", "--workers", "1", "--no-progress", "-f", str(folder)]
    first, cut = folder / "runs/ppo/CartPole-v1/seed_0", folder / "runs/ppo/CartPole-v1/seed_1"

    log = tmp_path / "sweep.err"
    with open(log, "w") as err:
        sweep = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and sweep.poll() is None and not _has_checkpoint(cut):
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the sweep may have ended by itself: said below
            os.killpg(sweep.pid, signal.SIGKILL)  # the sweep and its run process
        sweep.wait()
    assert _has_checkpoint(cut), f"the sweep ended (code {sweep.returncode}) before a cut: {log.read_text()[-2000:]}"
    assert (first / "result.json").is_file(), "the first run should have finished before the cut"
    assert not (cut / "result.json").is_file(), "the second run finished before it could be cut"

    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=240)
    assert len(_segments(first)) == 1  # not rerun
    segments = _segments(cut)
    assert len(segments) == 2 and segments[0]["trained_agent"] is None
    resumed = segments[1]
    assert resumed["trained_agent"] and resumed["offset_steps"] > 0
    assert resumed["n_timesteps"] == budget - resumed["offset_steps"]
    zoo_argv = resumed["argv"]
    assert zoo_argv[zoo_argv.index("--trained-agent") + 1] == str(cut / resumed["trained_agent"])
    assert zoo_argv[zoo_argv.index("-n") + 1] == str(budget - resumed["offset_steps"])
    assert "Loading pretrained agent" in (cut / "segment_1.out").read_text()
    result = json.loads((cut / "result.json").read_text())
    assert result["segments"] == 2 and result["timesteps"] >= budget
    evals = [r for r in map(json.loads, (cut / "timeline.jsonl").read_text().splitlines()) if r["kind"] == "eval"]
    steps = [r["timesteps"] for r in evals]
    assert steps == sorted(set(steps)) and steps[-1] >= budget - 500  # no evaluation twice, none missing at the end
    assert {r["segment"] for r in evals} == {0, 1}
    # the killed segment's work after the checkpoint is recorded apart from the run's cpu_seconds; both segments
    # name their code, the killed one's copied from its progress.json when the sweep resumed it
    lost = segments[0]["lost_work"]
    assert lost["recorded"] and lost["timesteps"] >= 0 and lost["cpu_seconds"] >= 0
    assert "lost_work" not in segments[1]
    assert result["lost_work"]["segments"] == 1 and result["lost_work"]["cpu_seconds"] == lost["cpu_seconds"]
    assert segments[0]["code"] == segments[1]["code"] and segments[0]["code"]["version"]
    assert result["code"]["differ"] is False and result["code"]["unrecorded"] == 0


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_code_record_names_the_checkout_of_the_package(tmp_path: Path) -> None:
    """Issue 27: the commit of the tree the package was imported from, dirty only for changes to the package or
    the hyperparameters, None outside a checkout or when the package is not at the checkout's top."""
    import sb3_trpo_ext
    from sb3_trpo_ext.benchmark.zoo_train import code_record

    tree = tmp_path / "checkout"
    for name in ("sb3_trpo_ext/__init__.py", "hyperparams/a.yml", "README.md"):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text("x\n")
    _git(tree, "init", "-q")
    _git(tree, "add", ".")
    _git(tree, "commit", "-q", "-m", "one")
    package = tree / "sb3_trpo_ext"
    record = code_record(package)
    assert record == {
        "version": sb3_trpo_ext.__version__,
        "tree": str(tree.resolve()),
        "commit": _git(tree, "rev-parse", "HEAD"),
        "dirty": False,
    }
    (tree / "README.md").write_text("y\n")  # outside the package and the hyperparameters: not the run's code
    assert code_record(package)["dirty"] is False
    (tree / "hyperparams" / "a.yml").write_text("y\n")
    assert code_record(package)["dirty"] is True
    _git(tree, "commit", "-q", "-am", "two")
    (package / "new.py").write_text("")  # untracked files count
    assert code_record(package)["dirty"] is True and code_record(package)["commit"] == _git(tree, "rev-parse", "HEAD")
    # installed somewhere inside another checkout (a virtualenv in it): that checkout's commit is not the package's
    nested = tree / "venv" / "site-packages" / "sb3_trpo_ext"
    nested.mkdir(parents=True)
    assert code_record(nested)["commit"] is None and code_record(nested)["dirty"] is None
    outside = tmp_path / "plain" / "sb3_trpo_ext"
    outside.mkdir(parents=True)
    assert code_record(outside)["commit"] is None


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_runs_record_the_code_their_processes_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 27: a run process started in another checkout (another commit) imports that checkout's package: its
    segment and result name that commit, not the one of the sweep's own process."""
    root = Path(__file__).resolve().parents[2]
    checkout = tmp_path / "frozen"
    for name in ("sb3_trpo_ext", "hyperparams"):
        shutil.copytree(root / name, checkout / name, ignore=shutil.ignore_patterns("__pycache__"))
    _git(checkout, "init", "-q")
    _git(checkout, "add", ".")
    _git(checkout, "commit", "-q", "-m", "frozen")
    commit = _git(checkout, "rev-parse", "HEAD")
    with open(checkout / "hyperparams" / "trpo_ext.yml", "a") as file:
        file.write("# an uncommitted edit\n")
    monkeypatch.chdir(checkout)  # `python -m` puts the working directory first on the run process's path
    folder = tmp_path / "sweep"
    main(["run", "--algos", "trpo_ext", "--envs", "CartPole-v1", "--seeds", "0", "-n", "600", "--eval-freq", "500",
          "--eval-episodes", "2", "--final-eval-episodes", "2", "-f", str(folder), "--workers", "1", "--no-progress"])  # fmt: skip
    run = folder / "runs" / "trpo_ext" / "CartPole-v1" / "seed_0"
    (segment,) = _segments(run)
    assert segment["code"]["tree"] == str(checkout.resolve()) and segment["code"]["commit"] == commit
    assert segment["code"]["dirty"] is True
    result = json.loads((run / "result.json").read_text())
    assert result["code"] == {
        "versions": [segment["code"]["version"]],
        "commits": [commit],
        "dirty": True,
        "differ": False,
        "unrecorded": 0,
    }
    assert result["lost_work"] == {
        "timesteps": 0, "cpu_seconds": 0, "wall_seconds": 0, "eval_cpu_seconds": 0, "eval_wall_seconds": 0,
        "segments": 0,
    }  # fmt: skip


class _FakeTraining:
    """Stands for a run process in :func:`execute_run`: writes what a segment that trained to the end writes."""

    returncode = 0

    def __init__(self, argv: list[str], **kwargs: object) -> None:
        self.argv = argv
        run = Path(argv[argv.index("--bench-dir") + 1])
        progress = {
            "timesteps": 1000, "total": 1000, "wall_seconds": 3.0, "cpu_seconds": 3.0, "eval_wall_seconds": 0.5,
            "eval_cpu_seconds": 0.25, "segment": 1, "finished": True, "machine": {}, "code": _CODE_B,
        }  # fmt: skip
        (run / "progress.json").write_text(json.dumps(progress))
        with open(run / "timeline.jsonl", "a") as file:
            file.write(json.dumps({"kind": "final_eval", "timesteps": 1000, "eval_mean": 1.0, "episodes": 2}) + "\n")
        model = run / "zoo" / "ppo" / "CartPole-v1_2" / "CartPole-v1.zip"
        model.parent.mkdir(parents=True)
        model.write_bytes(b"")

    def poll(self) -> int:
        return 0

    def wait(self) -> int:
        return 0


_CODE_A = {"version": "0.1.0", "tree": "/a", "commit": "a" * 40, "dirty": False}
_CODE_B = {"version": "0.1.0", "tree": "/b", "commit": "b" * 40, "dirty": False}


def test_resumed_run_records_the_lost_work_and_each_segments_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 27: a segment killed after its checkpoint at 512 steps, last seen at 900: the 388 steps, the CPU and
    wall seconds after the checkpoint (training, and evaluation since the checkpoint) are its lost work, not in the
    run's cpu_seconds; the code of each segment is recorded, and the result says they differ."""
    import types

    from sb3_trpo_ext.benchmark import sweep

    config = sweep.SweepConfig(["ppo"], ["CartPole-v1"], [0], 1000, 500, 2, 512, {"ppo": {"CartPole-v1": 1000}})
    spec = sweep.RunSpec("ppo", "CartPole-v1", 0, 1000)
    run = tmp_path / "run"
    checkpoint = run / "resume" / "512" / "rl_model_512_steps.zip"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"")
    (run / "segments.jsonl").write_text(json.dumps({"segment": 0, "trained_agent": None, "code": None}) + "\n")
    timeline = [
        {"kind": "checkpoint", "path": "resume/512/rl_model_512_steps.zip", "timesteps": 512, "wall_seconds": 1.25,
         "cpu_seconds": 1.0, "eval_wall_seconds": 0.5, "eval_cpu_seconds": 0.25, "segment": 0},
        {"kind": "eval", "timesteps": 768, "wall_seconds": 1.75, "cpu_seconds": 1.5, "eval_wall_seconds": 1.0,
         "eval_cpu_seconds": 0.5, "eval_mean": 9.0, "segment": 0},
    ]  # fmt: skip
    (run / "timeline.jsonl").write_text("".join(json.dumps(r) + "\n" for r in timeline))
    # its last progress.json, written after that evaluation; the sweep was killed with it (no code copied yet)
    progress = {"timesteps": 900, "wall_seconds": 2.25, "cpu_seconds": 2.0, "eval_wall_seconds": 1.0,
                "eval_cpu_seconds": 0.5, "segment": 0, "finished": False, "code": _CODE_A}  # fmt: skip
    (run / "progress.json").write_text(json.dumps(progress))
    monkeypatch.setattr(sweep, "subprocess", types.SimpleNamespace(Popen=_FakeTraining, DEVNULL=subprocess.DEVNULL))

    result = sweep.execute_run(spec, config, run, poll_seconds=0.01)
    assert result["status"] == "done"
    first, second = _segments(run)
    assert second["offset_steps"] == 512 and second["argv"][second["argv"].index("--offset-cpu-seconds") + 1] == "1.0"
    lost = {"timesteps": 388, "cpu_seconds": 1.0, "wall_seconds": 1.0, "eval_cpu_seconds": 0.25,
            "eval_wall_seconds": 0.5}  # fmt: skip
    assert first["lost_work"] == {**lost, "recorded": True} and "lost_work" not in second
    assert result["cpu_seconds"] == 3.0 and result["lost_work"] == {**lost, "segments": 1}
    assert (first["code"], second["code"]) == (_CODE_A, _CODE_B)
    assert result["code"] == {
        "versions": ["0.1.0"], "commits": ["a" * 40, "b" * 40], "dirty": False, "differ": True, "unrecorded": 0,
    }  # fmt: skip
    # the evaluation after the checkpoint was dropped with the rest of the cut segment's timeline
    assert [r["kind"] for r in sweep.read_jsonl(run / "timeline.jsonl")] == ["checkpoint", "final_eval"]


def _child_pids(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # field 4, after the "(command)" field
            children.append(int(entry.name))
    return children


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads processes from Linux /proc")
def test_sigterm_stops_the_sweep_and_its_runs(tmp_path: Path) -> None:
    """``kill`` on the sweep (how a background sweep is stopped) terminates its training processes too."""
    folder = tmp_path / "terminated"
    argv = [sys.executable, "-m", "sb3_trpo_ext.benchmark", "run", "--algos", "ppo", "--envs", "CartPole-v1"]
    argv += ["--seeds", "0", "-n", "200000", "--eval-freq", "500", "--eval-episodes", "2", "--save-freq", "500"]
    argv += ["--workers", "1", "--no-progress", "-f", str(folder)]
    run = folder / "runs/ppo/CartPole-v1/seed_0"
    sweep = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not _has_checkpoint(run):
            assert time.time() < deadline and sweep.poll() is None, "no checkpoint in 120 s"
            time.sleep(0.05)
        children = _child_pids(sweep.pid)
        assert children, "the run process should be running"
        sweep.send_signal(signal.SIGTERM)
        assert sweep.wait(timeout=60) == 130
        time.sleep(0.5)
        assert not [pid for pid in children if Path(f"/proc/{pid}").exists()], "a training process was left running"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sweep.pid, signal.SIGKILL)
        sweep.wait()
    assert not (run / "result.json").exists() and not (run / "error.json").exists()  # resumable, not failed


def test_interrupt_stops_running_and_queued_runs(tmp_path: Path) -> None:
    from sb3_trpo_ext.benchmark.sweep import plan_runs, prepare_sweep, run_dir_of, run_local

    folder = tmp_path / "interrupted"
    config = prepare_sweep(folder, ["ppo"], ["CartPole-v1"], [0, 1], n_timesteps=200_000, save_freq=500)
    _, todo = plan_runs(folder, config)
    first, second = (run_dir_of(folder, spec) for spec in todo)
    started = time.time()

    def tick() -> None:  # Ctrl-C once the first run has written its first checkpoint
        if _has_checkpoint(first):
            raise KeyboardInterrupt
        assert time.time() - started < 120, "no checkpoint in 120 s"

    with pytest.raises(KeyboardInterrupt):
        run_local(folder, config, todo, workers=1, tick=tick)
    assert time.time() - started < 150  # the 200k-step run was terminated, not trained to the end
    assert not (first / "result.json").exists() and not (first / "error.json").exists()  # not a failure
    assert not second.exists()  # the queued run never started
    (segment,) = _segments(first)
    assert segment["trained_agent"] is None


def test_off_policy_checkpoint_keeps_the_replay_buffer(tmp_path: Path) -> None:
    from stable_baselines3 import TD3

    folder = tmp_path / "td3"
    main(["run", "--algos", "td3", "--envs", "Pendulum-v1", "--seeds", "0", "-n", "600", "--eval-freq", "300"]
         + ["--eval-episodes", "1", "--final-eval-episodes", "1", "--save-freq", "300", "--workers", "1", "--no-progress",
            "-f", str(folder)])  # fmt: skip
    run = folder / "runs" / "td3" / "Pendulum-v1" / "seed_0"
    checkpoints = [
        r for r in map(json.loads, (run / "timeline.jsonl").read_text().splitlines()) if r["kind"] == "checkpoint"
    ]
    latest = run / checkpoints[-1]["path"]
    buffer_file = latest.parent / "replay_buffer.pkl"  # where the Zoo's --trained-agent looks for it
    assert buffer_file.is_file()
    model = TD3.load(latest)
    model.load_replay_buffer(buffer_file)
    # the checkpoint is written in the step's callback, before SB3 stores that step's transition
    assert checkpoints[-1]["timesteps"] == 600 and model.replay_buffer.size() == 599


# -- statistics ---------------------------------------------------------------------------------------------------
def test_iqm_by_hand() -> None:
    assert iqm(np.arange(1, 9)) == pytest.approx(4.5)  # middle half of 1..8: 3, 4, 5, 6
    assert iqm(np.array([0, 1, 2, 3, 100, 4, 5, 6])) == pytest.approx(3.5)  # 2, 3, 4, 5: the outlier is cut
    assert iqm(np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]])) == pytest.approx((3 + 4 + 10 + 20) / 4)


def test_iqm_interval_properties() -> None:
    scores = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    point, low, high = iqm_interval(scores, reps=2000, seed=3)
    assert point == pytest.approx(4.5)
    assert scores.min() <= low < point < high <= scores.max()
    assert (point, low, high) == iqm_interval(scores, reps=2000, seed=3)  # fixed seed: same interval
    assert iqm_interval(np.full(5, 2.0), reps=200) == (2.0, 2.0, 2.0)
    # stratified: runs are resampled within each task, so tasks constant over runs give a zero-width interval
    matrix = np.array([[1.0, 3.0]] * 4)
    assert iqm_interval(matrix, reps=500) == pytest.approx((2.0, 2.0, 2.0))
    narrow = iqm_interval(scores, reps=2000, seed=3, size=0.5)
    assert low <= narrow[1] <= narrow[2] <= high


def test_cost_table_shows_the_spread_of_cpu_time() -> None:
    """Issue 27: CPU time depends on the machine's load (runs of one configuration: 374 to 776 s): the cost table
    gives its min-max beside the median and no longer says it is unaffected by other runs."""
    from sb3_trpo_ext.benchmark.report import _cost_lines

    runs = pd.DataFrame(
        {
            "env": ["Hopper-v5"] * 3 + ["CartPole-v1"],
            "algo": ["trpo"] * 3 + ["ppo"],
            "set": ["p"] * 3 + ["earlier"],
            "cpu_seconds": [374.0, 429.0, 776.0, np.nan],
            "wall_seconds": [377.0, 434.0, 2746.0, 20.0],
            "eval_cpu_seconds": [50.0, 51.0, 52.0, np.nan],
            "concurrent_runs_mean": [2.0, 2.0, 2.0, np.nan],
        }
    )
    text = "\n".join(_cost_lines(runs))
    assert "| Hopper-v5 | trpo (p) | 3 | 429 (374–776) | 434 | 51 | 2.00 |" in text
    assert "| CartPole-v1 | ppo | 1 | — | 20 | — | — |" in text
    assert "unaffected" not in text and "affects it less than wall-clock time, but it still affects it" in text


def test_normalize() -> None:
    assert normalize("CartPole-v1", 500.0) == pytest.approx(1.0)
    assert normalize("CartPole-v1", 22.0) == pytest.approx(0.0)
    assert normalize("Hopper-v5", -20.272305) == pytest.approx(0.0)
    assert normalize("NoReference-v0", 1.0) is None


# -- errors before anything runs ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--algos", "nope", "--envs", "CartPole-v1", "--seeds", "0"], "unknown algorithm 'nope'"),
        (["--algos", "ppo", "--envs", "NoSuchEnv-v0", "--seeds", "0"], "unknown environment id 'NoSuchEnv-v0'"),
        (["--algos", "ppo", "--envs", "CartPole-v1", "--seeds", "0", "-n", "0"], "must be a positive integer"),
        (["--algos", "ppo", "--envs", "CartPole-v1", "--seeds", "0", "-n", "-5"], "must be a positive integer"),
        (["--algos", "ppo", "--envs", "CartPole-v1", "--seeds", "0", "-n", "1.5"], "must be a positive integer"),
        (["--algos", "ppo", "--envs", "CartPole-v1", "--seeds", "0", "-n", "many"], "must be a positive integer"),
    ],
)
def test_errors_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture, arguments: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", *arguments, "-f", str(tmp_path / "out"), "--no-progress"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "runs").exists()


def test_report_names_a_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "missing_dir"
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(missing), "-o", str(tmp_path / "report")])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert str(missing) in line and "does not exist" in line
    assert not (tmp_path / "report").exists()


def test_run_help_lists_every_key_of_ours(capsys: pytest.CaptureFixture) -> None:
    from sb3_trpo_ext.zoo.registry import ZOO_ALGORITHMS

    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--help"])
    assert exit_info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help at the terminal width
    assert f"(ours: {', '.join(ZOO_ALGORITHMS)})" in help_text
    assert {"trpo_lstm", "trpo_mask"} <= set(ZOO_ALGORITHMS)


def test_start_line_is_not_wrapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The status lines go to logs and terminals alike: rich wrapped them at 80 columns (the width it assumes
    for a file), breaking "(2 local worker(s))" and the report command in the middle."""
    from sb3_trpo_ext.benchmark import cli

    monkeypatch.setenv("COLUMNS", "60")
    monkeypatch.setattr(cli, "run_local_jobs", lambda jobs, workers, **kwargs: [])
    folder = tmp_path / "a_sweep_folder_with_a_rather_long_name"
    main(["run", *SWEEP, *SMALL, "-f", str(folder), "--workers", "2"])
    lines = capsys.readouterr().err.splitlines()
    start = [line for line in lines if "runs in" in line]
    assert len(start) == 1 and start[0].endswith("(2 local worker(s))"), lines
    assert any(line.endswith(f"report: sb3-trpo-bench report {folder} -o REPORT_FOLDER") for line in lines), lines


def test_other_configuration_in_folder(local_sweep: Path, capsys: pytest.CaptureFixture) -> None:
    before = (local_sweep / "sweep.json").read_text()
    with pytest.raises(SystemExit) as exit_info:
        main(["run", *SWEEP[:-2], "0", "1", "2", *SMALL, "-f", str(local_sweep)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "holds a sweep of another configuration" in err and "seeds: [0, 1] there, [0, 1, 2] now" in err
    assert "not supported" in err
    assert (local_sweep / "sweep.json").read_text() == before
    assert not (local_sweep / "runs" / "ppo" / "CartPole-v1" / "seed_2").exists()


def test_dask_without_dask_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` raises ImportError
    with pytest.raises(SystemExit) as exit_info:
        main(["run", *SWEEP, *SMALL, "-f", str(tmp_path / "out"), "--dask", "tcp://127.0.0.1:1"])
    assert exit_info.value.code == 2
    assert 'pip install "sb3-trpo-ext[dask]"' in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# -------------------------------------------------------------------------------------- benchmarks/speed.py
@pytest.mark.parametrize("flag", ["--masked", "--masked-defaults", "--recurrent"])
def test_speed_family_comparison_runs_and_writes_its_ratios(flag: str, tmp_path: Path) -> None:
    """The family comparisons of benchmarks/speed.py run end to end (one small timed learn each) and write the
    figures the docs quote; the ratios are whatever they are (speed targets live in the script, not in tests)."""
    out = tmp_path / "speed.json"
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "speed.py"
    done = subprocess.run(
        [sys.executable, str(script), flag, "--repeats", "1", "--timesteps", "1024", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (env_id, result), *_ = json.loads(out.read_text())["results"].items()
    assert env_id == {"--masked": "Taxi-v4", "--masked-defaults": "Taxi-v4", "--recurrent": "CartPoleNoVel-v1"}[flag]
    cpu = {"end_to_end_cpu_speedup", "end_to_end_cpu_speedup_min", "end_to_end_cpu_speedup_max"}
    assert set(result["ratios"]) == {"train_ratio", "end_to_end_speedup", "collect_speedup", *cpu}
    low, high = result["ratios"]["end_to_end_cpu_speedup_min"], result["ratios"]["end_to_end_cpu_speedup_max"]
    assert low <= result["ratios"]["end_to_end_cpu_speedup"] <= high  # the spread brackets the median
    assert all(np.isfinite(value) and value > 0 for value in result["ratios"].values())
    assert "end-to-end steps/s ratio" in done.stdout
