"""The private upstream internals we rely on (docs/private_api.md): the page names every one of them, and each
pinned name still exists, so that an upgrade that renames one fails here, with its name."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import gymnasium as gym
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy

from sb3_trpo_ext import sim_state
from sb3_trpo_ext.common.mlp import _POLICY_METHODS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sb3_trpo_ext"
DOC = ROOT / "docs" / "private_api.md"
OWN_RECEIVERS = ("self", "cls", "super()")


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _scan() -> tuple[set[str], dict[str, list[str]], dict[str, list[str]]]:
    """Names the package defines; underscore names it reads from other objects, and from ``self``/``super()``."""
    defined: set[str] = set()
    foreign: dict[str, list[str]] = {}
    own: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                defined.add(node.id)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                defined.add(node.target.id)
            elif isinstance(node, ast.Attribute) and _private(node.attr):
                receiver = ast.unparse(node.value)
                if isinstance(node.ctx, ast.Store) and receiver in OWN_RECEIVERS:
                    defined.add(node.attr)
                (own if receiver in OWN_RECEIVERS else foreign).setdefault(node.attr, []).append(where)
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
                and _private(node.args[1].value)
            ):
                foreign.setdefault(node.args[1].value, []).append(where)
    return defined, foreign, own


def _sb3_names() -> set[str]:
    """Underscore names of SB3's algorithm, policy and callback classes, and of a built PPO's instance."""
    names = {n for cls in (OnPolicyAlgorithm, ActorCriticPolicy, BaseCallback, EvalCallback) for n in dir(cls)}
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=8, batch_size=8)
    model._setup_learn(8, None)
    return {n for n in names | set(vars(model)) if _private(n)}


def test_the_page_names_every_upstream_private_name_we_use() -> None:
    doc = DOC.read_text()
    defined, foreign, own = _scan()
    upstream = {name: places for name, places in foreign.items() if name not in defined}
    sb3 = _sb3_names()
    upstream |= {name: places for name, places in own.items() if name in sb3}
    missing = {name: places for name, places in upstream.items() if not re.search(rf"\b{re.escape(name)}\b", doc)}
    assert not missing, f"upstream private names used but not listed in docs/private_api.md: {missing}"
    assert "_setup_model" in upstream and "_last_obs" in upstream  # the scan does see the extension points


def test_sb3_extension_points_exist() -> None:
    for name in ("_setup_model", "_excluded_save_params", "_update_info_buffer", "_update_learning_rate"):
        assert callable(getattr(OnPolicyAlgorithm, name)), name
    assert callable(OnPolicyAlgorithm._get_torch_save_params)
    assert callable(EvalCallback._on_step)
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=8, batch_size=8)
    model._setup_learn(8, None)
    for name in ("_last_obs", "_last_episode_starts", "_n_updates", "_total_timesteps"):
        assert name in vars(model), name
    assert model._total_timesteps == 8


def test_policy_method_names_exist() -> None:
    for name in _POLICY_METHODS:
        assert callable(getattr(ActorCriticPolicy, name)), name


def test_torch_distribution_validation_default_is_readable() -> None:
    previous = th.distributions.Distribution._validate_args
    try:
        for value in (False, True):
            th.distributions.Distribution.set_default_validate_args(value)
            assert th.distributions.Distribution._validate_args is value
    finally:
        th.distributions.Distribution.set_default_validate_args(previous)


def test_gymnasium_keeps_the_generator_where_sim_state_reads_it() -> None:
    env = gym.make("CartPole-v1").unwrapped
    env.reset(seed=3)
    assert vars(env)["_np_random"] is env.np_random
    assert vars(env)["_np_random_seed"] == env.np_random_seed == 3


def test_sb3_contrib_recurrent_internals_exist() -> None:
    policies = pytest.importorskip("sb3_contrib.common.recurrent.policies")
    assert callable(policies.RecurrentActorCriticPolicy._process_sequence)


def _installed_wrappers() -> list[gym.Env]:
    """The known wrappers that can wrap CartPole, each built, reset and stepped."""
    from gymnasium.wrappers import (
        DelayObservation,
        FrameStackObservation,
        MaxAndSkipObservation,
        NormalizeObservation,
        NormalizeReward,
        RecordEpisodeStatistics,
        StickyAction,
        TimeAwareObservation,
    )

    def base() -> gym.Env:
        return gym.make("CartPole-v1")  # TimeLimit, OrderEnforcing, PassiveEnvChecker

    envs = [
        Monitor(RecordEpisodeStatistics(base())),
        FrameStackObservation(base(), 3),
        DelayObservation(base(), 2),
        TimeAwareObservation(base()),
        MaxAndSkipObservation(base(), 2),
        NormalizeObservation(base()),
        NormalizeReward(base()),
        StickyAction(base(), 0.25),
    ]
    try:
        from sb3_contrib.common.wrappers import ActionMasker, TimeFeatureWrapper
    except ImportError:
        pass
    else:
        envs += [TimeFeatureWrapper(base()), ActionMasker(base(), lambda env: [True, True])]
    for env in envs:
        env.reset(seed=0)
        env.step(env.action_space.sample())
    return envs


def test_known_wrapper_attribute_lists_match_the_installed_wrappers() -> None:
    """Each listed attribute exists on the installed wrapper and no unlisted one does (a rename fails here)."""
    for env in _installed_wrappers():
        layer = env
        while isinstance(layer, gym.Wrapper):
            entry, allowed = sim_state._wrapper_entry(type(layer))
            attributes = set(vars(layer))
            assert attributes <= allowed, (type(layer).__name__, sorted(attributes - allowed))
            if entry is not None:
                assert set(entry.state) <= attributes, (type(layer).__name__, sorted(set(entry.state) - attributes))
            layer = layer.env
        sim_state.check_round_trip(env)
