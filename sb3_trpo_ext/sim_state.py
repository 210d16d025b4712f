"""Exact save/restore of a gymnasium environment's full simulator state, wrappers included.

Vine TRPO (Schulman et al. 2015, section 5.2) branches several short rollouts from states visited by the
main trajectory. That needs the environment to be put back, exactly, into a state it was in before:

>>> snapshot = get_state(env)          # once per vine state
>>> for action in branch_actions:      # K times
...     set_state(env, snapshot)
...     with no_monitor_writes(env):
...         env.step(action)
...         ...

After :func:`set_state`, stepping the environment with the same actions gives bit-identical observations,
rewards, ``terminated`` and ``truncated`` flags as the original continuation did, and one snapshot can be
restored any number of times.

How a snapshot is made: the wrapper chain is walked from the outermost wrapper down to ``env.unwrapped``.

* **Protocol first.** A layer (wrapper or base environment) whose *class* defines callable ``get_state()``
  and ``set_state(state)`` methods is responsible for its own state and for everything below it: its
  ``get_state()`` is the snapshot and the walk stops there. ``set_state`` may be called many times with the
  same object, so it must not mutate it (and ``get_state`` must return something independent of later
  steps).
* **Known wrappers** (gymnasium's ``TimeLimit``, ``OrderEnforcing``, ``PassiveEnvChecker``,
  ``RecordEpisodeStatistics``, ``FrameStackObservation``..., SB3's ``Monitor`` and Atari wrappers, sb3-contrib's
  ``TimeFeatureWrapper``) have the attributes that change during ``step``/``reset`` copied.
* **Stateless wrappers**: a wrapper whose instance holds nothing beyond what gymnasium's ``Wrapper`` base sets
  (or, for the known stateless wrappers such as ``ClipAction`` or ``FlattenObservation``, beyond their
  constant attributes) needs nothing. Any other wrapper attribute makes the wrapper "unknown and stateful":
  :class:`UnrestorableEnvError`.
* **Base environments**: MuJoCo (the whole ``MjData``, copied with ``mj_copyData`` into an ``MjData``
  allocated once per snapshot; ``mj_getState``/``mj_setState`` and ``deepcopy`` are not exact because
  rewards read derived quantities), classic control and the toy-text Taxi, FrozenLake and CliffWalking (the
  attributes their ``step``/``reset`` change),
  Atari through ale-py (``cloneState(include_rng=True)``). Anything else, Box2D included, raises
  :class:`UnrestorableEnvError`.
* The base environment's random generator (``env.unwrapped.np_random``) is always saved and restored, so
  environments that draw random numbers in ``step`` replay identically.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import time
import weakref
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

__all__ = [
    "EnvState",
    "UnrestorableEnvError",
    "check_restorable",
    "check_round_trip",
    "get_state",
    "no_monitor_writes",
    "set_state",
]

_PROTOCOL_HINT = (
    "To make it restorable, implement the protocol `get_state() -> object` / `set_state(state) -> None` "
    "(methods of the class) on the environment or on a wrapper above it; that layer is then responsible "
    "for its own state and for everything below it."
)

# Marks an attribute that did not exist when the snapshot was taken (e.g. set only by the first `reset`).
_MISSING = object()


class UnrestorableEnvError(TypeError):
    """An environment (or one of its wrappers) whose state cannot be saved and restored exactly."""


class EnvState:
    """An opaque snapshot of an environment's state (wrappers, simulator and random generator).

    Made by :func:`get_state`, restored by :func:`set_state` as many times as needed. It does not change
    when the environment is stepped after the snapshot.
    """

    __slots__ = ("_chain", "_layers", "_rng")

    def __init__(
        self,
        chain: tuple[type, ...],
        layers: tuple[tuple[int, _Adapter, Any], ...],
        rng: _RngState | None,
    ) -> None:
        self._chain = chain  # classes of the layers walked, outermost first
        self._layers = layers  # (index in the chain, adapter, saved data), only layers with state
        self._rng = rng

    def __repr__(self) -> str:
        names = " > ".join(cls.__name__ for cls in self._chain)
        return f"EnvState({names})"


# ---------------------------------------------------------------------------------------------------------
# Copies of plain Python / NumPy values
# ---------------------------------------------------------------------------------------------------------

_IMMUTABLE = (bool, int, float, complex, str, bytes, np.generic, type(None))


def _copy_value(value: Any) -> Any:
    """An independent copy of ``value``: cheap paths for the usual types, ``deepcopy`` otherwise."""
    if isinstance(value, _IMMUTABLE):
        return value
    if isinstance(value, np.ndarray):
        return value.copy()
    cls = type(value)
    if cls is list:
        return [_copy_value(v) for v in value]
    if cls is tuple:
        if all(isinstance(v, _IMMUTABLE) for v in value):
            return value  # immutable all the way down
        return tuple(_copy_value(v) for v in value)
    if cls is dict:
        return {k: _copy_value(v) for k, v in value.items()}
    if cls is deque:
        return deque((_copy_value(v) for v in value), maxlen=value.maxlen)
    return copy.deepcopy(value)


def _restore_attr(obj: Any, name: str, saved: Any) -> None:
    """Set ``obj.name`` to a copy of ``saved`` (the snapshot itself stays untouched for later restores).

    Lists, dicts and deques the object owns are updated in place, so references to them held elsewhere
    (``Monitor.get_episode_rewards()``...) stay valid. Arrays are replaced, never written into: an
    environment may have handed its previous array out as an observation.
    """
    attrs = vars(obj)
    if saved is _MISSING:
        attrs.pop(name, None)
        return
    current = attrs.get(name, _MISSING)
    if current is saved and isinstance(saved, _IMMUTABLE):
        return  # unchanged (flags and counters that did not move)
    cls = type(saved)
    if cls is type(current):
        if cls is list:
            current[:] = [_copy_value(v) for v in saved]
            return
        if cls is dict:
            current.clear()
            current.update({k: _copy_value(v) for k, v in saved.items()})
            return
        if cls is deque and current.maxlen == saved.maxlen:
            current.clear()
            current.extend(_copy_value(v) for v in saved)
            return
    setattr(obj, name, _copy_value(saved))


# ---------------------------------------------------------------------------------------------------------
# Adapters: how one layer of the chain is saved and restored
# ---------------------------------------------------------------------------------------------------------


class _Adapter:
    """Saves and restores the state of one layer of the wrapper chain."""

    def save(self, layer: Any) -> Any:
        raise NotImplementedError

    def save_into(self, layer: Any, previous: Any) -> Any:
        """Like :meth:`save`, reusing the buffers of ``previous`` (this adapter's data of a snapshot that is no
        longer needed) where the adapter has any."""
        return self.save(layer)

    def restore(self, layer: Any, data: Any) -> None:
        raise NotImplementedError


class _ProtocolAdapter(_Adapter):
    """A layer that implements ``get_state()`` / ``set_state(state)`` itself."""

    def save(self, layer: Any) -> Any:
        return layer.get_state()

    def restore(self, layer: Any, data: Any) -> None:
        layer.set_state(data)


class _AttrAdapter(_Adapter):
    """Copies a fixed list of instance attributes (those that change during ``step``/``reset``).

    :param state: attributes saved and restored
    :param const: attributes that do not change after construction (allowed, not saved)
    :param ignored: attributes that change but are not part of the simulation (allowed, not saved)
    :param flat: attributes among ``state`` that are lists or deques of numbers and strings: copied whole in C
        (episode statistics grow with training, and a per-element copy at every branch step would cost more
        than the step)
    """

    def __init__(
        self,
        state: tuple[str, ...] = (),
        const: tuple[str, ...] = (),
        ignored: tuple[str, ...] = (),
        flat: tuple[str, ...] = (),
    ):
        self.state = state
        self.flat = frozenset(flat)
        self.allowed = frozenset(state) | frozenset(const) | frozenset(ignored)

    def save(self, layer: Any) -> dict[str, Any]:
        attrs = vars(layer)
        return {
            name: _MISSING
            if name not in attrs
            else _copy_flat(attrs[name])
            if name in self.flat
            else _copy_value(attrs[name])
            for name in self.state
        }

    def restore(self, layer: Any, data: dict[str, Any]) -> None:
        for name, saved in data.items():
            if name in self.flat:
                _restore_flat(layer, name, saved)
            else:
                _restore_attr(layer, name, saved)


def _copy_flat(value: Any) -> Any:
    """A copy of a list or deque of immutable values (or any other value, by :func:`_copy_value`)."""
    if type(value) is list:
        return value[:]
    if type(value) is deque:
        return deque(value, maxlen=value.maxlen)
    return _copy_value(value)


def _restore_flat(obj: Any, name: str, saved: Any) -> None:
    """:func:`_restore_attr` for a value saved by :func:`_copy_flat`: lists and deques updated in place."""
    current = vars(obj).get(name, _MISSING)
    if type(saved) is list and type(current) is list:
        current[:] = saved
    elif type(saved) is deque and type(current) is deque and current.maxlen == saved.maxlen:
        current.clear()
        current.extend(saved)
    else:
        _restore_attr(obj, name, saved)


# Keys that gymnasium's `Wrapper.__init__` (and the helpers every wrapper may mix in) set on an instance.
#: The attribute vine sampling sets on the outermost layer of a SubprocVecEnv worker's environment (its branch
#: runner, see sb3_trpo_ext.common.vine): not simulation state.
BRANCH_RUNNER_ATTRIBUTE = "_sb3_trpo_ext_branch_runner"

_WRAPPER_BASE_KEYS = frozenset(
    {
        BRANCH_RUNNER_ATTRIBUTE,
        "env",
        "_action_space",
        "_observation_space",
        "_metadata",
        "_cached_spec",
        "_reward_range",  # gymnasium < 1.0
        "_saved_kwargs",  # gymnasium.utils.RecordConstructorArgs
        "_ezpickle_args",  # gymnasium.utils.EzPickle
        "_ezpickle_kwargs",
    }
)

# Known wrappers, by "module:qualname" so that optional packages (sb3-contrib, ale-py) are never imported
# here. A wrapper whose class (or a base class, nearest first) is listed gets that entry; an instance
# attribute outside the entry's `allowed` (or, for unlisted classes, outside `_WRAPPER_BASE_KEYS`) makes it
# an unknown stateful wrapper. Entries without `state` are the allow-list of stateless wrappers.
_WRAPPERS: dict[str, _AttrAdapter] = {
    # gymnasium.wrappers.common
    "gymnasium.wrappers.common:TimeLimit": _AttrAdapter(state=("_elapsed_steps",), const=("_max_episode_steps",)),
    "gymnasium.wrappers.common:OrderEnforcing": _AttrAdapter(
        state=("_has_reset",), const=("_disable_render_order_enforcing",)
    ),
    "gymnasium.wrappers.common:PassiveEnvChecker": _AttrAdapter(
        state=("checked_reset", "checked_step", "checked_data_reuse", "_previous_data"),
        ignored=("checked_render", "close_called"),
    ),
    "gymnasium.wrappers.common:RecordEpisodeStatistics": _AttrAdapter(
        state=(
            "episode_count",
            "episode_start_time",
            "episode_returns",
            "episode_lengths",
            "time_queue",
            "return_queue",
            "length_queue",
        ),
        const=("_stats_key",),
        flat=("time_queue", "return_queue", "length_queue"),
    ),
    "gymnasium.wrappers.common:Autoreset": _AttrAdapter(state=("autoreset",)),
    # gymnasium.wrappers.stateful_*
    "gymnasium.wrappers.stateful_observation:FrameStackObservation": _AttrAdapter(
        # `stacked_obs` is an output buffer, fully overwritten (then deep-copied) at every step.
        state=("obs_queue", "padding_value"),
        const=("stack_size", "padding_type", "stacked_obs"),
    ),
    "gymnasium.wrappers.stateful_observation:DelayObservation": _AttrAdapter(
        state=("observation_queue",), const=("delay",)
    ),
    "gymnasium.wrappers.stateful_observation:TimeAwareObservation": _AttrAdapter(
        state=("timesteps",),
        const=(
            "flatten",
            "normalize_time",
            "max_timesteps",
            "_time_preprocess_func",
            "_append_data_func",
            "_obs_postprocess_func",
        ),
    ),
    "gymnasium.wrappers.stateful_observation:MaxAndSkipObservation": _AttrAdapter(
        state=("_obs_buffer",), const=("_skip",)
    ),
    "gymnasium.wrappers.stateful_observation:NormalizeObservation": _AttrAdapter(
        state=("obs_rms", "_update_running_mean"), const=("epsilon",)
    ),
    "gymnasium.wrappers.stateful_reward:NormalizeReward": _AttrAdapter(
        state=("return_rms", "discounted_reward", "_update_running_mean"), const=("epsilon", "gamma")
    ),
    "gymnasium.wrappers.stateful_action:StickyAction": _AttrAdapter(
        state=("is_sticky_actions", "last_action", "num_repeats", "repeats_taken"),
        const=("repeat_action_probability", "repeat_action_duration_range"),
    ),
    "gymnasium.wrappers.atari_preprocessing:AtariPreprocessing": _AttrAdapter(
        state=("lives", "game_over", "obs_buffer"),
        const=(
            "noop_max",
            "frame_skip",
            "screen_size",
            "terminal_on_life_loss",
            "grayscale_obs",
            "grayscale_newaxis",
            "scale_obs",
        ),
    ),
    # gymnasium stateless wrappers (constant attributes only)
    "gymnasium.wrappers.transform_action:TransformAction": _AttrAdapter(const=("func",)),  # ClipAction, RescaleAction
    "gymnasium.wrappers.transform_observation:TransformObservation": _AttrAdapter(
        const=("func",)  # FlattenObservation, RescaleObservation, ...
    ),
    "gymnasium.wrappers.transform_observation:FilterObservation": _AttrAdapter(const=("func", "filter_keys")),
    "gymnasium.wrappers.transform_observation:GrayscaleObservation": _AttrAdapter(const=("func", "keep_dim")),
    "gymnasium.wrappers.transform_observation:ResizeObservation": _AttrAdapter(const=("func", "shape")),
    "gymnasium.wrappers.transform_observation:ReshapeObservation": _AttrAdapter(const=("func", "shape")),
    "gymnasium.wrappers.transform_observation:DtypeObservation": _AttrAdapter(const=("func", "dtype")),
    "gymnasium.wrappers.transform_reward:TransformReward": _AttrAdapter(const=("func",)),  # ClipReward
    # Stable-Baselines3
    "stable_baselines3.common.monitor:Monitor": _AttrAdapter(
        state=(
            "rewards",
            "needs_reset",
            "episode_returns",
            "episode_lengths",
            "episode_times",
            "total_steps",
            "current_reset_info",
        ),
        const=("t_start", "results_writer", "reset_keywords", "info_keywords", "allow_early_resets"),
        flat=("rewards", "episode_returns", "episode_lengths", "episode_times"),
    ),
    "stable_baselines3.common.atari_wrappers:StickyActionEnv": _AttrAdapter(
        state=("_sticky_action",), const=("action_repeat_probability",)
    ),
    "stable_baselines3.common.atari_wrappers:NoopResetEnv": _AttrAdapter(
        const=("noop_max", "override_num_noops", "noop_action")
    ),
    "stable_baselines3.common.atari_wrappers:FireResetEnv": _AttrAdapter(),
    "stable_baselines3.common.atari_wrappers:EpisodicLifeEnv": _AttrAdapter(state=("lives", "was_real_done")),
    "stable_baselines3.common.atari_wrappers:MaxAndSkipEnv": _AttrAdapter(state=("_obs_buffer",), const=("_skip",)),
    "stable_baselines3.common.atari_wrappers:WarpFrame": _AttrAdapter(const=("width", "height")),
    "stable_baselines3.common.atari_wrappers:ClipRewardEnv": _AttrAdapter(),
    "stable_baselines3.common.atari_wrappers:AtariWrapper": _AttrAdapter(),
    # sb3-contrib
    "sb3_contrib.common.wrappers.time_feature:TimeFeatureWrapper": _AttrAdapter(
        state=("_current_step",), const=("_max_steps", "_test_mode", "dtype")
    ),
    # the mask function reads the environment's state; the wrapper has none (sb3_trpo_ext's TaxiActionMasker too)
    "sb3_contrib.common.wrappers.action_masker:ActionMasker": _AttrAdapter(const=("_action_mask_fn",)),
}

# Classic-control environments (exact classes): the attributes their `step`/`reset` change. Rendering
# objects (screen, clock, surf) and the constants are left alone; the random generator is saved separately.
_CLASSIC_CONTROL: dict[str, _AttrAdapter] = {
    "gymnasium.envs.classic_control.cartpole:CartPoleEnv": _AttrAdapter(state=("state", "steps_beyond_terminated")),
    "gymnasium.envs.classic_control.pendulum:PendulumEnv": _AttrAdapter(state=("state", "last_u")),
    "gymnasium.envs.classic_control.acrobot:AcrobotEnv": _AttrAdapter(state=("state",)),
    "gymnasium.envs.classic_control.mountain_car:MountainCarEnv": _AttrAdapter(state=("state",)),
    "gymnasium.envs.classic_control.continuous_mountain_car:Continuous_MountainCarEnv": _AttrAdapter(state=("state",)),
    # toy text: the discrete state and the last action (rendering reads it); Taxi's fickle passenger flag and
    # taxi orientation (set by reset and render)
    "gymnasium.envs.toy_text.taxi:TaxiEnv": _AttrAdapter(state=("s", "lastaction", "fickle_step", "taxi_orientation")),
    "gymnasium.envs.toy_text.frozen_lake:FrozenLakeEnv": _AttrAdapter(state=("s", "lastaction")),
    "gymnasium.envs.toy_text.cliffwalking:CliffWalkingEnv": _AttrAdapter(state=("s", "lastaction")),
}

_MUJOCO_ENV = "gymnasium.envs.mujoco.mujoco_env:MujocoEnv"
_ATARI_ENV = "ale_py.env:AtariEnv"


def _class_key(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


@functools.cache
def _mro_keys(cls: type) -> tuple[str, ...]:
    """The keys of ``cls`` and its bases, nearest first (cached: every snapshot looks them up)."""
    return tuple(_class_key(base) for base in cls.__mro__)


# Python-side attributes of a MuJoCo environment that are never saved: the simulator itself, the renderer,
# the random generator (saved separately) and gymnasium bookkeeping.
_MUJOCO_SKIPPED_KEYS = frozenset({"model", "data", "mujoco_renderer", "_np_random", "_np_random_seed", "spec"})


def _is_plain(value: Any) -> bool:
    if isinstance(value, (*_IMMUTABLE, np.ndarray)):
        return True
    if type(value) is tuple:
        return all(_is_plain(v) for v in value)
    return False


class _MujocoAdapter(_Adapter):
    """``gymnasium.envs.mujoco.MujocoEnv``: the whole ``MjData`` plus the plain Python attributes.

    The destination ``MjData`` is allocated once per snapshot (~0.5 ms); saving and restoring are
    ``mj_copyData`` calls (microseconds). The plain attributes (numbers, strings, arrays, tuples of those) of
    the environment object are copied as well, which covers subclasses that keep counters or goals in Python.
    """

    def save(self, layer: Any) -> tuple[Any, Any, dict[str, Any]]:
        import mujoco

        return self._save(layer, mujoco.MjData(layer.model))

    def save_into(self, layer: Any, previous: tuple[Any, Any, dict[str, Any]]) -> tuple[Any, Any, dict[str, Any]]:
        model, data, _ = previous
        return self.save(layer) if model is not layer.model else self._save(layer, data)

    def _save(self, layer: Any, data: Any) -> tuple[Any, Any, dict[str, Any]]:
        import mujoco

        model = layer.model
        mujoco.mj_copyData(data, model, layer.data)
        attrs = {
            name: _copy_value(value)
            for name, value in vars(layer).items()
            if name not in _MUJOCO_SKIPPED_KEYS and _is_plain(value)
        }
        return model, data, attrs

    def restore(self, layer: Any, saved: tuple[Any, Any, dict[str, Any]]) -> None:
        import mujoco

        model, data, attrs = saved
        if layer.model is not model and _mujoco_sizes(layer.model) != _mujoco_sizes(model):
            raise ValueError(
                f"This snapshot was taken from a different MuJoCo model than the one of {type(layer).__name__}."
            )
        mujoco.mj_copyData(layer.data, layer.model, data)
        current = vars(layer)
        for name, value in attrs.items():
            now = current.get(name, _MISSING)
            if now is value or (
                type(value) is np.ndarray
                and type(now) is np.ndarray
                and now.dtype == value.dtype
                and np.array_equal(now, value)
            ):
                continue  # unchanged (the usual case: these are mostly settings), no copy needed
            setattr(layer, name, _copy_value(value))


def _mujoco_sizes(model: Any) -> tuple[int, ...]:
    names = ("nq", "nv", "nu", "na", "nbody", "njnt", "ngeom", "nsite", "nmocap", "nsensordata", "nuserdata")
    return tuple(int(getattr(model, name, -1)) for name in names) + (int(getattr(model, "nbuffer", -1)),)


class _AtariAdapter(_Adapter):
    """ale-py's ``AtariEnv``: the emulator state including the ALE's own RNG (sticky actions).

    ``AtariEnv`` keeps no other Python state that changes during ``step``/``reset`` (its ``np_random``, used
    for stochastic frame skipping, is saved separately like every environment's).
    """

    def save(self, layer: Any) -> Any:
        ale = layer.ale
        try:
            return ale.cloneState(include_rng=True)  # ale-py >= 0.9
        except TypeError:  # older ale-py: the system state includes the RNG
            return ale.cloneSystemState()

    def restore(self, layer: Any, data: Any) -> None:
        layer.ale.restoreState(data)


_PROTOCOL = _ProtocolAdapter()
_MUJOCO = _MujocoAdapter()
_ATARI = _AtariAdapter()


# ---------------------------------------------------------------------------------------------------------
# Random generator of the base environment
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RngState:
    bit_generator: type
    state: Mapping[str, Any]
    seed: Any


def _save_rng(base: gym.Env) -> _RngState | None:
    attrs = vars(base)
    generator = attrs.get("_np_random")
    if generator is None:
        if not isinstance(base, gym.Env):
            return None
        # Created lazily on first use: create it now, so the original and every restored continuation
        # draw from the same stream.
        generator = base.np_random
    if not isinstance(generator, np.random.Generator):
        return None
    bit_generator = generator.bit_generator
    # the `state` getter builds a new dict of plain ints each call: already a copy
    return _RngState(type(bit_generator), bit_generator.state, attrs.get("_np_random_seed", _MISSING))


def _restore_rng(base: gym.Env, saved: _RngState) -> None:
    attrs = vars(base)
    generator = attrs.get("_np_random")
    if isinstance(generator, np.random.Generator) and type(generator.bit_generator) is saved.bit_generator:
        generator.bit_generator.state = saved.state  # the setter copies; the snapshot stays intact
    else:
        generator = np.random.Generator(saved.bit_generator())
        generator.bit_generator.state = saved.state
        attrs["_np_random"] = generator  # not through `Env.np_random`'s setter: it resets the seed to -1
    if saved.seed is _MISSING:
        attrs.pop("_np_random_seed", None)
    else:
        attrs["_np_random_seed"] = saved.seed


# ---------------------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------------------


def _iter_layers(env: gym.Env) -> Iterator[gym.Env]:
    layer = env
    while True:
        yield layer
        if not isinstance(layer, gym.Wrapper):
            return
        layer = layer.env


def _has_protocol(layer: Any) -> bool:
    """Whether the layer's class (not an instance attribute, not attribute forwarding) defines the protocol."""
    cls = type(layer)
    getter, setter = getattr(cls, "get_state", None), getattr(cls, "set_state", None)
    if not (callable(getter) and callable(setter)):
        return False
    # `MujocoEnv.set_state(qpos, qvel)` is not the protocol (and is inexact: derived quantities are stale).
    return getattr(setter, "__qualname__", "") != "MujocoEnv.set_state"


def _env_id(env: Any) -> str | None:
    try:
        spec = env.unwrapped.spec
    except Exception:  # a broken `spec`/`unwrapped` must not hide the real error
        return None
    return getattr(spec, "id", None)


def _error(layer: Any, env: Any, what: str, reason: str) -> UnrestorableEnvError:
    cls = type(layer)
    env_id = _env_id(env)
    where = f" (env id {env_id!r})" if env_id else ""
    return UnrestorableEnvError(
        f"Cannot save and restore the state of {what} {cls.__qualname__} ({cls.__module__}){where} exactly: "
        f"{reason}. {_PROTOCOL_HINT}"
    )


@functools.cache
def _wrapper_entry(cls: type) -> tuple[_AttrAdapter | None, frozenset[str]]:
    """The known-wrapper entry of ``cls`` (nearest base first) and the instance attributes it allows."""
    entry = next((_WRAPPERS[key] for key in _mro_keys(cls) if key in _WRAPPERS), None)
    return entry, _WRAPPER_BASE_KEYS if entry is None else _WRAPPER_BASE_KEYS | entry.allowed


def _wrapper_adapter(layer: gym.Wrapper, env: gym.Env) -> _Adapter | None:
    cls: type = type(layer)  # as `type`: mypy does not see a class object as Hashable (functools.cache's key)
    entry, allowed = _wrapper_entry(cls)
    unknown = sorted(vars(layer).keys() - allowed)
    if unknown:
        kind = "wrapper" if entry is None else "known wrapper"
        raise _error(
            layer,
            env,
            kind,
            f"it has instance attributes that may change while stepping and are not known to be constant: "
            f"{', '.join(unknown)}",
        )
    if entry is None or not entry.state:
        return None  # stateless
    return entry


def _base_adapter(layer: gym.Env, env: gym.Env) -> _Adapter:
    cls: type = type(layer)  # as `type`: mypy does not see a class object as Hashable (functools.cache's key)
    key = _class_key(cls)
    entry = _CLASSIC_CONTROL.get(key)
    if entry is not None:
        return entry
    mro = set(_mro_keys(cls))
    if _MUJOCO_ENV in mro:
        return _MUJOCO
    if _ATARI_ENV in mro:
        return _ATARI
    if cls.__module__.startswith("gymnasium.envs.box2d"):
        raise _error(layer, env, "Box2D environment", "the Box2D world (pybox2d) cannot be copied")
    if not isinstance(layer, gym.Env):
        raise _error(layer, env, "object", "it is not a gymnasium.Env (pass a single environment, not a VecEnv)")
    raise _error(
        layer,
        env,
        "environment",
        "only MuJoCo (gymnasium.envs.mujoco.MujocoEnv), the classic-control environments, the toy-text "
        "environments Taxi, FrozenLake and CliffWalking, Atari (ale-py) "
        "and environments implementing the protocol are supported",
    )


#: The plan of each environment seen, with the layers it was made for: vine snapshots and restores an
#: environment at every branch step, and the walk with its checks would cost more than a classic-control step.
_PLANS: weakref.WeakKeyDictionary[gym.Env, tuple[list[gym.Env], list[tuple[int, _Adapter]], tuple[int, ...]]] = (
    weakref.WeakKeyDictionary()
)


def _plan(env: gym.Env) -> tuple[list[gym.Env], list[tuple[int, _Adapter]]]:
    """The layers walked (outermost first) and the adapter of each layer that has state; reused while the
    chain holds the same layer objects with as many instance attributes each.

    Raises :class:`UnrestorableEnvError` for any layer that cannot be restored. Reads no state.
    """
    cached = _PLANS.get(env) if isinstance(env, gym.Env) else None
    if cached is not None:
        layers, adapters, keys = cached
        if all(a is b for a, b in zip(_iter_layers(env), layers)) and _attribute_counts(layers) == keys:
            return layers, adapters
    layers, adapters = _make_plan(env)
    _PLANS[env] = (layers, adapters, _attribute_counts(layers))
    return layers, adapters


def _attribute_counts(layers: list[gym.Env]) -> tuple[int, ...]:
    """How many instance attributes each layer has: a wrapper that grew one is checked again."""
    return tuple(len(vars(layer)) for layer in layers)


def _make_plan(env: gym.Env) -> tuple[list[gym.Env], list[tuple[int, _Adapter]]]:
    if not isinstance(env, gym.Env):
        raise _error(env, env, "object", "it is not a gymnasium.Env (pass a single environment, not a VecEnv)")
    layers: list[gym.Env] = []
    adapters: list[tuple[int, _Adapter]] = []
    for index, layer in enumerate(_iter_layers(env)):
        layers.append(layer)
        if _has_protocol(layer):
            adapters.append((index, _PROTOCOL))
            break
        adapter = _wrapper_adapter(layer, env) if isinstance(layer, gym.Wrapper) else _base_adapter(layer, env)
        if adapter is not None:
            adapters.append((index, adapter))
    return layers, adapters


# ---------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------


def check_restorable(env: gym.Env) -> None:
    """Raise :class:`UnrestorableEnvError` if :func:`get_state`/:func:`set_state` cannot handle ``env``.

    Touches no state (same dispatch as :func:`get_state`, without saving anything), so it can be called at
    model construction to fail early instead of in the middle of training.
    """
    _plan(env)


def check_round_trip(env: gym.Env, n_steps: int = 5, seed: int = 0) -> float:
    """Check that restoring ``env`` is exact, by one round trip: reset, snapshot, ``n_steps`` steps with fixed
    actions, restore, the same steps again; observations, rewards and the ``terminated``/``truncated`` flags must
    be bit-identical. Afterwards ``env`` is put back into the state it was in (never reset included), except
    where that state cannot be snapshot because the environment was never reset and has no state yet (a
    ``get_state()`` of the protocol that reads attributes set in ``reset``): then ``env`` is left freshly reset,
    as the check's own ``reset`` left it (SB3 resets it again before the first rollout).

    The attribute lists of the known environments are fixed, so a mutable attribute that a later gymnasium adds
    would make restores silently inexact; this catches it once, where the environment is built for branching.

    :param n_steps: steps replayed (fewer if the episode ends first)
    :param seed: seed of the actions (drawn from a copy of the action space: the environment's is untouched)
    :return: the seconds the check took
    :raises UnrestorableEnvError: naming the environment, if a replay differs (or it cannot be restored at all)
    """
    start = time.perf_counter()
    original = _snapshot_unless_never_reset(env)
    space = copy.deepcopy(env.action_space)
    space.seed(seed)
    actions = [space.sample() for _ in range(n_steps)]
    snapshot = None
    try:
        with no_monitor_writes(env):
            env.reset()
            snapshot = get_state(env)
            first = _play(env, actions)
            set_state(env, snapshot)
            second = _play(env, actions)
    finally:
        back = original if original is not None else snapshot  # no state before: the freshly reset one
        if back is not None:
            set_state(env, back)
    for step, (ours, again) in enumerate(zip(first, second)):
        for name, x, y in zip(("observation", "reward", "terminated", "truncated"), ours, again):
            if not _bit_identical(x, y):
                env_id = _env_id(env)
                cls = type(env.unwrapped)
                where = f"{cls.__qualname__} ({cls.__module__})" + (f", env id {env_id!r}" if env_id else "")
                raise UnrestorableEnvError(
                    f"Restoring the state of {where} is not exact: after a restore, replaying the same actions gave "
                    f"a different {name} at step {step} ({x!r} vs {y!r}). The environment probably keeps state that "
                    f"sb3_trpo_ext.sim_state does not copy (e.g. an attribute added by a newer version). "
                    f"{_PROTOCOL_HINT}"
                )
    return time.perf_counter() - start


def _snapshot_unless_never_reset(env: gym.Env) -> EnvState | None:
    """:func:`get_state` of ``env``; None if it fails because ``env`` was never reset and has no state yet.

    Never reset: gymnasium's ``OrderEnforcing`` (every ``gym.make``) says so; without one, an ``AttributeError``
    (an attribute that ``reset`` sets) is taken as such. A failure on an environment that was reset is raised:
    :func:`check_round_trip` snapshots it again after its own ``reset``, where the same error would surface.
    """
    try:
        return get_state(env)
    except UnrestorableEnvError:  # a TypeError: the dispatch refused the environment, reset or not
        raise
    except Exception as error:
        enforcing = [layer for layer in _iter_layers(env) if isinstance(layer, gym.wrappers.OrderEnforcing)]
        never_reset = (
            # gymnasium's own record (private, listed in docs/private_api.md); if renamed: raise, as before
            not getattr(enforcing[0], "_has_reset", True) if enforcing else isinstance(error, AttributeError)
        )
        if not never_reset:
            raise
        return None


def _play(env: gym.Env, actions: list[Any]) -> list[tuple[Any, Any, bool, bool]]:
    results = []
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        results.append((_copy_value(obs), reward, bool(terminated), bool(truncated)))
        if terminated or truncated:
            break
    return results


def _bit_identical(x: Any, y: Any) -> bool:
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_bit_identical(x[key], y[key]) for key in x)
    if isinstance(x, tuple) and isinstance(y, tuple):
        return len(x) == len(y) and all(_bit_identical(a, b) for a, b in zip(x, y))
    a, b = np.asarray(x), np.asarray(y)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def get_state(env: gym.Env, reuse: EnvState | None = None) -> EnvState:
    """Snapshot the full state of ``env``: every wrapper, the simulator and the random generator.

    The snapshot is independent of later steps of ``env`` and can be restored any number of times with
    :func:`set_state`.

    :param reuse: a snapshot of the same environment that is no longer needed: its buffers (MuJoCo's ``MjData``,
        whose allocation is most of a snapshot's cost) are reused, and it must not be restored afterwards
    :raises UnrestorableEnvError: if some layer cannot be restored exactly (see :func:`check_restorable`)
    """
    layers, adapters = _plan(env)
    chain = tuple(type(layer) for layer in layers)
    previous = {index: data for index, _, data in reuse._layers} if reuse is not None and reuse._chain == chain else {}
    saved = tuple(
        (
            index,
            adapter,
            adapter.save_into(layers[index], previous[index]) if index in previous else adapter.save(layers[index]),
        )
        for index, adapter in adapters
    )
    return EnvState(chain, saved, _save_rng(env.unwrapped))


def set_state(env: gym.Env, state: EnvState) -> None:
    """Restore a snapshot made by :func:`get_state` into ``env`` (the same environment or one built the same way).

    Afterwards, stepping ``env`` with the same actions gives bit-identical observations, rewards,
    ``terminated`` and ``truncated`` flags as after the snapshot was taken.

    :raises ValueError: if ``env``'s wrapper chain does not match the one the snapshot was taken from
    """
    if not isinstance(state, EnvState):
        raise TypeError(f"Expected an EnvState made by get_state(), got {type(state).__name__}")
    layers: list[gym.Env] = []
    for layer in _iter_layers(env):
        layers.append(layer)
        if len(layers) == len(state._chain):
            break
    chain = tuple(type(layer) for layer in layers)
    if chain != state._chain:
        raise ValueError(
            "This snapshot was taken from an environment with another wrapper chain: "
            f"{' > '.join(c.__name__ for c in state._chain)}, not {' > '.join(c.__name__ for c in chain)}"
        )
    for index, adapter, data in state._layers:
        adapter.restore(layers[index], data)
    if state._rng is not None:
        _restore_rng(env.unwrapped, state._rng)


@contextlib.contextmanager
def no_monitor_writes(env: gym.Env) -> Iterator[None]:
    """Context manager during which the SB3 ``Monitor`` wrappers of ``env`` write nothing to their files.

    Episodes that end inside the context (branch rollouts) still update the monitors' in-memory statistics
    (restore them with :func:`set_state`), but no CSV row is written. The writers are put back on exit,
    also when an exception is raised.
    """
    from stable_baselines3.common.monitor import Monitor

    silenced: list[tuple[Monitor, Any]] = []
    try:
        for layer in _iter_layers(env):
            if isinstance(layer, Monitor):
                silenced.append((layer, layer.results_writer))
                layer.results_writer = None
        yield
    finally:
        for monitor, writer in reversed(silenced):
            monitor.results_writer = writer
