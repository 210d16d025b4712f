"""The private upstream internals we rely on (docs/private_api.md): the page names every one of them, and each
pinned name still exists, so that an upgrade that renames one fails here, with its name.

Besides underscore attributes, the scan finds what an underscore does not mark (:func:`_scan_patches`): writes to
attributes of modules and classes of other packages (``module.attr = ...``, ``setattr``/``delattr``), unbound calls
of another package's methods on our objects (``UpstreamClass.method(self, ...)``) and torch's ``th.ops.aten``
operators. Each must be named on the page."""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import re
import textwrap
import types
from pathlib import Path

import gymnasium as gym
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy

from sb3_trpo_ext import sim_state
from sb3_trpo_ext.fast.mlp import _POLICY_METHODS

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "sb3_trpo_ext"
DOC = ROOT / "docs" / "private_api.md"
OWN_RECEIVERS = ("self", "cls", "super()")
OWN_PACKAGE = "sb3_trpo_ext"


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


# ------------------------------------------------------------------------------------------------- patches
def _upstream_imports(tree: ast.AST) -> dict[str, str]:
    """Names that the file binds by importing from another package (at any depth: the package imports rl_zoo3
    and friends inside functions) -> the dotted path they stand for."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                # ``import a.b`` binds ``a``; ``import a.b as c`` binds ``c`` to ``a.b``
                bound[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module != "__future__":
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return {name: path for name, path in bound.items() if path.split(".")[0] != OWN_PACKAGE}


def _dotted(node: ast.expr, imports: dict[str, str]) -> str | None:
    """``a.b.c`` as the dotted path it reaches, when its root is a name imported from another package."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name) and node.id in imports:
        return ".".join([imports[node.id], *reversed(parts)])
    return None


@functools.cache
def _resolve(dotted: str) -> object | None:
    """The object a dotted path names (None if its package is not installed or the name is gone)."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for part in parts[split:]:
                obj = getattr(obj, part)
        except AttributeError:
            return None
        return obj
    return None


def _targets(node: ast.expr) -> list[ast.expr]:
    if isinstance(node, (ast.Tuple, ast.List)):
        return [leaf for element in node.elts for leaf in _targets(element)]
    return [node.value] if isinstance(node, ast.Starred) else [node]


def _scan_patches(source: str, relative: str) -> dict[str, list[str]]:
    """What a file changes or calls in other packages without an underscore to show it, as the names the page
    must carry -> the places (``relative:line``):

    * ``module.attr = ...`` / ``Class.attr = ...`` (also augmented, deleted, unpacked), ``setattr``/``delattr``
      with such a target, where the module or class is imported from another package: ``owner.attr`` (the last
      part of the owner's dotted path and the attribute, e.g. ``exp_manager.make_vec_env``);
    * ``setattr``/``delattr`` on an object the source does not name (a parameter, a loop variable), and
      ``obj.attr = f`` storing a function defined in the enclosing function (a method patch through a variable):
      the site, ``file::function`` (``zoo/masking.py::masked_play``), whose entry says what it patches;
    * ``UpstreamClass.method(obj, ...)``: a plain function of a class imported from another package called
      unbound on an object of ours: ``Class.method``;
    * ``torch.ops.aten.op``: ``aten.op``.

    :param source: the file's text
    :param relative: its path relative to the package (``zoo/masking.py``), for the sites and places
    """
    tree = ast.parse(source)
    imports = _upstream_imports(tree)
    found: dict[str, list[str]] = {}

    def note(name: str, node: ast.AST) -> None:
        found.setdefault(name, []).append(f"{relative}:{getattr(node, 'lineno', 0)}")

    def owner_attr(owner: str, attr: str) -> str:
        return f"{owner.rsplit('.', 1)[-1]}.{attr}"

    def visit(node: ast.AST, scope: list[tuple[str, bool]], local_functions: set[str]) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            inner = [*scope, (node.name, isinstance(node, ast.ClassDef))]
            nested = {n.name for n in ast.walk(node) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
            for child in ast.iter_child_nodes(node):
                visit(child, inner, nested - {node.name})
            return
        # the site: the top-level function, or the method of a top-level class
        names = [name for name, _ in scope[: 2 if scope and scope[0][1] else 1]] or ["<module>"]
        site = f"{relative}::{'.'.join(names)}"
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            value = getattr(node, "value", None)
            for target in (leaf for t in targets for leaf in _targets(t)):
                if not isinstance(target, ast.Attribute):
                    continue
                owner = _dotted(target.value, imports)
                if owner is not None:
                    note(owner_attr(owner, target.attr), target)
                elif ast.unparse(target.value) not in OWN_RECEIVERS and (
                    isinstance(value, ast.Lambda) or (isinstance(value, ast.Name) and value.id in local_functions)
                ):
                    note(site, target)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr"):
            if node.args and ast.unparse(node.args[0]) not in OWN_RECEIVERS:
                owner = _dotted(node.args[0], imports)
                attr = node.args[1] if len(node.args) > 1 else None
                if owner is not None and isinstance(attr, ast.Constant) and isinstance(attr.value, str):
                    note(owner_attr(owner, attr.value), node)
                else:
                    note(site, node)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            owner = _dotted(node.func.value, imports)
            cls = _resolve(owner) if owner is not None else None
            if isinstance(cls, type) and isinstance(
                inspect.getattr_static(cls, node.func.attr, None), types.FunctionType
            ):
                note(owner_attr(owner or "", node.func.attr), node)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            dotted = _dotted(node, imports)
            if dotted is not None and dotted.startswith("torch.ops.aten.") and dotted.count(".") == 3:
                note(owner_attr("aten", node.attr), node)
        for child in ast.iter_child_nodes(node):
            visit(child, scope, local_functions)

    visit(tree, [], set())
    return found


def _unlisted(found: dict[str, list[str]], doc: str) -> dict[str, list[str]]:
    return {name: places for name, places in found.items() if not re.search(rf"(?<!\w){re.escape(name)}(?!\w)", doc)}


def test_the_page_names_every_upstream_patch_and_unbound_call() -> None:
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for name, places in _scan_patches(path.read_text(), path.relative_to(PACKAGE).as_posix()).items():
            found.setdefault(name, []).extend(places)
    missing = _unlisted(found, DOC.read_text())
    assert not missing, (
        f"patches of other packages or unbound upstream calls not listed in docs/private_api.md: {missing}"
    )
    # the scan does see the known ones
    for name in ("exp_manager.ExperimentManager", "RecurrentPPO.collect_rollouts", "zoo/masking.py::masked_play"):
        assert name in found, name


SCANNER_PROBE = """
import sys
import rl_zoo3.utils
import torch as th
from rl_zoo3 import exp_manager
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.vec_env import VecNormalize
from sb3_trpo_ext.trpo import TRPO

class Ours(TRPO):
    def collect(self, env, owner, algo_class):
        exp_manager.make_vec_env = None
        rl_zoo3.utils.ALGOS, sys.argv = {}, []
        setattr(exp_manager, "EvalCallback", None)
        delattr(owner, "attribute")
        TRPO.learn = None  # ours: not listed
        self.policy_class = None  # ours
        def predict(*args):
            return None
        algo_class.predict = predict
        BasePolicy.extract_features(self.policy, None)
        VecNormalize.load("path", env)  # a staticmethod: not an unbound call
        th.ops.aten.tanh_backward
        return RecurrentPPO.collect_rollouts(self, env, None, None, 1)
"""


def test_the_patch_scanner_flags_each_kind_of_patch() -> None:
    """The scanner itself, on a file written to hold one of each pattern (and some that are not patches)."""
    found = _scan_patches(SCANNER_PROBE, "probe.py")
    assert set(found) == {
        "exp_manager.make_vec_env",
        "utils.ALGOS",
        "sys.argv",
        "exp_manager.EvalCallback",
        "probe.py::Ours.collect",  # delattr on a variable, and algo_class.predict = predict
        "BasePolicy.extract_features",
        "RecurrentPPO.collect_rollouts",
        "aten.tanh_backward",
    }, sorted(found)
    assert len(found["probe.py::Ours.collect"]) == 2
    assert _unlisted({"exp_manager.make_vec_env": ["x"]}, "`rl_zoo3.exp_manager.make_vec_env`") == {}
    assert _unlisted({"exp_manager.make_vec_env": ["x"]}, "`exp_manager.make_vec_env_kwargs`") != {}


# ------------------------------------------------------------------------------------- upstream code we run
def _self_attributes(function: object) -> tuple[set[str], set[str]]:
    """The attributes an upstream method reads from ``self`` and the ones it assigns (``self.x = ...`` or
    ``self.x[...] = ...``), from its source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))  # type: ignore[arg-type]
    reads, writes = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            (writes if isinstance(node.ctx, ast.Store) else reads).add(node.attr)
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                base = target.value if isinstance(target, ast.Subscript) else None
                if isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name) and base.value.id == "self":
                    writes.add(base.attr)
    return reads, writes


def test_recurrent_ppo_collection_reads_only_what_recurrent_trpo_has() -> None:
    """RecurrentTRPO.collect_rollouts calls sb3-contrib's ``RecurrentPPO.collect_rollouts(self, ...)`` unbound on a
    RecurrentTRPO (not a RecurrentPPO): every attribute that loop reads from ``self`` must exist on ours, and the
    loop must be RecurrentPPO's own (were it inherited from SB3, the recurrent states would be dropped)."""
    pytest.importorskip("sb3_contrib")
    from sb3_contrib import RecurrentPPO

    from sb3_trpo_ext import RecurrentTRPO

    assert "collect_rollouts" in vars(RecurrentPPO)
    assert list(inspect.signature(RecurrentPPO.collect_rollouts).parameters) == [
        "self", "env", "callback", "rollout_buffer", "n_rollout_steps",
    ]  # fmt: skip
    model = RecurrentTRPO(
        "MlpLstmPolicy", "CartPole-v1", n_steps=8, batch_size=8, policy_kwargs={"lstm_hidden_size": 8}
    )
    model._setup_learn(8, None)
    reads, _ = _self_attributes(RecurrentPPO.collect_rollouts)
    missing = sorted(name for name in reads if not hasattr(model, name))
    assert not missing, f"RecurrentPPO.collect_rollouts reads {missing}, which RecurrentTRPO lacks"
    assert {"_last_obs", "_last_lstm_states", "policy"} <= reads  # the source was read


def test_sb3_setup_builds_through_the_class_attributes_we_swap() -> None:
    """MaskableTRPO and RecurrentTRPO swap ``policy_class`` / ``rollout_buffer_class`` around
    ``super()._setup_model()``: SB3's setup must build the buffer and the policy by calling those attributes."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(OnPolicyAlgorithm._setup_model)))
    called = {
        ast.unparse(node.func): {k.arg for k in node.keywords}
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    assert "self.rollout_buffer_class" in called and "self.policy_class" in called, sorted(called)
    assert "use_sde" in called["self.policy_class"]  # what MaskableTRPO's stand-in drops
    assert list(called).index("self.rollout_buffer_class") < list(called).index("self.policy_class")


def test_rollout_buffer_add_writes_only_what_fill_buffer_writes() -> None:
    """``fast/rollout.py::fill_buffer`` copies a whole rollout into SB3's ``RolloutBuffer`` and sets ``pos`` and
    ``full`` itself instead of calling ``add``: ``add`` must write nothing more."""
    from stable_baselines3.common.buffers import RolloutBuffer

    _, writes = _self_attributes(RolloutBuffer.add)
    assert writes == {"observations", "actions", "rewards", "episode_starts", "values", "log_probs", "pos", "full"}


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
    # TRPO._get_policy_from_name overrides SB3's alias lookup, which __init__ calls with the alias
    assert list(inspect.signature(OnPolicyAlgorithm._get_policy_from_name).parameters) == ["self", "policy_name"]
    assert "self._get_policy_from_name(policy)" in inspect.getsource(BaseAlgorithm.__init__)
    assert callable(EvalCallback._on_step)
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=8, batch_size=8)
    model._setup_learn(8, None)
    for name in ("_last_obs", "_last_episode_starts", "_n_updates", "_total_timesteps"):
        assert name in vars(model), name
    assert model._total_timesteps == 8


def test_sb3_learn_loop_is_the_one_the_ranks_follow() -> None:
    """distributed/learn.py follows SB3's on-policy loop step for step (plus the ranks' meeting) and TRPO's
    _setup_learn/_init_callback rely on how SB3 sets up logging and callbacks."""
    loop = inspect.getsource(OnPolicyAlgorithm.learn)
    steps = ["self._setup_learn(", "callback.on_training_start(", "self.collect_rollouts(",
             "self._update_current_progress_remaining(", "self.dump_logs(", "self.train()", "callback.on_training_end()"]  # fmt: skip
    positions = [loop.index(step) for step in steps]
    assert positions == sorted(positions)
    # what SB3's loop reads and calls on the model: a new step there is missing from ours until added
    assert set(re.findall(r"self\.(\w+)", loop)) == {
        "_setup_learn",
        "collect_rollouts",
        "_update_current_progress_remaining",
        "dump_logs",
        "train",
        "num_timesteps",
        "ep_info_buffer",
        "env",
        "rollout_buffer",
        "n_steps",
    }, "SB3's learn() loop changed: check distributed/learn.py"
    setup = inspect.getsource(BaseAlgorithm._setup_learn)
    assert "if not self._custom_logger:" in setup and "self._logger = utils.configure_logger(" in setup
    assert "self._init_callback(callback, progress_bar)" in setup
    assert list(inspect.signature(BaseAlgorithm._init_callback).parameters) == ["self", "callback", "progress_bar"]
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=8, batch_size=8)
    assert model._vec_normalize_env is None and callable(model._update_current_progress_remaining)


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
