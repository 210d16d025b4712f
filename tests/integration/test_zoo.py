"""RL Zoo integration (sb3_trpo_ext.zoo): registration, command line, hyperparameter files, Optuna, hub, loading."""

from __future__ import annotations

import argparse
import importlib
import math
import os
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path
from unittest import mock

import pytest
import yaml

pytest.importorskip("rl_zoo3")

import gymnasium as gym  # noqa: E402
import optuna  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.vec_env import VecNormalize  # noqa: E402

from sb3_trpo_ext import TRPO  # noqa: E402
from sb3_trpo_ext.zoo import (  # noqa: E402
    ZOO_ALGORITHMS,
    convert_trpo_ext_params,
    find_earlier_version_block,
    hub_compat,
    hyperparams_path,
    load_zoo_model,
    main,
    register,
    sample_trpo_ext_params,
)
from sb3_trpo_ext.zoo.hyperparams_opt import sample_trpo_vine_params  # noqa: E402
from sb3_trpo_ext.zoo.optimize import trial_seeds_flag  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
YAML_PATH = ROOT / "hyperparams" / "trpo_ext.yml"
# One torch thread: the Zoo runs are tiny, and the default thread pool fights other processes on small machines.
FAST = ["--num-threads", "1", "--eval-freq", "-1", "--seed", "0"]


def run_zoo(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m sb3_trpo_ext.zoo ARGS`` in a fresh process (source tree on the path unless ``env`` says)."""
    if env is None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "sb3_trpo_ext.zoo", *args],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def check(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Zoo log folder with a trpo_ext CartPole-v1 run (with VecNormalize, to exercise the saved statistics)."""
    folder = tmp_path_factory.mktemp("zoo_logs")
    out = check(
        run_zoo(
            "train", "--algo", "trpo_ext", "--env", "CartPole-v1", "-n", "2048", "-f", str(folder),
            "-params", "normalize:True", *FAST,
        )
    )  # fmt: skip
    assert f"Loading hyperparameters from: {YAML_PATH}" in out
    return folder


# ------------------------------------------------------------------------------------------ registration
def test_register_is_idempotent_and_keeps_contrib_trpo() -> None:
    import sb3_contrib
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER
    from rl_zoo3.utils import ALGOS

    register()
    before = dict(ALGOS)
    register()
    assert dict(ALGOS) == before
    assert ALGOS["trpo_ext"] is TRPO
    assert ALGOS["trpo"] is sb3_contrib.TRPO
    assert HYPERPARAMS_SAMPLER["trpo_ext"] is sample_trpo_ext_params
    assert HYPERPARAMS_CONVERTER["trpo_ext"] is convert_trpo_ext_params
    assert HYPERPARAMS_SAMPLER["trpo"] is not sample_trpo_ext_params
    for key in ZOO_ALGORITHMS:
        assert key in ALGOS and hyperparams_path(key).is_file()


def test_trpo_vine_key_trains_vine_even_without_its_yaml(tmp_path: Path) -> None:
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_SAMPLER
    from rl_zoo3.utils import ALGOS

    register()
    assert issubclass(ALGOS["trpo_vine"], TRPO) and HYPERPARAMS_SAMPLER["trpo_vine"] is sample_trpo_vine_params
    model = ALGOS["trpo_vine"]("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64)  # no sampling argument
    assert model.sampling == "vine" and model._vine is not None


def test_trpo_vine_train_and_enjoy(tmp_path: Path) -> None:
    out = check(
        run_zoo("train", "--algo", "trpo_vine", "--env", "Pendulum-v1", "-n", "2048", "-f", str(tmp_path), *FAST,
                "-params", "n_steps:512", "vine_n_states:16", "vine_horizon:5")
    )  # fmt: skip
    assert f"Loading hyperparameters from: {hyperparams_path('trpo_vine')}" in out
    saved = tmp_path / "trpo_vine" / "Pendulum-v1_1" / "Pendulum-v1.zip"
    model = TRPO.load(saved)
    assert (model.sampling, model.vine_n_states, model.vine_horizon, model.num_timesteps) == ("vine", 16, 5, 2048)
    check(
        run_zoo("enjoy", "--algo", "trpo_vine", "--env", "Pendulum-v1", "-f", str(tmp_path), "--no-render", "-n", "50",
                "--num-threads", "1")
    )  # fmt: skip


_NO_FRAME_LOOKUP_TRAIN = """
import sys
from stable_baselines3.common.vec_env import subproc_vec_env
from sb3_trpo_ext.common import vine

def no_frame_lookup():
    raise AssertionError("the worker frame lookup was used")

vine._subprocess_worker_env = no_frame_lookup  # forked workers inherit it (as in test_vine.py's wrapper test)
init = subproc_vec_env.SubprocVecEnv.__init__
subproc_vec_env.SubprocVecEnv.__init__ = lambda self, env_fns, start_method=None: init(self, env_fns, "fork")
from sb3_trpo_ext.zoo import main
main(sys.argv[1:])
"""


def test_trpo_vine_with_subproc_vec_env_takes_the_public_route_and_enjoy_loads(tmp_path: Path) -> None:
    """``train --algo trpo_vine --vec-env subproc``: every worker's environment gets VineBranchWrapper (outermost),
    so the branches never read SB3's worker frame (the fallback raises here, in the forked workers); config.yml is
    the Zoo's own (no wrapper written), so ``enjoy`` loads the folder through the safe loader."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", _NO_FRAME_LOOKUP_TRAIN, "train", "--algo", "trpo_vine", "--env", "CartPole-v1",
         "--vec-env", "subproc", "-n", "2048", "-f", str(tmp_path), *FAST],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    check(result)
    run = tmp_path / "trpo_vine" / "CartPole-v1_1"
    model = TRPO.load(run / "CartPole-v1.zip")
    assert (model.sampling, model.num_timesteps) == ("vine", 2048)
    assert "VineBranchWrapper" not in (run / "CartPole-v1" / "config.yml").read_text()
    check(
        run_zoo("enjoy", "--algo", "trpo_vine", "--env", "CartPole-v1", "-f", str(tmp_path), "--no-render", "-n", "50",
                "--num-threads", "1")
    )  # fmt: skip


def test_outermost_vine_branch_wrapper_goes_on_top_of_the_block_wrapper() -> None:
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    from sb3_trpo_ext.common.vine import VineBranchWrapper
    from sb3_trpo_ext.zoo.vine_env import OutermostVineBranchWrapper, vine_branch_wrapper

    wrapped = OutermostVineBranchWrapper(gym.wrappers.TimeLimit, {"max_episode_steps": 7})(gym.make("CartPole-v1"))
    assert isinstance(wrapped, VineBranchWrapper) and isinstance(wrapped.env, gym.wrappers.TimeLimit)
    assert wrapped.env._max_episode_steps == 7
    assert isinstance(OutermostVineBranchWrapper()(gym.make("CartPole-v1")), VineBranchWrapper)
    from rl_zoo3 import exp_manager

    calls = []

    def fake_make_vec_env(env_id, n_envs=1, wrapper_class=None, vec_env_cls=None, wrapper_kwargs=None):
        calls.append({"wrapper_class": wrapper_class, "wrapper_kwargs": wrapper_kwargs})

    with mock.patch.object(exp_manager, "make_vec_env", fake_make_vec_env):
        with vine_branch_wrapper("trpo_vine"):
            exp_manager.make_vec_env(env_id="CartPole-v1", vec_env_cls=SubprocVecEnv, wrapper_class=None)
            exp_manager.make_vec_env(env_id="CartPole-v1", vec_env_cls=DummyVecEnv, wrapper_class=None)
        with vine_branch_wrapper("trpo_lstm"), vine_branch_wrapper("ppo"):
            exp_manager.make_vec_env(env_id="CartPole-v1", vec_env_cls=SubprocVecEnv, wrapper_class=None)
    assert isinstance(calls[0]["wrapper_class"], OutermostVineBranchWrapper)
    assert calls[1]["wrapper_class"] is None and calls[2]["wrapper_class"] is None


def test_find_earlier_version_block() -> None:
    blocks = ["default", "Hopper-v3", "Hopper-v4", "HopperBulletEnv-v0", "Ant-v4", "ALE/Pong-v4"]
    assert find_earlier_version_block("Hopper-v5", blocks) == "Hopper-v4"
    assert find_earlier_version_block("Hopper-v4", blocks) is None  # has its own block
    assert find_earlier_version_block("Hopper-v2", blocks) is None  # only later versions
    assert find_earlier_version_block("Walker2d-v5", blocks) is None
    assert find_earlier_version_block("ALE/Pong-v5", blocks) == "ALE/Pong-v4"
    assert find_earlier_version_block("NoVersion", blocks) is None


# ----------------------------------------------------------------------------------------- command line
def test_train_enjoy_and_load_helper(trained: Path) -> None:
    run_dir = trained / "trpo_ext" / "CartPole-v1_1"
    assert (run_dir / "CartPole-v1.zip").is_file()
    assert (run_dir / "CartPole-v1" / "vecnormalize.pkl").is_file()
    command = (run_dir / "CartPole-v1" / "command.txt").read_text()
    assert "sb3_trpo_ext.zoo train" in command

    out = check(
        run_zoo("enjoy", "--algo", "trpo_ext", "--env", "CartPole-v1", "-f", str(trained), "--no-render", "-n", "100",
                "--num-threads", "1")
    )  # fmt: skip
    assert "Loading running average" in out

    model, env = load_zoo_model("trpo_ext", "CartPole-v1", folder=trained)
    try:
        assert isinstance(model, TRPO)
        assert isinstance(env, VecNormalize)
        assert not env.training and not env.norm_reward
        saved = VecNormalize.load(str(run_dir / "CartPole-v1" / "vecnormalize.pkl"), env.venv)
        assert env.obs_rms.count == saved.obs_rms.count > 0
        assert (env.obs_rms.mean == saved.obs_rms.mean).all()
        obs = env.reset()
        action, _ = model.predict(obs, deterministic=True)
        assert env.action_space.contains(action[0])
    finally:
        env.close()


def _without_display() -> dict[str, str]:
    """The environment of a machine with no display: no DISPLAY, WAYLAND_DISPLAY or MUJOCO_GL."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MUJOCO_GL")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return env


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="an unset DISPLAY means no display only on Linux")
def test_enjoy_without_a_display_runs_without_rendering(tmp_path: Path) -> None:
    """MuJoCo's viewer aborted the process (glfwGetVideoMode assertion, status 134) with no display: enjoy now
    adds the Zoo's --no-render and says so in one line."""
    pytest.importorskip("mujoco")
    check(
        run_zoo("train", "--algo", "trpo_ext", "--env", "Hopper-v5", "-n", "256", "-f", str(tmp_path), *FAST,
                "-params", "n_steps:128", "batch_size:128", cwd=tmp_path)
    )  # fmt: skip
    result = run_zoo(
        "enjoy", "--algo", "trpo_ext", "--env", "Hopper-v5", "-f", str(tmp_path), "-n", "20", "--num-threads", "1",
        cwd=tmp_path, env=_without_display(),
    )  # fmt: skip
    check(result)
    notes = [line for line in result.stderr.splitlines() if "--no-render" in line]
    assert len(notes) == 1 and "no display" in notes[0], result.stderr
    assert "GLFWError" not in result.stderr and "Traceback" not in result.stderr


def test_enjoy_names_the_missing_folder_or_the_runs_there(trained: Path, tmp_path: Path, capsys) -> None:
    """The Zoo's AssertionError traceback ("The ... folder was not found") becomes one line, status 2."""
    base = ["enjoy", "--algo", "trpo_ext", "--env", "CartPole-v1", "--no-render"]
    cases = [
        (["-f", str(tmp_path / "nope")], [str(tmp_path / "nope"), "does not exist"]),
        (["-f", str(trained), "--exp-id", "7"], ["CartPole-v1_7", "CartPole-v1_1"]),
        (["-f", str(tmp_path)], [str(tmp_path), "no trpo_ext runs"]),
    ]
    for extra, expected in cases:
        with pytest.raises(SystemExit) as exit_info:
            main([*base, *extra])
        assert exit_info.value.code == 2, extra
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and all(text in lines[0] for text in expected), (extra, lines)
    with pytest.raises(SystemExit) as exit_info:  # runs of that algo, but none on this env: name those there
        main(["enjoy", "--algo", "trpo_ext", "--env", "Pendulum-v1", "-f", str(trained), "--no-render"])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "Pendulum-v1" in line and "CartPole-v1_1" in line


def test_record_video_and_plot_train(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    headless = {**os.environ, "SDL_VIDEODRIVER": "dummy", "MPLBACKEND": "Agg"}
    headless["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    check(
        run_zoo("record_video", "--algo", "trpo_ext", "--env", "CartPole-v1", "-f", str(trained), "-n", "30",
                "-o", str(tmp_path / "videos"), env=headless)
    )  # fmt: skip
    assert list((tmp_path / "videos").rglob("*.mp4"))

    # rl_zoo3's plot_train draws into a pyplot figure and calls plt.show() (it saves nothing): run it in this
    # process and catch that figure at show() time.
    from matplotlib import pyplot as plt

    plt.switch_backend("agg")
    plt.close("all")
    shown: list[tuple[plt.Figure, Path]] = []

    def show(*args: object, **kwargs: object) -> None:
        for number in plt.get_fignums():
            figure = plt.figure(number)
            path = tmp_path / f"figure_{number}.png"
            figure.savefig(path)
            shown.append((figure, path))

    monkeypatch.setattr(plt, "show", show)
    try:
        # -w 10: the default 100-episode window draws nothing for a run with fewer episodes
        main(["plot_train", "--algo", "trpo_ext", "--env", "CartPole-v1", "-f", str(trained), "-w", "10"])
        assert len(shown) == 1, "plot_train showed no figure"
        figure, path = shown[0]
        (axes,) = figure.axes
        assert axes.get_ylabel() == "Training Episodic Reward"
        lines = axes.get_lines()
        assert [line.get_label() for line in lines] == ["CartPole-v1_1"]
        x, y = lines[0].get_data()
        assert len(x) == len(y) > 0
        assert all(math.isfinite(value) and value > 0 for value in y)  # CartPole: every episode earns >= 1
        assert path.stat().st_size > 0
    finally:
        plt.close("all")


def test_train_peer_algo_through_same_command(tmp_path: Path) -> None:
    out = check(run_zoo("train", "--algo", "ppo", "--env", "CartPole-v1", "-n", "512", "-f", str(tmp_path), *FAST))
    assert "rl_zoo3/hyperparams/ppo.yml" in out.replace(os.sep, "/")
    assert (tmp_path / "ppo" / "CartPole-v1_1" / "CartPole-v1.zip").is_file()


def test_peer_falls_back_to_earlier_version_block(tmp_path: Path) -> None:
    pytest.importorskip("mujoco")
    import rl_zoo3

    zoo_ppo = yaml.safe_load((Path(rl_zoo3.__file__).parent / "hyperparams" / "ppo.yml").read_text())
    assert "Hopper-v5" not in zoo_ppo and "Hopper-v4" in zoo_ppo
    out = check(
        run_zoo("train", "--algo", "ppo", "--env", "Hopper-v5", "-n", "64", "-f", str(tmp_path), *FAST, cwd=tmp_path)
    )
    assert "has no Hopper-v5 block: using its Hopper-v4 block for --algo ppo" in out
    config = yaml.load(
        (tmp_path / "ppo" / "Hopper-v5_1" / "Hopper-v5" / "config.yml").read_text(), Loader=yaml.UnsafeLoader
    )
    expected = zoo_ppo["Hopper-v4"]
    for key in ("learning_rate", "n_steps", "batch_size", "gamma", "ent_coef", "normalize"):
        assert config[key] == expected[key], key
    assert "Using 'default' hyperparameters" not in out


def test_unknown_algo_lists_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("train", "enjoy"):  # ours, then the Zoo's own parser (its choices include our key)
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--algo", "nope", "--env", "CartPole-v1", "-f", str(tmp_path)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "'nope'" in err
        for key in ("trpo_ext", "trpo", "ppo", "td3", "ddpg"):
            assert f"{key}," in err or f"'{key}'" in err or err.rstrip().endswith(key), key


def test_unknown_env_says_so(tmp_path: Path) -> None:
    result = run_zoo("train", "--algo", "trpo_ext", "--env", "NoSuchEnv-v1", "-f", str(tmp_path))
    assert result.returncode == 2
    assert "unknown environment id 'NoSuchEnv-v1'" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_yaml_key_names_key_and_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "my_trpo.yml"
    conf.write_text(yaml.safe_dump({"CartPole-v1": {"n_timesteps": 1000, "policy": "MlpPolicy", "clip_range": 0.2}}))
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--algo", "trpo_ext", "--env", "CartPole-v1", "-conf", str(conf), "-f", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "'clip_range'" in err and str(conf) in err and "CartPole-v1" in err

    with pytest.raises(SystemExit):
        main(["train", "--algo", "trpo_ext", "--env", "CartPole-v1", "-f", str(tmp_path), "-params", "n_epochs:3"])
    err = capsys.readouterr().err
    assert "'n_epochs'" in err and "--hyperparams" in err


def test_usage_and_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--help"])
    out = capsys.readouterr().out
    assert "train" in out and "trpo_ext" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["fly"])
    assert exit_info.value.code == 2
    assert "unknown command 'fly'" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- hyperparameter file
def _blocks() -> list[str]:
    return list(yaml.safe_load(YAML_PATH.read_text()))


def _algo_blocks() -> list[tuple[str, str]]:
    """(our key, block) for every block of every one of our hyperparameter files."""
    return [(algo, block) for algo in ZOO_ALGORITHMS for block in yaml.safe_load(hyperparams_path(algo).read_text())]


def test_yaml_has_required_blocks() -> None:
    blocks = set(_blocks())
    required = {"default", "atari", "CartPole-v1", "Acrobot-v1", "Pendulum-v1", "MountainCarContinuous-v0",
                "LunarLander-v3", "LunarLanderContinuous-v3"}  # fmt: skip
    required |= {f"{task}-v5" for task in ("Hopper", "HalfCheetah", "Walker2d", "Swimmer", "Ant", "InvertedPendulum",
                                          "InvertedDoublePendulum", "Reacher")}  # fmt: skip
    assert required <= blocks


def test_vine_yaml_has_required_blocks() -> None:
    blocks = set(yaml.safe_load(hyperparams_path("trpo_vine").read_text()))
    assert {"default", "CartPole-v1", "Acrobot-v1", "Pendulum-v1", "Hopper-v5", "HalfCheetah-v5"} <= blocks


@pytest.mark.parametrize(("algo", "block"), _algo_blocks())
def test_every_yaml_block_builds_a_model(
    algo: str, block: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Zoo's own ExperimentManager reads the block, builds the environment and our model (no training)."""
    from rl_zoo3.exp_manager import ExperimentManager

    monkeypatch.chdir(tmp_path)  # MuJoCo writes MUJOCO_LOG.TXT into the working directory

    register()
    config_path = hyperparams_path(algo)
    config = yaml.safe_load(config_path.read_text())
    if block == "atari":
        pytest.importorskip("ale_py")
        gym.register_envs(__import__("ale_py"))
        env_id = "PongNoFrameskip-v4"
    elif block == "default":
        env_id = "MountainCar-v0"
        assert env_id not in config
    else:
        env_id = block
    gym.make(env_id).close()  # Box2D's LunarLander included: the test extra installs gymnasium[box2d]
    manager = ExperimentManager(
        argparse.Namespace(),
        algo,
        env_id,
        str(tmp_path),
        eval_freq=-1,
        n_timesteps=0,
        config=str(config_path),
        verbose=0,
        seed=0,
    )
    model, _ = manager.setup_experiment()
    try:
        assert type(model) is ZOO_ALGORITHMS[algo].algo_class
        block_values = config[block]
        if not isinstance(model, TRPO):  # ppo_mask: sb3-contrib's MaskablePPO, registered by us
            assert model.n_steps == block_values.get("n_steps", model.n_steps)
            return
        for key in (
            "n_steps",
            "batch_size",
            "target_kl",
            "cg_damping",
            "gamma",
            "use_sde",
            "vine_n_states",
            "vine_horizon",
        ):
            if key in block_values:
                assert getattr(model, key) == block_values[key], key
        assert model.sampling == ("vine" if algo == "trpo_vine" else "single_path")
        assert (model._vine is not None) == (algo == "trpo_vine")
        assert model.n_envs == block_values.get("n_envs", 1)
        if block_values.get("normalize"):
            assert model.get_vec_normalize_env() is not None
    finally:
        model.env.close()


# ------------------------------------------------------------------------------------------------- Optuna
@pytest.mark.parametrize("algo", list(ZOO_ALGORITHMS))
@pytest.mark.parametrize(("env_id", "n_envs"), [("CartPole-v1", 1), ("Pendulum-v1", 1), ("Pendulum-v1", 4)])
def test_sampler_only_valid_combinations(env_id: str, n_envs: int, algo: str) -> None:
    """Whatever a trial samples, for this environment and n_envs: our TRPO accepts it (its validation runs in
    the constructor, vine's environment check included), without a warning; every critic minibatch is full; the model gets exactly the sampled
    values; and the converter (``--trial-id``) rebuilds them from the stored trial parameters."""
    entry = ZOO_ALGORITHMS[algo]
    if entry.masked and env_id != "CartPole-v1":
        pytest.skip("masked algorithms take discrete actions only")
    policy = "MlpLstmPolicy" if "MlpLstmPolicy" in entry.algo_class.policy_aliases else "MlpPolicy"  # trpo_lstm
    env = make_vec_env(env_id, n_envs=n_envs, seed=0)
    n_actions = env.action_space.shape[0] if isinstance(env.action_space, gym.spaces.Box) else 0
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=n_envs + n_actions))
    try:
        for _ in range(60):
            trial = study.ask()
            params = entry.sampler(trial, n_actions=n_actions, n_envs=n_envs, additional_args={})
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                model = entry.algo_class(policy, env, device="cpu", **params)
            buffer_size = model.n_steps * model.n_envs
            assert model.n_envs == n_envs
            ours = isinstance(model, TRPO)  # ppo_mask samples with the Zoo's own PPO sampler, as `ppo` does
            assert buffer_size % model.batch_size == 0 or not ours, (model.n_steps, model.batch_size, n_envs)
            trpo_keys = ("target_kl", "cg_damping", "cg_max_steps") if ours else ()
            for key in ("n_steps", "batch_size", "gamma", "gae_lambda", *trpo_keys):
                if key in params or algo != "trpo_lstm":  # trpo_lstm keeps the block's gamma
                    assert getattr(model, key) == params[key], key
            if algo == "trpo_lstm":
                assert model.policy.lstm_actor.hidden_size == params["policy_kwargs"]["lstm_hidden_size"]
            assert entry.converter(trial.params) == params
            assert getattr(model, "sampling", "single_path") == ("vine" if algo == "trpo_vine" else "single_path")
            for key, value in trial.user_attrs.items():  # what the study displays is what was trained
                assert params[key] == value, key
            study.tell(trial, 0.0)
    finally:
        env.close()


def test_optimize_two_trials_in_sqlite(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    check(
        run_zoo(
            "train", "--algo", "trpo_ext", "--env", "CartPole-v1", "-n", "1024", "-f", str(tmp_path),
            "-optimize", "--n-trials", "2", "--n-evaluations", "1", "--no-optim-plots",
            "--storage", storage, "--study-name", "zoo-test", "--num-threads", "1", "--seed", "0",
        )
    )  # fmt: skip
    study = optuna.load_study(study_name="zoo-test", storage=storage)
    finished = [
        t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    assert len(finished) == 2
    assert {"n_steps_pow", "critic_minibatches_pow", "target_kl", "cg_damping"} <= set(study.trials[0].params)


def _optimize(tmp_path: Path, storage: str, study: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_zoo(
        "train", "--algo", "trpo_lstm", "--env", "CartPoleNoVel-v1", "-n", "256", "-f", str(tmp_path / study),
        "-optimize", "--n-trials", "2", "--n-evaluations", "2", "--no-optim-plots", "--storage", storage,
        "--study-name", study, "--num-threads", "1", "--seed", "0", "--hyperparams", "n_envs:1", *extra,
    )  # fmt: skip


def test_optimize_trains_each_trial_on_the_given_seeds_reproducibly(tmp_path: Path) -> None:
    """Issue 26: every trial of our keys trains once per seed of --trial-seeds, scores their mean, and stores
    the seeds and per-seed scores; the same command gives the same study (the Zoo's own objective is unseeded);
    the trpo_lstm sampler's LSTM size is merged into the block's policy_kwargs, in the objective and for
    --trial-id."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    for study in ("a", "b"):
        check(_optimize(tmp_path, storage, study, "--trial-seeds", "3", "7"))
    trials = {name: optuna.load_study(study_name=name, storage=storage).trials for name in ("a", "b")}
    for trial in trials["a"]:
        assert trial.user_attrs["seeds"] == [3, 7]
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert trial.value == pytest.approx(sum(trial.user_attrs["seed_scores"]) / 2)
    assert [(t.params, t.value, t.user_attrs) for t in trials["a"]] == [
        (t.params, t.value, t.user_attrs) for t in trials["b"]
    ]
    # --trial-id 1 (the Zoo skips a falsy id 0): the block's policy_kwargs with the trial's LSTM size
    check(
        run_zoo(
            "train", "--algo", "trpo_lstm", "--env", "CartPoleNoVel-v1", "-n", "64", "-f", str(tmp_path / "best"),
            "--storage", storage, "--study-name", "a", "--trial-id", "1", "--hyperparams", "n_envs:1",
            "n_steps:64", "batch_size:32", "--num-threads", "1",
        )
    )  # fmt: skip
    config = yaml.load(next((tmp_path / "best").rglob("config.yml")).read_text(), Loader=yaml.UnsafeLoader)
    policy_kwargs = dict(config)["policy_kwargs"]
    assert f"'lstm_hidden_size': {trials['a'][1].params['lstm_hidden_size']}" in policy_kwargs
    assert "net_arch=dict(pi=[64], vf=[64])" in policy_kwargs  # the block's stay


def test_zoo_names_the_seeded_manager_overrides() -> None:
    """docs/private_api.md (zoo/optimize.py): what the seeded manager overrides and reads is still the Zoo's."""
    import inspect

    from rl_zoo3.callbacks import TrialEvalCallback
    from rl_zoo3.exp_manager import ExperimentManager

    assert list(inspect.signature(ExperimentManager.objective).parameters) == ["self", "trial"]
    assert list(inspect.signature(ExperimentManager.load_trial).parameters) == [
        "self", "storage", "study_name", "trial_id", "convert"
    ]  # fmt: skip
    assert list(inspect.signature(ExperimentManager.read_hyperparameters).parameters) == ["self"]
    assert list(inspect.signature(ExperimentManager.create_envs).parameters) == ["self", "n_envs", "eval_env", "no_log"]
    source = inspect.getsource(ExperimentManager)
    for name in ("_hyperparams", "n_actions", "n_evaluations", "n_eval_envs", "n_eval_episodes", "deterministic_eval",
                 "specified_callbacks"):  # fmt: skip
        assert f"self.{name} =" in source, name
    assert "self.eval_idx" in inspect.getsource(TrialEvalCallback)


def test_trial_seeds_flag_is_checked() -> None:
    assert trial_seeds_flag(["--algo", "x", "--trial-seeds", "4", "5", "-n", "3"]) == (
        ["--algo", "x", "-n", "3"],
        (4, 5),
    )
    assert trial_seeds_flag(["--algo", "x"]) == (["--algo", "x"], None)
    for bad in (["--trial-seeds"], ["--trial-seeds", "a"], ["--trial-seeds", "1", "1"], ["--trial-seeds", "-1"]):
        with pytest.raises(ValueError, match="--trial-seeds"):
            trial_seeds_flag(bad)
    done = run_zoo("train", "--algo", "trpo_lstm", "--env", "CartPoleNoVel-v1", "--trial-seeds", "1")
    assert done.returncode == 2 and "add -optimize" in done.stderr


# ---------------------------------------------------------------------------------------------------- hub
def test_push_and_load_from_hub_packaging(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """push_to_hub and load_from_hub through our command, with every network call mocked."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    monkeypatch.chdir(tmp_path)  # push_to_hub stages the repository in ./hub/
    repo_id = "someone/trpo_ext-CartPole-v1"

    def fake_snapshot(self, repo_id: str, local_dir: Path, **kwargs) -> str:
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        return str(local_dir)

    with (
        mock.patch.object(huggingface_hub.HfApi, "create_repo", return_value=f"https://huggingface.co/{repo_id}") as create,
        mock.patch.object(huggingface_hub.HfApi, "snapshot_download", autospec=True, side_effect=fake_snapshot) as snapshot,
        mock.patch.object(huggingface_hub.HfApi, "upload_folder") as upload,
    ):  # fmt: skip
        main(["push_to_hub", "--algo", "trpo_ext", "--env", "CartPole-v1", "-f", str(trained), "-orga", "someone",
              "--no-render", "--num-threads", "1"])  # fmt: skip
    create.assert_called_once()
    assert create.call_args.kwargs["repo_id"] == repo_id
    snapshot.assert_called_once()
    upload.assert_called_once()
    staged = Path(upload.call_args.kwargs["folder_path"])
    assert upload.call_args.kwargs["repo_id"] == repo_id
    for name in ("trpo_ext-CartPole-v1.zip", "config.yml", "args.yml", "env_kwargs.yml", "results.json",
                 "train_eval_metrics.zip", "vec_normalize.pkl", "README.md"):  # fmt: skip
        assert (staged / name).is_file(), name
    card = (staged / "README.md").read_text()
    assert "sb3-trpo-ext" in card and "sb3_trpo_ext.TRPO" in card
    assert "python -m sb3_trpo_ext.zoo enjoy --algo trpo_ext --env CartPole-v1" in card
    assert "rl_zoo3.enjoy --algo trpo_ext" not in card and "rl_zoo3.load_from_hub" not in card
    assert card.startswith("---") and "mean_reward" in card  # metadata header (hub widgets)
    header = yaml.safe_load(card.split("---")[1])
    assert {"sb3-trpo-ext", "trpo", "CartPole-v1"} <= set(header["tags"])

    # load_from_hub: serve the staged files; a missing file is huggingface_hub's EntryNotFoundError.

    def fake_download(repo_id: str, filename: str, **kwargs) -> str:
        path = staged / filename
        if not path.is_file():
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(path)

    monkeypatch.setenv("TRUST_REMOTE_CODE", "True")
    downloaded = tmp_path / "downloaded"
    with mock.patch.object(huggingface_hub, "hf_hub_download", side_effect=fake_download) as download:
        main(["load_from_hub", "--algo", "trpo_ext", "--env", "CartPole-v1", "-orga", "someone", "-f", str(downloaded)])
    assert download.call_count >= 5
    run = downloaded / "trpo_ext" / "CartPole-v1_1"
    assert (run / "CartPole-v1.zip").is_file() and (run / "CartPole-v1" / "config.yml").is_file()
    assert (run / "CartPole-v1" / "vecnormalize.pkl").is_file()
    model, env = load_zoo_model("trpo_ext", "CartPole-v1", folder=downloaded)
    env.close()
    assert isinstance(model, TRPO) and isinstance(env, VecNormalize)

    # rl_zoo3.load_from_hub expects requests' HTTPError for a missing vec_normalize.pkl (no normalization):
    # under our command, huggingface_hub's EntryNotFoundError is translated.
    import huggingface_sb3
    import requests

    with (
        mock.patch.object(huggingface_hub, "hf_hub_download", side_effect=fake_download),
        hub_compat._hub_compat("trpo_ext", None),
        pytest.raises(requests.exceptions.HTTPError) as raised,
    ):
        huggingface_sb3.load_from_hub(repo_id, "no_such_file.pkl")
    assert isinstance(raised.value, EntryNotFoundError)  # still what a fixed rl_zoo3 would catch


def _import_zoo_push_script() -> bool:
    """Whether ``rl_zoo3.push_to_hub`` imports (False: the ImportError of its ``generate_metadata`` import)."""
    sys.modules.pop("rl_zoo3.push_to_hub", None)
    try:
        importlib.import_module("rl_zoo3.push_to_hub")
    except ImportError as error:
        assert "generate_metadata" in str(error), error
        return False
    finally:
        sys.modules.pop("rl_zoo3.push_to_hub", None)
    return True


def test_hub_fixes_applied_exactly_where_upstream_is_broken() -> None:
    """The generate_metadata gate agrees with the real thing: rl_zoo3.push_to_hub fails to import without
    the shim iff the gate says it is needed, and imports under our context; everything is restored after."""
    import huggingface_sb3

    hf_push = importlib.import_module("huggingface_sb3.push_to_hub")
    needed = hub_compat._needs_generate_metadata_shim(hf_push)
    original_load = huggingface_sb3.load_from_hub
    assert _import_zoo_push_script() is not needed
    with hub_compat._hub_compat("trpo_ext", "CartPole-v1"):
        assert _import_zoo_push_script()
        metadata = hf_push.generate_metadata("TRPO", "CartPole-v1", 500.0, 0.0)
        assert isinstance(metadata, dict) and "CartPole-v1" in metadata["tags"]
        translated = huggingface_sb3.load_from_hub is not original_load
        assert translated is hub_compat._needs_missing_entry_translation()
    assert hasattr(hf_push, "generate_metadata") is not needed
    assert huggingface_sb3.load_from_hub is original_load


def test_hub_fixes_not_applied_when_upstream_is_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the upstream behaviour the fixes exist for (an installed generate_metadata as in huggingface-sb3 <= 3.0,
    a missing-file error that is requests' HTTPError as in huggingface_hub 0.x), nothing of theirs is patched."""
    import huggingface_sb3
    import requests
    from huggingface_hub import errors

    hf_push = importlib.import_module("huggingface_sb3.push_to_hub")

    def upstream_generate_metadata(model_name: str, env_id: str, mean_reward: float, std_reward: float) -> dict:
        return {"tags": [env_id]}

    class HttpEntryNotFoundError(requests.exceptions.HTTPError, errors.EntryNotFoundError):
        pass

    monkeypatch.setattr(hf_push, "generate_metadata", upstream_generate_metadata, raising=False)
    monkeypatch.setattr(errors, "RemoteEntryNotFoundError", HttpEntryNotFoundError, raising=False)
    assert not hub_compat._needs_generate_metadata_shim(hf_push)
    assert not hub_compat._needs_missing_entry_translation()
    original_load = huggingface_sb3.load_from_hub
    with hub_compat._hub_compat("trpo_ext", "CartPole-v1"):
        assert hf_push.generate_metadata is upstream_generate_metadata
        assert huggingface_sb3.load_from_hub is original_load
    assert hf_push.generate_metadata is upstream_generate_metadata


# ------------------------------------------------------------------------------------------------ wheel
def _build_wheel(dest: Path) -> Path:
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    result = subprocess.run([*pip, "wheel", "--no-deps", str(ROOT), "-w", str(dest)], capture_output=True, text=True)
    if result.returncode != 0:
        try:
            import hatchling  # noqa: F401
        except ImportError:
            pytest.skip(f"cannot build the wheel (isolated build failed, no hatchling here): {result.stderr[-500:]}")
        result = subprocess.run(
            [*pip, "wheel", "--no-deps", "--no-build-isolation", str(ROOT), "-w", str(dest)],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
    return next(dest.glob("sb3_trpo_ext-*.whl"))


def test_wheel_ships_hyperparams_and_trains_from_install(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    for key, entry in ZOO_ALGORITHMS.items():
        assert f"sb3_trpo_ext/hyperparams/{entry.hyperparams_file}" in names, key
    assert (
        "sb3-trpo-zoo = sb3_trpo_ext.zoo:main"
        in zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    )

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "-q", "install", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    work = tmp_path / "work"  # not the source tree
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = check(
        run_zoo("train", "--algo", "trpo_ext", "--env", "CartPole-v1", "-n", "1024", "-f", str(work / "logs"), *FAST,
                cwd=work, env=env)
    )  # fmt: skip
    shipped = target / "sb3_trpo_ext" / "hyperparams" / "trpo_ext.yml"
    assert f"Loading hyperparameters from: {shipped}" in out
    assert (work / "logs" / "trpo_ext" / "CartPole-v1_1" / "CartPole-v1.zip").is_file()
    shutil.rmtree(target)
