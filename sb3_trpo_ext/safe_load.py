"""Loading checkpoints without running code from the file: one reviewed allowlist, one restricted unpickler.

SB3 stores every non-JSON value of a model's ``data`` member (spaces, schedules, ``policy_kwargs`` holding
classes, ...) as base64 cloudpickle, and ``pickle`` calls whatever callable the file names: a ``__reduce__``
payload runs ``os.system`` while the file is read. Here every pickle we read from a checkpoint (``data``
entries, a policy file written by ``policy.save``, ``vecnormalize.pkl``) goes through
:class:`RestrictedUnpickler`, whose ``find_class`` admits only the exact ``(module, name)`` pairs of
:data:`SAFE_GLOBALS` (plus the ones a user adds with :func:`add_safe_globals` or ``safe_globals=[...]``):
no module-wide or prefix trust, so nothing outside the list is ever imported or called. A refusal raises
:class:`UnsafeCheckpointError` before anything from the file runs. ``.pth`` members stay with
``torch.load(weights_only=True)`` (torch's own restricted unpickler), whatever the flags.

``trusted=True`` on the load functions is the explicit way back to SB3's full unpickling, for files the
user vouches for.

This module is about checkpoints only and does not import the Zoo. Reading a Zoo run folder's ``config.yml`` /
``args.yml``, its ``normalize`` setting and wrapper names is :mod:`sb3_trpo_ext.zoo.safe_config`'s job (it
builds on the allowlist and the error here).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import pathlib
import pickle
import re
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

__all__ = [
    "REBUILT_KEYS",
    "SAFE_GLOBALS",
    "RestrictedUnpickler",
    "UnsafeCheckpointError",
    "add_safe_globals",
    "explain_weights_only_refusal",
    "get_safe_globals",
    "load_data",
    "load_model",
    "load_policy_file",
    "load_pickle_file",
    "load_vec_normalize",
]

#: Every global a checkpoint may reference, as exact ``(module, qualified name)`` pairs. This is the list
#: real checkpoints reference (enumerated with a recording unpickler over models saved by TRPO with
#: MlpPolicy/CnnPolicy/MultiInputPolicy, Box/Discrete/MultiDiscrete/MultiBinary, gSDE, vine, custom
#: ``policy_kwargs`` and SB3 schedules; sb3-contrib's TRPO; SB3's PPO, A2C, TD3 with action noise, SAC, DQN;
#: ``policy.save`` files; ``vecnormalize.pkl``), plus the siblings of those classes that SB3, sb3-contrib and
#: the Zoo create the same way (CNN / multi-input variants, activations and optimizers the Zoo's files name).
#: Each entry is a class or a data-rebuilding function whose call cannot reach ``import``, ``getattr``,
#: ``eval`` or a file: adding one is a security review, and ``tests/test_safe_load.py`` lists them all.
SAFE_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        # containers
        ("collections", "OrderedDict"),
        ("collections", "deque"),
        # numpy arrays, scalars and dtypes; numpy 1.x files name numpy.core, numpy 2 writes numpy._core
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        ("numpy", "float32"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        # the numpy Generator a gymnasium space carries
        ("numpy.random._pickle", "__generator_ctor"),
        ("numpy.random._pickle", "__bit_generator_ctor"),
        ("numpy.random._pcg64", "PCG64"),
        ("numpy.random.bit_generator", "SeedSequence"),
        ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
        # tensors in a policy file (storages come through torch.load's persistent ids, never a global)
        ("torch._utils", "_rebuild_tensor_v2"),
        # the device a replay buffer keeps (replay_buffer.pkl); its constructor only parses a device name
        ("torch", "device"),
        # gymnasium spaces
        ("gymnasium.spaces.box", "Box"),
        ("gymnasium.spaces.discrete", "Discrete"),
        ("gymnasium.spaces.multi_discrete", "MultiDiscrete"),
        ("gymnasium.spaces.multi_binary", "MultiBinary"),
        ("gymnasium.spaces.dict", "Dict"),
        # schedules (SB3's classes and the Zoo's linear schedule); policy.save's dummy lr_schedule
        ("stable_baselines3.common.utils", "FloatSchedule"),
        ("stable_baselines3.common.utils", "LinearSchedule"),
        ("stable_baselines3.common.utils", "ConstantSchedule"),
        ("rl_zoo3.utils", "SimpleLinearSchedule"),
        ("stable_baselines3.common.policies", "BasePolicy._dummy_schedule"),
        # torch.nn activations and torch.optim optimizers (policy_kwargs)
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
        # SB3 policies, features extractors, buffers, off-policy settings
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
        # VecNormalize statistics (vecnormalize.pkl)
        ("stable_baselines3.common.vec_env.vec_normalize", "VecNormalize"),
        ("stable_baselines3.common.running_mean_std", "RunningMeanStd"),
        # sb3-contrib's recurrent and maskable policies and buffers
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
        # ours
        ("sb3_trpo_ext.trpo.policies", "MlpPolicy"),
        ("sb3_trpo_ext.trpo.policies", "CnnPolicy"),
        ("sb3_trpo_ext.trpo.policies", "MultiInputPolicy"),
        ("sb3_trpo_ext.common.vine", "VineRolloutBuffer"),
        ("sb3_trpo_ext.common.vine", "DictVineRolloutBuffer"),
        # MaskableTRPO's policy aliases and its vine buffers
        ("sb3_trpo_ext.maskable.policies", "MaskableMlpPolicy"),
        ("sb3_trpo_ext.maskable.policies", "MaskableCnnPolicy"),
        ("sb3_trpo_ext.maskable.policies", "MaskableMultiInputPolicy"),
        ("sb3_trpo_ext.maskable.vine", "MaskableVineRolloutBuffer"),
        ("sb3_trpo_ext.maskable.vine", "MaskableDictVineRolloutBuffer"),
        # RecurrentTRPO's policy aliases (its buffers are sb3-contrib's, above)
        ("sb3_trpo_ext.recurrent.policies", "MlpLstmPolicy"),
        ("sb3_trpo_ext.recurrent.policies", "CnnLstmPolicy"),
        ("sb3_trpo_ext.recurrent.policies", "MultiInputLstmPolicy"),
    }
)

#: ``data`` entries that are never unpickled: every SB3 algorithm rebuilds them in ``_setup_model`` (from
#: ``learning_rate``, and DQN / QR-DQN from their exploration settings), so a pickled closure there (every
#: checkpoint written before SB3's schedule classes) is skipped and such files load without a flag.
REBUILT_KEYS: frozenset[str] = frozenset({"lr_schedule", "exploration_schedule"})


# Globals whose presence means "a function rebuilt from its code" (cloudpickle): named in the error.
_CODE_BUILDERS = re.compile(r"^(cloudpickle(\..*)?|types|marshal)$")

#: How to get past a refusal (also in sb3_trpo_ext.zoo.safe_config's messages).
WAYS_OUT = (
    "If you trust the file, load it with trusted=True (full unpickling, as SB3 does); if the global is a "
    "class of your own, allow it with safe_globals=[...] on the load call or sb3_trpo_ext.add_safe_globals(...)."
)

_user_safe_globals: set[tuple[str, str]] = set()


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint names a global outside the allowlist; raised before anything from the file runs.

    :param key: where in the file (a ``data`` entry, a ``.pth`` member, ``vecnormalize.pkl``, ...)
    :param global_name: the refused ``module.name``
    :param message: the whole message (default: built from ``key`` and ``global_name``)
    """

    def __init__(self, key: str, global_name: str, message: str | None = None):
        self.key = key
        self.global_name = global_name
        if message is None:
            message = (
                f"Refused to load {key!r}: it references {global_name}, which is not on sb3_trpo_ext's allowlist "
                f"of safe globals, so unpickling it could run code from the file (nothing from the file was "
                f"executed). {WAYS_OUT}"
            )
        super().__init__(message)


def _as_pair(entry: Any) -> tuple[str, str]:
    if isinstance(entry, tuple) and len(entry) == 2 and all(isinstance(part, str) for part in entry):
        return entry
    module, name = getattr(entry, "__module__", None), getattr(entry, "__qualname__", None)
    if not (isinstance(module, str) and isinstance(name, str)) or "<" in name:
        raise TypeError(f"Expected a class, a function or a (module, name) pair, got {entry!r}")
    return module, name


def add_safe_globals(entries: Iterable[Any]) -> None:
    """Allow more globals in every later load of this process, like ``torch.serialization.add_safe_globals``.

    For a user's own classes (a custom policy, features extractor or schedule class): only add classes
    whose construction from arbitrary arguments cannot reach code execution.

    :param entries: classes, functions (importable by their qualified name) or ``(module, name)`` pairs
    """
    _user_safe_globals.update(_as_pair(entry) for entry in entries)


def get_safe_globals() -> frozenset[tuple[str, str]]:
    """The allowlist in force: :data:`SAFE_GLOBALS` plus what :func:`add_safe_globals` added.

    :return: the ``(module, name)`` pairs a checkpoint may reference
    """
    return SAFE_GLOBALS | frozenset(_user_safe_globals)


def _canonical_module(module: str) -> str:
    if module == "__builtin__":  # protocol 2 pickles written by Python 2 name builtins so
        return "builtins"
    return module


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles (``torch.save``) use it for ``bytes``: latin-1 only."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnsafeCheckpointError("<bytes>", f"_codecs.encode(..., {encoding!r})")
    return text.encode("latin1")


class _NestedNameOwner:
    """A class whose nested attribute is allowlisted (``BasePolicy`` of ``BasePolicy._dummy_schedule``): it can
    only be the first argument of the guarded ``getattr``; the class itself is never handed to the pickle."""

    def __init__(self, owner: type):
        self.owner = owner


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allowlisted globals (and raises :class:`UnsafeCheckpointError` otherwise).

    Protocol-2 pickles (what ``torch.save`` writes) spell two things differently: ``bytes`` as
    ``_codecs.encode(text, "latin1")`` (admitted for latin-1 only) and a nested name such as
    ``BasePolicy._dummy_schedule`` as ``getattr(BasePolicy, "_dummy_schedule")``, which is admitted only
    when ``module.Class.attribute`` is itself on the allowlist: the same name a protocol-4 pickle would give.

    :param file: the pickle stream
    :param key: where the pickle comes from, named in errors
    :param safe_globals: extra globals for this load only
    """

    def __init__(self, file: IO[bytes], *, key: str, safe_globals: Iterable[Any] = (), **kwargs: Any):
        super().__init__(file, **kwargs)
        self.key = key
        self.allowed = get_safe_globals() | {_as_pair(entry) for entry in safe_globals}

    def find_class(self, module: str, name: str) -> Any:
        """Resolve ``module.name`` if it is allowed; refuse it otherwise."""
        module = _canonical_module(module)
        if (module, name) in self.allowed:
            if module.startswith("numpy.core.") and int(np.__version__.split(".")[0]) >= 2:
                module = "numpy._core." + module[len("numpy.core.") :]  # numpy 2's home (no deprecation warning)
            return super().find_class(module, name)
        if any(m == module and n.startswith(name + ".") for m, n in self.allowed):
            # only the owner of an allowlisted nested name, usable by the getattr below and nothing else
            return _NestedNameOwner(super().find_class(module, name))
        if (module, name) == ("builtins", "getattr"):
            return self._nested_name
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise self._refusal(f"{module}.{name}")

    def _nested_name(self, owner: Any, attribute: Any, *default: Any) -> Any:
        """``getattr(Class, "attr")`` of a protocol-2 pickle, admitted only for allowlisted nested names."""
        if isinstance(owner, _NestedNameOwner) and isinstance(attribute, str):
            module, qualname = owner.owner.__module__, owner.owner.__qualname__
            if (module, f"{qualname}.{attribute}") in self.allowed:
                return getattr(owner.owner, attribute)
            raise self._refusal(f"{module}.{qualname}.{attribute}")
        raise self._refusal(f"builtins.getattr({type(owner).__name__}, {attribute!r})")

    def _refusal(self, global_name: str) -> UnsafeCheckpointError:
        module = global_name.rsplit(".", 1)[0]
        if not _CODE_BUILDERS.match(module):
            return UnsafeCheckpointError(self.key, global_name)
        # a lambda or closure: cloudpickle rebuilds it from its code object
        replace = (
            "'learning_rate': 3e-4, 'lr_schedule': ..."
            if self.key in ("learning_rate", "lr_schedule")
            else f"{self.key!r}: ..."
        )
        return UnsafeCheckpointError(
            self.key,
            global_name,
            f"Refused to load {self.key!r}: it is a function (a lambda or a closure such as SB3's deprecated "
            f"get_linear_fn, rebuilt from its code by {global_name}), which is code, not data; nothing from the "
            f"file was executed. Pass the value yourself with SB3's custom_objects={{{replace}}}, or load with "
            "trusted=True if you trust the file.",
        )


def _restricted_loads(payload: bytes, key: str, safe_globals: Iterable[Any]) -> Any:
    return RestrictedUnpickler(io.BytesIO(payload), key=key, safe_globals=safe_globals).load()


# ------------------------------------------------------------------------------------------- zip files
def _for_open_path(path: str | os.PathLike[str] | io.BufferedIOBase) -> str | pathlib.Path | io.BufferedIOBase:
    """``path`` as SB3's ``open_path`` takes it: it dispatches on ``str``, ``pathlib.Path`` and open files (passed
    unchanged); any other ``os.PathLike`` as its ``str``."""
    if isinstance(path, (str, pathlib.Path, io.BufferedIOBase)):
        return path
    return os.fspath(path)


def _open(path: str | os.PathLike[str] | io.BufferedIOBase) -> io.BufferedIOBase:
    """SB3's own path resolution (``.zip`` appended when missing), so our reader finds what SB3 would."""
    from stable_baselines3.common.save_util import open_path

    return open_path(_for_open_path(path), "r", suffix="zip")


def _rewind(path: Any) -> None:
    if isinstance(path, io.IOBase) and path.seekable():
        path.seek(0)


def _unreadable(file: Any, path: Any, error: Exception) -> ValueError:
    """The error for a model file that is not a readable zip archive. A cut copy or download loses the zip's central
    directory (at its end), where zipfile only says "not a zip file"."""
    name = getattr(file, "name", path)  # the file actually opened (".zip" appended by SB3's resolution)
    return ValueError(f"{name} is not a readable model file (truncated or corrupted zip: {error}); nothing was loaded")


def _read_zip(path: str | os.PathLike[str] | io.BufferedIOBase, read: Callable[[zipfile.ZipFile], Any]) -> Any:
    """``read(archive)`` on the zip file at ``path`` (closed after, or an open file rewound); a truncated or
    corrupted archive raises a ``ValueError`` that says so and names the file."""
    file = _open(path)
    try:
        with zipfile.ZipFile(file) as archive:
            return read(archive)
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise _unreadable(file, path, error) from error
    finally:
        if isinstance(path, (str, os.PathLike)):
            file.close()
        else:
            _rewind(path)


def check_readable_zip(path: str | pathlib.Path | io.BufferedIOBase) -> None:
    """Raise the same ``ValueError`` as :func:`load_data` if ``path`` is not a readable zip archive, before a loader
    that would report it less plainly (SB3's, for ``trusted=True``) reads it.

    :raises ValueError: naming the file, if it is truncated or corrupted
    """
    _read_zip(path, lambda archive: archive.namelist())


def load_data(
    path: str | os.PathLike[str] | io.BufferedIOBase,
    custom_objects: dict[str, Any] | None = None,
    *,
    safe_globals: Iterable[Any] = (),
) -> tuple[dict[str, Any], set[str]]:
    """The ``data`` member of an SB3 checkpoint, each pickled entry rebuilt by :class:`RestrictedUnpickler`.

    Entries in ``custom_objects`` are taken from there, never unpickled (SB3's contract); entries in
    :data:`REBUILT_KEYS` are never unpickled either: a placeholder stands in until the model's setup
    rebuilds them.

    :param path: the zip file (a path, with ``.zip`` tried as SB3 does, or an open binary file)
    :param custom_objects: values that replace the saved ones
    :param safe_globals: extra allowed globals for this load
    :return: the data and the keys that were pickled in the file (to hand to SB3's ``load`` as
        ``custom_objects``, so that SB3 never unpickles them itself)
    :raises UnsafeCheckpointError: naming the entry and the refused global
    :raises ValueError: if the file is not a readable zip archive (truncated or corrupted), or an entry cannot be
        rebuilt
    """
    if custom_objects is not None and not isinstance(custom_objects, dict):
        raise ValueError("custom_objects argument must be a dict or None")
    custom_objects = custom_objects or {}
    safe_globals = list(safe_globals)
    raw = _read_zip(
        path, lambda archive: json.loads(archive.read("data").decode()) if "data" in archive.namelist() else {}
    )
    data: dict[str, Any] = {}
    pickled: set[str] = set()
    for key, item in raw.items():
        is_pickled = isinstance(item, dict) and ":serialized:" in item
        if is_pickled:
            pickled.add(key)
        if key in custom_objects:
            data[key] = custom_objects[key]
        elif not is_pickled:
            data[key] = item
        elif key in REBUILT_KEYS:
            data[key] = None  # the model's _setup_model rebuilds it
        else:
            payload = base64.b64decode(item[":serialized:"].encode())
            try:
                data[key] = _restricted_loads(payload, key, safe_globals)
            except UnsafeCheckpointError:
                raise
            except (pickle.UnpicklingError, RuntimeError, TypeError, AttributeError, ImportError) as error:
                raise ValueError(
                    f"Could not rebuild {key!r} from the file ({type(error).__name__}: {error}); pass "
                    f"custom_objects={{{key!r}: ...}} to replace it"
                ) from error
    if "lr_schedule" in pickled and "lr_schedule" not in custom_objects:
        data["lr_schedule"] = _placeholder_schedule(data.get("learning_rate"))
    return data, pickled


def _placeholder_schedule(learning_rate: Any) -> Any:
    """What SB3's setup would rebuild ``lr_schedule`` as (it does rebuild it: this only fills the gap)."""
    from stable_baselines3.common.utils import FloatSchedule

    if isinstance(learning_rate, (int, float)) or callable(learning_rate):
        return FloatSchedule(learning_rate)
    return None


_WEIGHTS_ONLY_GLOBAL = re.compile(r"GLOBAL ([\w.]+)|Unsupported global: ([\w.]+)|global ([\w.]+)")


@contextlib.contextmanager
def explain_weights_only_refusal(path: Any) -> Iterator[None]:
    """Turn torch's ``weights_only`` refusal of a ``.pth`` member into :class:`UnsafeCheckpointError`
    naming the member and the global (torch's message names neither the member nor our ways out)."""
    try:
        yield
    except UnsafeCheckpointError:
        raise
    except pickle.UnpicklingError as error:
        member = _refused_member(path) if isinstance(path, (str, os.PathLike)) else None
        match = _WEIGHTS_ONLY_GLOBAL.search(str(error))
        global_name = next((g for g in match.groups() if g), "?") if match else "?"
        raise UnsafeCheckpointError(
            member or "a .pth member",
            global_name,
            f"Refused to load {member or 'a .pth member'!r}: torch.load(weights_only=True) found {global_name}, "
            "which is not a tensor, so nothing from the file was executed. .pth members are always read with "
            "weights_only=True (trusted=True does not change that).",
        ) from error


def _refused_member(path: str | os.PathLike[str]) -> str | None:
    import torch as th

    file = _open(path)
    try:
        with zipfile.ZipFile(file) as archive:
            for member in archive.namelist():
                if not member.endswith(".pth"):
                    continue
                try:
                    th.load(io.BytesIO(archive.read(member)), map_location="cpu", weights_only=True)
                except pickle.UnpicklingError:
                    return member
    finally:
        file.close()
    return None


def _loads_safely_itself(algo_class: type[BaseAlgorithm]) -> bool:
    """Our algorithms' ``load`` reads safely by itself and takes ``trusted`` / ``safe_globals``."""
    import inspect

    return "trusted" in inspect.signature(algo_class.load).parameters


def load_model(
    algo_class: type[BaseAlgorithm],
    path: str | pathlib.Path | io.BufferedIOBase,
    env: Any = None,
    device: Any = "auto",
    custom_objects: dict[str, Any] | None = None,
    *,
    trusted: bool = False,
    safe_globals: Iterable[Any] = (),
    **kwargs: Any,
) -> Any:
    """``algo_class.load(path, ...)`` for any SB3 / sb3-contrib algorithm, without running code from the file.

    The ``data`` entries are rebuilt by :func:`load_data` and handed to SB3's own ``load`` as
    ``custom_objects``, so SB3 reads everything else as usual (``.pth`` members with
    ``weights_only=True``) and never unpickles an entry itself.

    :param algo_class: the algorithm class (PPO, A2C, TD3, sb3-contrib's TRPO, our TRPO, ...)
    :param path: the zip file
    :param env: as in SB3's ``load``
    :param device: as in SB3's ``load``
    :param custom_objects: as in SB3's ``load``: values that replace the saved ones
    :param trusted: full unpickling (SB3's behaviour): only for files you vouch for
    :param safe_globals: extra allowed globals for this load
    :param kwargs: as in SB3's ``load``
    :return: the model
    """
    if _loads_safely_itself(algo_class):
        return algo_class.load(
            path,
            env=env,
            device=device,
            custom_objects=custom_objects,
            trusted=trusted,
            safe_globals=safe_globals,
            **kwargs,
        )
    if trusted:
        with explain_weights_only_refusal(path):
            return algo_class.load(path, env=env, device=device, custom_objects=custom_objects, **kwargs)
    data, pickled = load_data(path, custom_objects, safe_globals=safe_globals)
    objects = {**{key: data[key] for key in pickled}, **(custom_objects or {})}
    with explain_weights_only_refusal(path):
        return algo_class.load(path, env=env, device=device, custom_objects=objects, **kwargs)


# ---------------------------------------------------------------------------- policy files, VecNormalize
class _PickleModule:
    """What ``torch.load(pickle_module=...)`` needs: an ``Unpickler`` class and ``load``."""

    def __init__(self, key: str, safe_globals: Iterable[Any]):
        extra = list(safe_globals)

        class Unpickler(RestrictedUnpickler):
            def __init__(self, file: IO[bytes], **kwargs: Any):
                super().__init__(file, key=key, safe_globals=extra, **kwargs)

        self.Unpickler = Unpickler
        self.__name__ = "sb3_trpo_ext.safe_load"

    def load(self, file: IO[bytes], **kwargs: Any) -> Any:
        return self.Unpickler(file, **kwargs).load()


def load_policy_file(
    path: str | os.PathLike[str] | IO[bytes], device: Any = "cpu", *, safe_globals: Iterable[Any] = ()
) -> dict[str, Any]:
    """Read a file written by SB3's ``policy.save`` (``{"state_dict": ..., "data": constructor arguments}``).

    SB3's ``BasePolicy.load`` reads it with ``torch.load(weights_only=False)``; here torch's reader (tensors
    through its persistent ids) runs with :class:`RestrictedUnpickler` for everything else.

    :param path: the file
    :param device: where the tensors go (``map_location``)
    :param safe_globals: extra allowed globals for this load
    :return: the saved dictionary
    :raises UnsafeCheckpointError: naming the file and the refused global
    """
    import torch as th

    key = os.fspath(path) if isinstance(path, (str, os.PathLike)) else "policy file"
    module = _PickleModule(key, safe_globals)
    return th.load(path, map_location=device, weights_only=False, pickle_module=module)


def load_vec_normalize(
    path: str | os.PathLike[str], venv: Any, *, trusted: bool = False, safe_globals: Iterable[Any] = ()
) -> Any:
    """``VecNormalize.load(path, venv)`` with the statistics rebuilt by :class:`RestrictedUnpickler`.

    :param path: the ``vecnormalize.pkl`` file
    :param venv: the vectorized environment to wrap
    :param trusted: SB3's plain ``pickle.load`` (only for files you vouch for)
    :param safe_globals: extra allowed globals for this load
    :return: the ``VecNormalize`` wrapper around ``venv``
    :raises UnsafeCheckpointError: naming the file and the refused global
    """
    from stable_baselines3.common.vec_env import VecNormalize

    if trusted:
        return VecNormalize.load(os.fspath(path), venv)
    vec_normalize = load_pickle_file(path, safe_globals=safe_globals)
    if not isinstance(vec_normalize, VecNormalize):
        raise ValueError(
            f"{os.fspath(path)!r} does not hold VecNormalize statistics: got {type(vec_normalize).__name__}"
        )
    vec_normalize.set_venv(venv)
    return vec_normalize


def load_pickle_file(
    path: str | os.PathLike[str] | io.BufferedIOBase, verbose: int = 0, *, safe_globals: Iterable[Any] = ()
) -> Any:
    """SB3's ``load_from_pkl(path, verbose)`` (a ``.pkl`` file such as an off-policy model's
    ``replay_buffer.pkl``) with the object rebuilt by :class:`RestrictedUnpickler`.

    :param path: the file, or an open binary file
    :param verbose: as in SB3's ``load_from_pkl``
    :param safe_globals: extra allowed globals for this load
    :return: the unpickled object
    :raises UnsafeCheckpointError: naming the file and the refused global
    """
    from stable_baselines3.common.save_util import open_path

    key = os.path.basename(os.fspath(path)) if isinstance(path, (str, os.PathLike)) else "pickle file"
    with open_path(_for_open_path(path), "r", verbose=verbose, suffix="pkl") as file:
        return RestrictedUnpickler(file, key=key, safe_globals=safe_globals).load()
