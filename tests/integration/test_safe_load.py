"""Safe loading (issue 17): no load path runs code from a file by default, and every ordinary checkpoint loads.

A payload is a ``__reduce__`` (or a hand-written pickle chain) that creates a marker file: the marker must never
appear unless the caller passed ``trusted=True``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
import torch as th
import yaml
from gymnasium import spaces
from stable_baselines3 import A2C, PPO, TD3
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.utils import LinearSchedule, get_linear_fn
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_trpo_ext import TRPO, UnsafeCheckpointError, add_safe_globals, safe_load
from sb3_trpo_ext.safe_load import RestrictedUnpickler, load_model, load_policy_file, load_vec_normalize
from sb3_trpo_ext.trpo.policies import MlpPolicy
from sb3_trpo_ext.zoo import load_zoo_model

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(net_arch=[8])
FAST = dict(n_steps=32, batch_size=32, policy_kwargs=SMALL, seed=0)

# ------------------------------------------------------------------------------------------ the allowlist
#: The reviewed allowlist, written out: a change to SAFE_GLOBALS must change this list too (and show in review).
EXPECTED_SAFE_GLOBALS = {
    ("collections", "OrderedDict"),
    ("collections", "deque"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy", "float32"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy.random._pickle", "__generator_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pcg64", "PCG64"),
    ("numpy.random.bit_generator", "SeedSequence"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    ("torch", "device"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("gymnasium.spaces.box", "Box"),
    ("gymnasium.spaces.discrete", "Discrete"),
    ("gymnasium.spaces.multi_discrete", "MultiDiscrete"),
    ("gymnasium.spaces.multi_binary", "MultiBinary"),
    ("gymnasium.spaces.dict", "Dict"),
    ("stable_baselines3.common.utils", "FloatSchedule"),
    ("stable_baselines3.common.utils", "LinearSchedule"),
    ("stable_baselines3.common.utils", "ConstantSchedule"),
    ("rl_zoo3.utils", "SimpleLinearSchedule"),
    ("stable_baselines3.common.policies", "BasePolicy._dummy_schedule"),
    ("torch.nn.modules.activation", "Tanh"),
    ("torch.nn.modules.activation", "ReLU"),
    ("torch.nn.modules.activation", "ELU"),
    ("torch.nn.modules.activation", "LeakyReLU"),
    ("torch.nn.modules.activation", "SiLU"),
    ("torch.nn.modules.activation", "GELU"),
    ("torch.nn.modules.activation", "Sigmoid"),
    ("torch.nn.modules.activation", "Softplus"),
    ("torch.nn.modules.activation", "Mish"),
    ("torch.nn.modules.activation", "SELU"),
    ("torch.optim.adam", "Adam"),
    ("torch.optim.adamw", "AdamW"),
    ("torch.optim.rmsprop", "RMSprop"),
    ("torch.optim.sgd", "SGD"),
    ("stable_baselines3.common.policies", "ActorCriticPolicy"),
    ("stable_baselines3.common.policies", "ActorCriticCnnPolicy"),
    ("stable_baselines3.common.policies", "MultiInputActorCriticPolicy"),
    ("stable_baselines3.td3.policies", "TD3Policy"),
    ("stable_baselines3.td3.policies", "CnnPolicy"),
    ("stable_baselines3.td3.policies", "MultiInputPolicy"),
    ("stable_baselines3.sac.policies", "SACPolicy"),
    ("stable_baselines3.sac.policies", "CnnPolicy"),
    ("stable_baselines3.sac.policies", "MultiInputPolicy"),
    ("stable_baselines3.dqn.policies", "DQNPolicy"),
    ("stable_baselines3.dqn.policies", "CnnPolicy"),
    ("stable_baselines3.dqn.policies", "MultiInputPolicy"),
    ("stable_baselines3.common.torch_layers", "FlattenExtractor"),
    ("stable_baselines3.common.torch_layers", "NatureCNN"),
    ("stable_baselines3.common.torch_layers", "CombinedExtractor"),
    ("stable_baselines3.common.buffers", "RolloutBuffer"),
    ("stable_baselines3.common.buffers", "DictRolloutBuffer"),
    ("stable_baselines3.common.buffers", "ReplayBuffer"),
    ("stable_baselines3.common.buffers", "DictReplayBuffer"),
    ("stable_baselines3.her.her_replay_buffer", "HerReplayBuffer"),
    ("stable_baselines3.her.goal_selection_strategy", "GoalSelectionStrategy"),
    ("stable_baselines3.common.noise", "NormalActionNoise"),
    ("stable_baselines3.common.noise", "OrnsteinUhlenbeckActionNoise"),
    ("stable_baselines3.common.type_aliases", "TrainFreq"),
    ("stable_baselines3.common.type_aliases", "TrainFrequencyUnit"),
    ("stable_baselines3.common.vec_env.vec_normalize", "VecNormalize"),
    ("stable_baselines3.common.running_mean_std", "RunningMeanStd"),
    ("sb3_contrib.common.recurrent.policies", "RecurrentActorCriticPolicy"),
    ("sb3_contrib.common.recurrent.policies", "RecurrentActorCriticCnnPolicy"),
    ("sb3_contrib.common.recurrent.policies", "RecurrentMultiInputActorCriticPolicy"),
    ("sb3_contrib.common.recurrent.buffers", "RecurrentRolloutBuffer"),
    ("sb3_contrib.common.recurrent.buffers", "RecurrentDictRolloutBuffer"),
    ("sb3_contrib.common.maskable.policies", "MaskableActorCriticPolicy"),
    ("sb3_contrib.common.maskable.policies", "MaskableActorCriticCnnPolicy"),
    ("sb3_contrib.common.maskable.policies", "MaskableMultiInputActorCriticPolicy"),
    ("sb3_contrib.common.maskable.buffers", "MaskableRolloutBuffer"),
    ("sb3_contrib.common.maskable.buffers", "MaskableDictRolloutBuffer"),
    ("sb3_trpo_ext.trpo.policies", "MlpPolicy"),
    ("sb3_trpo_ext.trpo.policies", "CnnPolicy"),
    ("sb3_trpo_ext.trpo.policies", "MultiInputPolicy"),
    ("sb3_trpo_ext.common.vine", "VineRolloutBuffer"),
    ("sb3_trpo_ext.common.vine", "DictVineRolloutBuffer"),
    ("sb3_trpo_ext.maskable.policies", "MaskableMlpPolicy"),
    ("sb3_trpo_ext.maskable.policies", "MaskableCnnPolicy"),
    ("sb3_trpo_ext.maskable.policies", "MaskableMultiInputPolicy"),
    ("sb3_trpo_ext.maskable.vine", "MaskableVineRolloutBuffer"),
    ("sb3_trpo_ext.maskable.vine", "MaskableDictVineRolloutBuffer"),
    ("sb3_trpo_ext.recurrent.policies", "MlpLstmPolicy"),
    ("sb3_trpo_ext.recurrent.policies", "CnnLstmPolicy"),
    ("sb3_trpo_ext.recurrent.policies", "MultiInputLstmPolicy"),
}

#: Globals that turn an allowlist into ``os.system`` in a step or two: none may ever be admitted.
GADGETS = [
    ("builtins", "getattr"),
    ("builtins", "__import__"),
    ("builtins", "eval"),
    ("builtins", "exec"),
    ("builtins", "compile"),
    ("builtins", "open"),
    ("os", "system"),
    ("posix", "system"),
    ("subprocess", "Popen"),
    ("cloudpickle.cloudpickle", "subimport"),
    ("cloudpickle.cloudpickle", "_make_function"),
    ("cloudpickle.cloudpickle", "_builtin_type"),
    ("cloudpickle.cloudpickle", "_make_skeleton_class"),
    ("types", "CodeType"),
    ("types", "FunctionType"),
    ("operator", "attrgetter"),
    ("operator", "methodcaller"),
    ("gymnasium.envs.registration", "load_env_creator"),
    ("importlib", "import_module"),
    ("functools", "partial"),
    ("numpy", "load"),
    ("torch", "load"),
    ("torch.storage", "_load_from_bytes"),
    ("copyreg", "_reconstructor"),
]


def test_allowlist_is_the_reviewed_list() -> None:
    assert set(safe_load.SAFE_GLOBALS) == EXPECTED_SAFE_GLOBALS
    assert len(safe_load.SAFE_GLOBALS) == len(EXPECTED_SAFE_GLOBALS)


def test_checkpoint_loading_does_not_import_the_zoo() -> None:
    """One module per concern: the checkpoint unpickler imports neither our Zoo code nor rl_zoo3 (the Zoo's
    run-folder reading is sb3_trpo_ext.zoo.safe_config)."""
    code = (
        "import sys\n"
        "import sb3_trpo_ext.safe_load\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'rl_zoo3' or m.startswith('sb3_trpo_ext.zoo'))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_every_allowlisted_global_resolves_to_a_class_or_function() -> None:
    import importlib

    for module, name in sorted(safe_load.SAFE_GLOBALS):
        if module.startswith("numpy.core.") and int(np.__version__.split(".")[0]) >= 2:
            module = "numpy._core." + module[len("numpy.core.") :]
        obj: Any = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
        assert callable(obj) and not isinstance(obj, type(os)), (module, name)


@pytest.mark.parametrize(("module", "name"), GADGETS, ids=[f"{m}.{n}" for m, n in GADGETS])
def test_gadgets_are_refused(module: str, name: str) -> None:
    assert (module, name) not in safe_load.get_safe_globals()
    payload = f"c{module}\n{name}\n.".encode()  # protocol 0: GLOBAL, STOP
    unpickler = RestrictedUnpickler(io.BytesIO(payload), key="k")
    if (module, name) == ("builtins", "getattr"):
        getter = unpickler.load()  # a guard, refusing any name but allowlisted nested ones
        with pytest.raises(UnsafeCheckpointError, match="getattr"):
            getter(os, "system")
        return
    with pytest.raises(UnsafeCheckpointError) as info:
        unpickler.load()
    assert info.value.key == "k" and info.value.global_name == f"{module}.{name}"
    assert isinstance(info.value, pickle.UnpicklingError)


def test_numpy_1_names_load_under_numpy_2(recwarn: pytest.WarningsRecorder) -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    text = pickle.dumps(array, protocol=0)
    old = text.replace(b"numpy._core.", b"numpy.core.")
    assert b"numpy.core.multiarray" in old
    for payload in (text, old):
        np.testing.assert_array_equal(RestrictedUnpickler(io.BytesIO(payload), key="k").load(), array)
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


# ------------------------------------------------------------------------------------------- payloads
class Command:
    """A ``__reduce__`` payload: ``os.system(command)``."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


def _touch(marker: Path) -> str:
    return f"touch {marker}"


def _chains(marker: Path) -> dict[str, tuple[bytes, str]]:
    """Hand-written pickle chains -> (payload, the global that must be refused)."""
    cmd = _touch(marker).encode()
    return {
        "getattr_import": (
            b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR(S'" + cmd + b"'\ntR.",
            "builtins.__import__",
        ),
        "subimport": (
            b"cbuiltins\ngetattr\n(ccloudpickle.cloudpickle\nsubimport\n(S'os'\ntRS'system'\ntR(S'" + cmd + b"'\ntR.",
            "cloudpickle.cloudpickle.subimport",
        ),
        "attrgetter": (
            b"coperator\nattrgetter\n(S'system'\ntR(cimportlib\nimport_module\n(S'os'\ntRtR(S'" + cmd + b"'\ntR.",
            "operator.attrgetter",
        ),
        "load_env_creator": (
            b"cgymnasium.envs.registration\nload_env_creator\n(S'os:system'\ntR(S'" + cmd + b"'\ntR.",
            "gymnasium.envs.registration.load_env_creator",
        ),
    }


def _payloads(marker: Path) -> dict[str, tuple[bytes, str]]:
    direct = cloudpickle.dumps(Command(_touch(marker)))
    return {"direct": (direct, f"{os.system.__module__}.system"), **_chains(marker)}


def _rewrite_zip(path: Path, out: Path, *, data: dict[str, Any] | None = None, members: dict[str, bytes] | None = None):
    """Copy an SB3 zip, replacing ``data`` entries (raw JSON values) and whole members."""
    with zipfile.ZipFile(path) as source:
        contents = {name: source.read(name) for name in source.namelist()}
    if data:
        json_data = json.loads(contents["data"])
        json_data.update(data)
        contents["data"] = json.dumps(json_data).encode()
    contents.update(members or {})
    with zipfile.ZipFile(out, "w") as target:
        for name, blob in contents.items():
            target.writestr(name, blob)
    return out


def _serialized(payload: bytes) -> dict[str, str]:
    return {":type:": "<class 'object'>", ":serialized:": base64.b64encode(payload).decode()}


@pytest.fixture(scope="module")
def saved_trpo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("saved") / "trpo.zip"
    TRPO("MlpPolicy", "Pendulum-v1", **FAST).save(path)
    return path


def _policy_kwargs_with(payload: bytes) -> bytes:
    """``policy_kwargs`` = ``{"net_arch": [8], "extra": <payload>}``: the payload nested inside a dict."""
    return b"(dp0\nS'net_arch'\np1\n(lp2\nI8\nasS'extra'\np3\n" + payload[:-1] + b"s."  # protocol 0, by hand


ENTRIES = ["evil_extra_key", "observation_space", "policy_kwargs", "learning_rate"]


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("chain", ["direct", "getattr_import", "subimport", "attrgetter", "load_env_creator"])
def test_payload_in_data_never_runs(tmp_path: Path, saved_trpo: Path, entry: str, chain: str) -> None:
    marker = tmp_path / "pwned"
    payload, refused = _payloads(marker)[chain]
    if chain == "direct":
        payload = pickle.dumps(Command(_touch(marker)), protocol=0)
    if entry == "policy_kwargs":
        payload = _policy_kwargs_with(payload)
    evil = _rewrite_zip(saved_trpo, tmp_path / "evil.zip", data={entry: _serialized(payload)})
    for load in (
        lambda: TRPO.load(evil),
        lambda: TRPO.load(io.BytesIO(evil.read_bytes())),
        lambda: load_model(TRPO, evil),
        lambda: load_model(PPO, evil),  # a peer class through the same reader
    ):
        with pytest.raises(UnsafeCheckpointError) as info:
            load()
        assert not marker.exists()
        assert info.value.key == entry and info.value.global_name == refused
        message = str(info.value)
        assert entry in message and refused in message and "trusted=True" in message
        assert "safe_globals" in message or "custom_objects" in message
    TRPO.load(saved_trpo).set_parameters(str(evil))  # set_parameters reads only the .pth members
    assert not marker.exists()


def test_trusted_runs_the_direct_payload_so_the_gate_is_real(tmp_path: Path, saved_trpo: Path) -> None:
    marker = tmp_path / "pwned"
    evil = _rewrite_zip(
        saved_trpo, tmp_path / "evil.zip", data={"evil_extra_key": _serialized(_payloads(marker)["direct"][0])}
    )
    with pytest.raises(UnsafeCheckpointError):
        TRPO.load(evil)
    assert not marker.exists()
    TRPO.load(evil, trusted=True)
    assert marker.exists()


def test_payload_in_lr_schedule_is_skipped_never_unpickled(tmp_path: Path, saved_trpo: Path) -> None:
    marker = tmp_path / "pwned"
    evil = _rewrite_zip(
        saved_trpo, tmp_path / "evil.zip", data={"lr_schedule": _serialized(_payloads(marker)["direct"][0])}
    )
    model = TRPO.load(evil)
    assert not marker.exists()
    assert model.lr_schedule(1.0) == model.learning_rate  # rebuilt by SB3 from learning_rate


def test_payload_in_a_pth_member_is_refused_whatever_the_flag(tmp_path: Path, saved_trpo: Path) -> None:
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    th.save({"weight": Command(_touch(marker))}, buffer)
    evil = _rewrite_zip(saved_trpo, tmp_path / "evil.zip", members={"policy.pth": buffer.getvalue()})
    for load in (
        lambda: TRPO.load(evil),
        lambda: TRPO.load(evil, trusted=True),
        lambda: load_model(PPO, evil),
        lambda: TRPO.load(saved_trpo).set_parameters(str(evil)),
    ):
        with pytest.raises(UnsafeCheckpointError) as info:
            load()
        assert info.value.key == "policy.pth" and "system" in info.value.global_name
        assert not marker.exists()


def _policy_owner(family: str) -> Any:
    """A model whose policy class is one of ours: TRPO's, MaskableTRPO's or RecurrentTRPO's."""
    from sb3_trpo_ext import MaskableTRPO, RecurrentTRPO

    if family == "maskable":
        return MaskableTRPO("MlpPolicy", "Taxi-v4", n_steps=64, batch_size=64, seed=0)
    if family == "recurrent":
        return RecurrentTRPO("MlpLstmPolicy", "CartPole-v1", n_steps=64, batch_size=64, seed=0)
    return TRPO("MlpPolicy", "CartPole-v1", **FAST)


@pytest.mark.parametrize("family", ["mlp", "maskable", "recurrent"])
def test_payload_in_a_policy_file_is_refused(tmp_path: Path, family: str) -> None:
    """Our policy classes' own ``load`` refuses a payload and reads an ordinary ``policy.save`` file with the
    same predictions."""
    marker = tmp_path / "pwned"
    model = _policy_owner(family)
    policy_class = type(model.policy)
    path = tmp_path / "policy.pth"
    model.policy.save(str(path))
    saved = th.load(path, weights_only=False)
    saved["data"]["net_arch"] = Command(_touch(marker))
    th.save(saved, tmp_path / "evil.pth")
    with pytest.raises(UnsafeCheckpointError) as info:
        policy_class.load(str(tmp_path / "evil.pth"))
    assert "system" in info.value.global_name and not marker.exists()
    loaded = policy_class.load(str(path))
    obs = np.stack([model.observation_space.sample() for _ in range(5)])
    np.testing.assert_array_equal(
        loaded.predict(obs, deterministic=True)[0], model.policy.predict(obs, deterministic=True)[0]
    )


def test_payload_in_vecnormalize_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for chain, (payload, refused) in _payloads(marker).items():
        path = tmp_path / f"{chain}.pkl"
        path.write_bytes(payload)
        with pytest.raises(UnsafeCheckpointError) as info:
            load_vec_normalize(path, DummyVecEnv([lambda: gym.make("Pendulum-v1")]))
        assert info.value.global_name == refused and info.value.key == path.name
        assert not marker.exists()


@pytest.mark.filterwarnings("ignore:get_linear_fn\\(\\) is deprecated")  # the old schedule, on purpose
def test_learning_rate_function_is_refused_with_a_way_out(tmp_path: Path) -> None:
    for learning_rate in (lambda progress: 1e-3 * progress, get_linear_fn(1e-3, 1e-4, 0.5)):
        TRPO("MlpPolicy", "Pendulum-v1", learning_rate=learning_rate, **FAST).save(tmp_path / "lr.zip")
        with pytest.raises(UnsafeCheckpointError, match=r"custom_objects=\{'learning_rate'.*'lr_schedule'") as info:
            TRPO.load(tmp_path / "lr.zip")
        assert info.value.key == "learning_rate" and info.value.global_name.startswith("cloudpickle")
        model = TRPO.load(tmp_path / "lr.zip", custom_objects={"learning_rate": 2e-4})
        assert model.lr_schedule(0.5) == 2e-4


@pytest.mark.filterwarnings("ignore:get_linear_fn\\(\\) is deprecated")  # the old schedule, on purpose
def test_old_checkpoint_with_a_closure_lr_schedule_loads_without_a_flag(tmp_path: Path, saved_trpo: Path) -> None:
    """SB3 < 2.? saved ``lr_schedule`` as a closure (``get_schedule_fn``): skipped, rebuilt from learning_rate."""
    closure = get_linear_fn(3e-4, 3e-4, 1.0)
    old = _rewrite_zip(saved_trpo, tmp_path / "old.zip", data={"lr_schedule": _serialized(cloudpickle.dumps(closure))})
    model = TRPO.load(old)
    assert model.lr_schedule(1.0) == TRPO.load(saved_trpo).learning_rate


class OwnExtractorPolicy(MlpPolicy):
    """A user's own policy class: not on the allowlist."""


def test_safe_globals_and_add_safe_globals_admit_a_users_class(tmp_path: Path) -> None:
    TRPO(OwnExtractorPolicy, "CartPole-v1", **FAST).save(tmp_path / "own.zip")
    with pytest.raises(UnsafeCheckpointError, match="OwnExtractorPolicy") as info:
        TRPO.load(tmp_path / "own.zip")
    assert info.value.key == "policy_class"
    assert isinstance(TRPO.load(tmp_path / "own.zip", safe_globals=[OwnExtractorPolicy]).policy, OwnExtractorPolicy)
    with pytest.raises(UnsafeCheckpointError):  # safe_globals applied to that load only
        TRPO.load(tmp_path / "own.zip")
    before = set(safe_load._user_safe_globals)
    try:
        add_safe_globals([OwnExtractorPolicy])
        assert isinstance(TRPO.load(tmp_path / "own.zip").policy, OwnExtractorPolicy)
    finally:
        safe_load._user_safe_globals.clear()
        safe_load._user_safe_globals.update(before)


# -------------------------------------------------------------------------------------------- Zoo folders
def _zoo_folder(root: Path, algo: str, env_id: str, model: Any, *, vecnormalize: VecNormalize | None = None,
                config: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """A Zoo run folder as ``train`` writes it (OrderedDict YAML dumps, vecnormalize.pkl)."""
    run = root / algo / f"{env_id}_1"
    (run / env_id).mkdir(parents=True)
    model.save(run / f"{env_id}.zip")
    saved = OrderedDict(config or [("normalize", vecnormalize is not None), ("policy", "MlpPolicy")])
    (run / env_id / "config.yml").write_text(yaml.dump(saved))
    args = OrderedDict([("algo", algo), ("env", env_id), ("env_kwargs", None), ("seed", 0)])
    (run / env_id / "args.yml").write_text(yaml.dump(args))
    if vecnormalize is not None:
        vecnormalize.save(str(run / env_id / "vecnormalize.pkl"))
    return root


@pytest.mark.parametrize(
    ("config", "refused"),
    [
        ({"normalize": False, "policy": "MlpPolicy", "x": "!!python/object/apply:os.system ['touch {marker}']"}, "tag"),
        ({"normalize": "__import__('os').system('touch {marker}')"}, "literal"),
        ({"normalize": False, "env_wrapper": "os.system"}, "env_wrapper"),
    ],
    ids=["yaml_tag", "normalize_eval", "env_wrapper"],
)
def test_zoo_config_payload_never_runs(tmp_path: Path, config: dict[str, Any], refused: str) -> None:
    marker = tmp_path / "pwned"
    folder = _zoo_folder(
        tmp_path / "logs", "ppo", "CartPole-v1", PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32)
    )
    config_file = folder / "ppo" / "CartPole-v1_1" / "CartPole-v1" / "config.yml"
    lines = [f"{key}: {value}" if key == "x" else f"{key}: {json.dumps(value)}" for key, value in config.items()]
    config_file.write_text("\n".join(lines).replace("{marker}", str(marker)) + "\n")
    with pytest.raises((UnsafeCheckpointError, ValueError), match=refused):
        load_zoo_model("ppo", "CartPole-v1", folder=folder)
    assert not marker.exists()


def test_zoo_vecnormalize_and_model_payloads_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    venv = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]))
    folder = _zoo_folder(tmp_path / "logs", "a2c", "Pendulum-v1", A2C("MlpPolicy", "Pendulum-v1"), vecnormalize=venv)
    stats = folder / "a2c" / "Pendulum-v1_1" / "Pendulum-v1" / "vecnormalize.pkl"
    stats.write_bytes(cloudpickle.dumps(Command(_touch(marker))))
    with pytest.raises(UnsafeCheckpointError, match="vecnormalize.pkl"):
        load_zoo_model("a2c", "Pendulum-v1", folder=folder)
    venv.save(str(stats))
    model_zip = folder / "a2c" / "Pendulum-v1_1" / "Pendulum-v1.zip"
    _rewrite_zip(
        model_zip, model_zip, data={"observation_space": _serialized(cloudpickle.dumps(Command(_touch(marker))))}
    )
    with pytest.raises(UnsafeCheckpointError, match="observation_space"):
        load_zoo_model("a2c", "Pendulum-v1", folder=folder)
    assert not marker.exists()


def test_zoo_enjoy_command_never_runs_a_payload(tmp_path: Path) -> None:
    """The Zoo's own enjoy script through our command line: config.yml, args.yml and the model are read safely."""
    marker = tmp_path / "pwned"
    folder = _zoo_folder(
        tmp_path / "logs", "ppo", "CartPole-v1", PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32)
    )
    run = folder / "ppo" / "CartPole-v1_1"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "sb3_trpo_ext.zoo", "enjoy", "--algo", "ppo", "--env", "CartPole-v1", "-f",
               str(folder), "--no-render", "-n", "20", "--num-threads", "1"]  # fmt: skip
    ok = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-3000:]
    (run / "CartPole-v1" / "args.yml").write_text(f"env_kwargs: !!python/object/apply:os.system ['touch {marker}']\n")
    refused = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert refused.returncode != 0 and not marker.exists()
    assert "os.system" in refused.stderr, refused.stderr[-3000:]


def test_replay_buffers_load_through_the_restricted_unpickler(tmp_path: Path) -> None:
    from stable_baselines3 import DQN, SAC, HerReplayBuffer
    from stable_baselines3.common.envs import BitFlippingEnv

    from sb3_trpo_ext.safe_load import load_pickle_file

    models = {
        "td3": TD3("MlpPolicy", "Pendulum-v1", learning_starts=10, buffer_size=100),
        "dqn": DQN("MlpPolicy", "CartPole-v1", learning_starts=10, buffer_size=100),
        "her": SAC("MultiInputPolicy", BitFlippingEnv(n_bits=4, continuous=True), learning_starts=10,
                   buffer_size=100, replay_buffer_class=HerReplayBuffer),
    }  # fmt: skip
    for name, model in models.items():
        model.learn(30)
        path = tmp_path / f"{name}.pkl"
        model.save_replay_buffer(path)
        buffer = load_pickle_file(path)
        assert type(buffer) is type(model.replay_buffer)
        saved, kept = buffer.observations, model.replay_buffer.observations
        for key in saved if isinstance(saved, dict) else [None]:
            np.testing.assert_array_equal(saved[key] if key else saved, kept[key] if key else kept)
        np.testing.assert_array_equal(buffer.actions, model.replay_buffer.actions)
    marker = tmp_path / "pwned"
    for chain, (payload, refused) in _payloads(marker).items():
        (tmp_path / f"{chain}.pkl").write_bytes(payload)
        with pytest.raises(UnsafeCheckpointError) as info:
            load_pickle_file(tmp_path / f"{chain}.pkl")
        assert info.value.global_name == refused
    assert not marker.exists()


def test_zoo_train_continuing_from_a_run_never_runs_a_payload(tmp_path: Path) -> None:
    """``train -i``: the Zoo reads the model, ``replay_buffer.pkl`` beside it and ``vecnormalize.pkl``; each is
    read safely, and a payload in either pickle stops the command before it runs."""
    marker = tmp_path / "pwned"
    model = TD3("MlpPolicy", "Pendulum-v1", learning_starts=10, buffer_size=500)
    model.learn(50)
    venv = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]))
    folder = _zoo_folder(tmp_path / "logs", "td3", "Pendulum-v1", model, vecnormalize=venv)
    run = folder / "td3" / "Pendulum-v1_1"
    model.save_replay_buffer(run / "replay_buffer.pkl")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "sb3_trpo_ext.zoo", "train", "--algo", "td3", "--env", "Pendulum-v1",
               "-i", str(run / "Pendulum-v1.zip"), "-n", "100", "-f", str(tmp_path / "out"), "--eval-freq", "-1",
               "--num-threads", "1", "-params", "learning_starts:10"]  # fmt: skip
    ok = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "Loading replay buffer" in ok.stdout and "Loading saved VecNormalize stats" in ok.stdout
    for pickled in (run / "replay_buffer.pkl", run / "Pendulum-v1" / "vecnormalize.pkl"):
        legitimate = pickled.read_bytes()
        pickled.write_bytes(cloudpickle.dumps(Command(_touch(marker))))
        refused = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
        assert refused.returncode != 0 and not marker.exists()
        assert "UnsafeCheckpointError" in refused.stderr and pickled.name in refused.stderr, refused.stderr[-3000:]
        pickled.write_bytes(legitimate)


# ------------------------------------------------------------------------------ the legitimate matrix
class ImageEnv(gym.Env):
    observation_space = spaces.Box(0, 255, (36, 36, 1), np.uint8)
    action_space = spaces.Discrete(3)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


class SpaceEnv(gym.Env):
    """Vector observations, any action space; restorable (a stateless simulator) for vine sampling."""

    def __init__(self, action_space: spaces.Space, dict_obs: bool = False):
        box = spaces.Box(-1, 1, (4,), np.float32)
        self.observation_space = spaces.Dict({"a": box, "b": spaces.Discrete(3)}) if dict_obs else box
        self.action_space = action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}

    def get_state(self) -> None:
        return None

    def set_state(self, state: None) -> None:
        pass


def _matrix() -> dict[str, Any]:
    """Ordinary checkpoints: name -> model (built, not trained: loading does not depend on training)."""
    from sb3_contrib import TRPO as ContribTRPO

    box2 = spaces.Box(-1, 1, (2,), np.float32)
    return {
        "mlp_box": TRPO("MlpPolicy", "Pendulum-v1", **FAST),
        "mlp_discrete": TRPO("MlpPolicy", "CartPole-v1", **FAST),
        "multidiscrete": TRPO("MlpPolicy", SpaceEnv(spaces.MultiDiscrete([3, 2])), **FAST),
        "multibinary": TRPO("MlpPolicy", SpaceEnv(spaces.MultiBinary(3)), **FAST),
        "gsde": TRPO("MlpPolicy", "Pendulum-v1", use_sde=True, **FAST),
        "vine": TRPO("MlpPolicy", "CartPole-v1", sampling="vine", vine_n_states=4, **FAST),
        "cnn": TRPO(
            "CnnPolicy",
            ImageEnv(),
            n_steps=32,
            batch_size=32,
            seed=0,
            policy_kwargs=dict(features_extractor_kwargs=dict(features_dim=8)),
        ),  # fmt: skip
        "multi_input": TRPO("MultiInputPolicy", SpaceEnv(box2, dict_obs=True), **FAST),
        "policy_kwargs": TRPO(
            "MlpPolicy",
            "Pendulum-v1",
            n_steps=32,
            batch_size=32,
            seed=0,
            learning_rate=LinearSchedule(1e-3, 1e-4, 0.5),
            policy_kwargs=dict(
                net_arch=dict(pi=[8], vf=[8]),
                activation_fn=th.nn.ReLU,
                optimizer_class=th.optim.RMSprop,
                optimizer_kwargs=dict(alpha=0.9, eps=1e-5),
            ),
        ),  # fmt: skip
        "contrib_trpo": ContribTRPO("MlpPolicy", "Pendulum-v1", n_steps=32, batch_size=32, policy_kwargs=SMALL, seed=0),
    }


def _zoo_matrix() -> dict[str, tuple[str, str, Any, bool]]:
    """Zoo runs: name -> (algo key, env id, model, with VecNormalize)."""
    from sb3_contrib import TRPO as ContribTRPO

    noise = NormalActionNoise(np.zeros(1), 0.1 * np.ones(1))
    return {
        "zoo_trpo_ext": ("trpo_ext", "Pendulum-v1", TRPO("MlpPolicy", "Pendulum-v1", **FAST), True),
        "zoo_contrib_trpo": (
            "trpo",
            "CartPole-v1",
            ContribTRPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, seed=0),
            False,
        ),
        "zoo_ppo": ("ppo", "CartPole-v1", PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, seed=0), True),
        "zoo_a2c": ("a2c", "Pendulum-v1", A2C("MlpPolicy", "Pendulum-v1", seed=0), False),
        "zoo_td3": (
            "td3",
            "Pendulum-v1",
            TD3("MlpPolicy", "Pendulum-v1", buffer_size=100, action_noise=noise, seed=0),
            True,
        ),
    }


def _observations(space: spaces.Space, n: int = 8) -> Any:
    space.seed(0)
    samples = [space.sample() for _ in range(n)]
    if isinstance(space, spaces.Dict):
        return {key: np.stack([s[key] for s in samples]) for key in space.spaces}
    return np.stack(samples)


def test_legitimate_matrix_loads_with_equal_predictions_in_a_fresh_process(tmp_path: Path) -> None:
    """Predictions of the policy (torch, SB3's own ``predict``) before saving and after loading in a fresh
    process are equal bit for bit: weights, architecture, spaces and preprocessing all came back."""
    jobs: list[dict[str, Any]] = []
    expected: dict[str, np.ndarray] = {}
    for name, model in _matrix().items():
        path = tmp_path / f"{name}.zip"
        model.save(path)
        obs = _observations(model.observation_space)
        with open(tmp_path / f"{name}.obs.pkl", "wb") as file:
            pickle.dump(obs, file)
        expected[name] = model.policy.predict(obs, deterministic=True)[0]
        jobs.append({"name": name, "kind": "trpo", "path": str(path)})
        if name in ("mlp_box", "cnn", "multi_input"):
            model.policy.save(str(tmp_path / f"{name}.policy.pth"))
            expected[f"{name}_policy"] = expected[name]
            with open(tmp_path / f"{name}_policy.obs.pkl", "wb") as file:
                pickle.dump(obs, file)
            jobs.append({"name": f"{name}_policy", "kind": "policy", "path": str(tmp_path / f"{name}.policy.pth")})
    for name, (algo, env_id, model, normalize) in _zoo_matrix().items():
        venv = None
        if normalize:
            venv = VecNormalize(DummyVecEnv([lambda env_id=env_id: gym.make(env_id)]))
            venv.reset()
            for _ in range(5):
                venv.step(np.stack([venv.action_space.sample()]))
        _zoo_folder(tmp_path / name, algo, env_id, model, vecnormalize=venv)
        obs = _observations(model.observation_space)
        with open(tmp_path / f"{name}.obs.pkl", "wb") as file:
            pickle.dump(obs, file)
        expected[name] = model.policy.predict(obs, deterministic=True)[0]
        mean = venv.obs_rms.mean.tolist() if venv is not None else None
        jobs.append(
            {"name": name, "kind": "zoo", "algo": algo, "env": env_id, "folder": str(tmp_path / name), "mean": mean}
        )
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    code = f"""
import json, pickle, warnings
import numpy as np
warnings.simplefilter("ignore")
from sb3_trpo_ext import TRPO
from sb3_trpo_ext.trpo.policies import MlpPolicy, CnnPolicy, MultiInputPolicy
from sb3_trpo_ext.zoo import load_zoo_model
policies = {{"mlp_box_policy": MlpPolicy, "cnn_policy": CnnPolicy, "multi_input_policy": MultiInputPolicy}}
out = {{}}
for job in json.load(open({str(tmp_path / "jobs.json")!r})):
    obs = pickle.load(open({str(tmp_path)!r} + "/" + job["name"] + ".obs.pkl", "rb"))
    if job["kind"] == "trpo":
        model = TRPO.load(job["path"])
    elif job["kind"] == "policy":
        model = policies[job["name"]].load(job["path"])
    else:
        model, env = load_zoo_model(job["algo"], job["env"], folder=job["folder"])
        if job["mean"] is not None:
            assert np.allclose(env.obs_rms.mean, job["mean"]), job["name"]
            assert not env.training and not env.norm_reward
        env.close()
    policy = model if job["kind"] == "policy" else model.policy
    out[job["name"]] = np.asarray(policy.predict(obs, deterministic=True)[0]).tolist()
print(json.dumps(out))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-4000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(loaded) == set(expected)
    for name, actions in expected.items():
        # a policy loaded alone predicts in torch, the model it came from from its numpy actor: float precision
        np.testing.assert_allclose(
            np.asarray(loaded[name], dtype=actions.dtype), actions, rtol=0, atol=1e-6, err_msg=name
        )


def test_every_data_entry_of_the_matrix_is_rebuilt_by_the_restricted_unpickler(tmp_path: Path) -> None:
    """No pickled entry of an ordinary checkpoint falls back to SB3's unpickling (nothing is left for it)."""
    model = TRPO("MlpPolicy", "CartPole-v1", sampling="vine", vine_n_states=4, **FAST)
    model.save(tmp_path / "vine.zip")
    data, pickled = safe_load.load_data(tmp_path / "vine.zip")
    assert {"observation_space", "action_space", "policy_class", "rollout_buffer_class", "lr_schedule"} <= pickled
    assert data["rollout_buffer_class"].__name__ == "VineRolloutBuffer"
    assert data["observation_space"] == model.observation_space


def test_load_policy_file_keeps_tensors_and_constructor_arguments(tmp_path: Path) -> None:
    model = TRPO("MlpPolicy", "Pendulum-v1", **FAST)
    model.policy.save(str(tmp_path / "p.pth"))
    saved = load_policy_file(tmp_path / "p.pth")
    assert saved["data"]["observation_space"] == model.observation_space
    for key, value in model.policy.state_dict().items():
        assert th.equal(saved["state_dict"][key], value)


def test_zoo_scripts_put_every_patched_attribute_back_as_it_was() -> None:
    """safe_zoo_scripts restores what it replaced as stored: VecNormalize.load stays a staticmethod (it came back
    as a plain function, which broke VecNormalize.load after any in-process Zoo command)."""
    import inspect

    import rl_zoo3.utils
    from stable_baselines3.common.vec_env import VecNormalize

    from sb3_trpo_ext.zoo.loading import safe_zoo_scripts

    before = {
        (VecNormalize, "load"): inspect.getattr_static(VecNormalize, "load"),
        (rl_zoo3.utils, "create_test_env"): rl_zoo3.utils.create_test_env,
    }
    with safe_zoo_scripts():
        assert inspect.getattr_static(VecNormalize, "load") is not before[(VecNormalize, "load")]
    for (owner, name), value in before.items():
        assert inspect.getattr_static(owner, name) is value, name
    assert isinstance(inspect.getattr_static(VecNormalize, "load"), staticmethod)
