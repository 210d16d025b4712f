"""Vine sampling in the Zoo's ``SubprocVecEnv`` (``--vec-env subproc``): the public route into the workers.

Vine's branches run in the worker that holds each environment. Their public route there is
:class:`sb3_trpo_ext.common.vine.VineBranchWrapper`, the outermost wrapper of every environment (see
``docs/private_api.md``); without it vine falls back to reading SB3's private worker frame. While one of our keys
that can sample vine trains, :func:`vine_branch_wrapper` makes the Zoo's ``make_vec_env`` add it, on top of the
block's own ``env_wrapper`` (SB3's ``make_vec_env`` applies ``wrapper_class`` last, so it is the outermost), for a
``SubprocVecEnv`` only. The hyperparameters, and so the run's ``config.yml``, are left as they were: ``enjoy``
and the safe loader see the same folder as before, and the wrapper, which changes nothing but offers the branch
method, is not needed there. For a key trained single path the wrapper is inert (the key's class can still be
given ``-params sampling:"'vine'"``, so every key whose class can branch gets it).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
from stable_baselines3.common.vec_env import SubprocVecEnv

from sb3_trpo_ext.common.vine import VineBranchWrapper

__all__ = ["OutermostVineBranchWrapper", "vine_branch_wrapper"]


@dataclass
class OutermostVineBranchWrapper:
    """A ``wrapper_class`` for ``make_vec_env``: the block's own wrapper (if any, with its ``wrapper_kwargs``), then
    :class:`VineBranchWrapper` on top. Pickles whenever the inner wrapper does (``SubprocVecEnv`` cloudpickles the
    environment functions).

    :param inner: the wrapper the Zoo would have applied (``env_wrapper``), or None
    :param inner_kwargs: its keyword arguments (``make_vec_env``'s ``wrapper_kwargs``), or None
    """

    inner: Callable[..., gym.Env] | None = None
    inner_kwargs: dict[str, Any] | None = None

    def __call__(self, env: gym.Env) -> gym.Env:
        if self.inner is not None:
            env = self.inner(env, **(self.inner_kwargs or {}))
        return VineBranchWrapper(env)


def _can_branch(algo: str) -> bool:
    """Whether ``algo`` is one of our keys whose class can sample vine (TRPO and its subclasses, except
    RecurrentTRPO, which refuses vine)."""
    from sb3_trpo_ext.recurrent import RecurrentTRPO
    from sb3_trpo_ext.trpo import TRPO
    from sb3_trpo_ext.zoo.registry import ZOO_ALGORITHMS

    entry = ZOO_ALGORITHMS.get(algo)
    return entry is not None and issubclass(entry.algo_class, TRPO) and not issubclass(entry.algo_class, RecurrentTRPO)


@contextlib.contextmanager
def vine_branch_wrapper(algo: str) -> Iterator[None]:
    """While the block runs, the Zoo's ``ExperimentManager`` builds every ``SubprocVecEnv`` of ``algo`` with
    :class:`VineBranchWrapper` as each environment's outermost wrapper, if ``algo`` is one of our keys that can
    sample vine (``trpo_vine``, ``trpo_ext``, ``trpo_mask``); other keys and ``DummyVecEnv`` are left alone.

    :param algo: the ``--algo`` of the command
    """
    if not _can_branch(algo):
        yield
        return
    from rl_zoo3 import exp_manager

    original = exp_manager.make_vec_env
    signature = inspect.signature(original)

    def make_vec_env(*args: Any, **kwargs: Any) -> Any:
        arguments = signature.bind(*args, **kwargs).arguments
        vec_env_cls = arguments.get("vec_env_cls")
        if isinstance(vec_env_cls, type) and issubclass(vec_env_cls, SubprocVecEnv):
            arguments["wrapper_class"] = OutermostVineBranchWrapper(
                arguments.get("wrapper_class"), arguments.pop("wrapper_kwargs", None)
            )
        return original(**arguments)

    exp_manager.make_vec_env = make_vec_env
    try:
        yield
    finally:
        exp_manager.make_vec_env = original
