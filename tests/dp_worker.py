"""One rank of the data-parallel tests (tests/integration/test_data_parallel.py): ``python dp_worker.py SCENARIO OUT``
with ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` set by the test (or unset: the one-process reference).
Writes what the test compares to ``OUT`` (JSON); an exception is written there too, with its type and message."""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from sb3_trpo_ext import TRPO, MaskableTRPO, RecurrentTRPO

RANK = int(os.environ.get("RANK", "0"))
WORLD = int(os.environ.get("WORLD_SIZE", "1"))
SCENARIOS: dict[str, Callable[[Path], dict[str, Any]]] = {}


def scenario(function: Callable[[Path], dict[str, Any]]) -> Callable[[Path], dict[str, Any]]:
    SCENARIOS[function.__name__] = function
    return function


def flat(params: Any) -> list[float]:
    return th.nn.utils.parameters_to_vector([p.detach() for p in params]).tolist()


def set_fixed_parameters(model: TRPO) -> None:
    """The same initial parameters in every process (the ranks' own initial draws differ until learn())."""
    generator = th.Generator().manual_seed(123)
    with th.no_grad():
        for param in model.policy.parameters():
            param.copy_(0.3 * th.randn(param.shape, generator=generator))


@scenario
def update(out: Path) -> dict[str, Any]:
    """The update on rank r's half of a fixed batch (ranks) or on the whole batch (one process)."""
    from reduce_helpers import half, make_batch, make_model, step

    from sb3_trpo_ext.trpo.critic import fit_critic

    model = make_model(discrete=False)
    model._join_ranks()  # what learn() does first
    set_fixed_parameters(model)
    initial = flat(model._actor_params)
    th.manual_seed(1)
    batch = make_batch(model, n=64)
    if WORLD > 1:
        batch = half(batch, RANK)
        stats = step(model, batch)
        model._update_critic(batch)
    else:
        stats = step(model, batch)
        fit_critic(
            model.policy, model._critic_params, batch.observations, batch.returns, model.n_critic_updates,
            model.batch_size, *model._speed.critic(model.policy), permutation=np.random.default_rng([0, 3]).permutation,
        )  # fmt: skip
    return {
        "initial": initial,
        "actor": flat(model._actor_params),
        "critic": flat(model._critic_params),
        "cg_iterations": stats["cg_iterations"],
        "line_search_steps": stats["line_search_steps"],
    }


@scenario
def seeds(out: Path) -> dict[str, Any]:
    """The environments' first observations, the first action draws and the global step count."""
    if WORLD == 1:  # the one-process reference: every rank's environments in one VecEnv
        env = make_vec_env("CartPole-v1", n_envs=4)
        env.seed(7)
        return {"obs": env.reset().tolist()}
    model = TRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2), n_steps=64, batch_size=64, seed=7)
    model._join_ranks()  # what learn() does first: the rank's seeds
    obs = model.env.reset().tolist()
    draws = model._collect_rng.random(3).tolist()
    model.set_random_seed(7)  # the same seeds again, for learn()'s reset
    model.learn(256)
    return {"obs": obs, "draws": draws, "num_timesteps": model.num_timesteps, "params": flat(model.policy.parameters())}


class HangAfter(gym.Wrapper):
    """An environment whose simulator hangs in ``step`` after ``steps`` steps (rank 1 only)."""

    def __init__(self, env: gym.Env, steps: int):
        super().__init__(env)
        self.left = steps

    def step(self, action: Any) -> Any:
        self.left -= 1
        if self.left < 0 and RANK == 1:
            time.sleep(600)
        return self.env.step(action)


class SleepOnce(BaseCallback):
    """A long evaluation: one callback call that takes ``seconds``."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def _on_step(self) -> bool:
        if self.n_calls == 20:
            time.sleep(self.seconds)
        return True


class StopAt(BaseCallback):
    """Stops training at the ``step``-th call, mid-rollout."""

    def __init__(self, step: int):
        super().__init__()
        self.step = step

    def _on_step(self) -> bool:
        return self.n_calls < self.step


def train(model: TRPO, steps: int, **learn: Any) -> dict[str, Any]:
    before = flat(model.policy.parameters())
    model.learn(steps, **learn)
    return {
        "num_timesteps": model.num_timesteps,
        "moved": flat(model.policy.parameters()) != before,
        "params": flat(model.policy.parameters()),
        "n_updates": model._n_updates,
    }


@scenario
def hang(out: Path) -> dict[str, Any]:
    env = make_vec_env("CartPole-v1", n_envs=1, wrapper_class=HangAfter, wrapper_kwargs=dict(steps=100))
    model = TRPO("MlpPolicy", env, n_steps=64, batch_size=64, seed=0, distributed_timeout=3.0)
    started = time.monotonic()
    try:
        model.learn(640)
    finally:
        print(f"stopped after {time.monotonic() - started:.1f} s", file=sys.stderr)
    return {}


@scenario
def long_callback(out: Path) -> dict[str, Any]:
    model = TRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=1), n_steps=64, batch_size=64, seed=0,
                 distributed_timeout=2.0)  # fmt: skip
    return train(model, 256, callback=SleepOnce(6.0))


@scenario
def stop_mid_rollout(out: Path) -> dict[str, Any]:
    model = TRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=1), n_steps=64, batch_size=64, seed=0)
    return train(model, 640, callback=StopAt(64 * 2 + 10))  # two updates, then a stop in the third rollout


@scenario
def mismatch(out: Path) -> dict[str, Any]:
    model = TRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=1), n_steps=64, batch_size=64, seed=0,
                 target_kl=0.01 if RANK == 0 else 0.02)  # fmt: skip
    return train(model, 128)


@scenario
def non_finite(out: Path) -> dict[str, Any]:
    """Rank 1's batch holds a NaN reward: every rank skips the update (actor and critic)."""
    model = TRPO("MlpPolicy", make_vec_env("Pendulum-v1", n_envs=1), n_steps=64, batch_size=64, seed=0)
    original = model._finish_rollout

    def poisoned(buffer: Any, last_values: Any, dones: Any) -> None:
        original(buffer, last_values, dones)
        if RANK == 1:
            buffer.advantages[3] = np.nan

    model._finish_rollout = poisoned  # type: ignore[method-assign]
    model.learn(64)  # broadcasts rank 0's parameters, collects, skips
    before = flat(model.policy.parameters())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(model, 64, reset_num_timesteps=False)
    result["warnings"] = [str(w.message) for w in caught]
    result["moved"] = flat(model.policy.parameters()) != before
    return result


@scenario
def diverge(out: Path) -> dict[str, Any]:
    model = TRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=1), n_steps=64, batch_size=64, seed=0)
    model.learn(64)
    if RANK == 1:
        with th.no_grad():
            next(model.policy.parameters()).add_(1e-3)
    assert model._ranks is not None
    model._ranks.check_parameters(list(model.policy.parameters()))
    return {}


@scenario
def rank_zero_speaks(out: Path) -> dict[str, Any]:
    folder = Path(os.environ["DP_FOLDER"])
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1))
    model = TRPO("MlpPolicy", env, n_steps=64, batch_size=64, seed=0, verbose=1, tensorboard_log=str(folder / "tb"))
    result = train(model, 512, progress_bar=True)
    model.save(folder / f"model-rank{RANK}")
    result["obs_rms"] = [env.obs_rms.mean.tolist(), env.obs_rms.var.tolist(), env.obs_rms.count]
    result["ret_rms"] = [float(env.ret_rms.mean), float(env.ret_rms.var), env.ret_rms.count]
    result["episodes"] = len(model.ep_info_buffer or [])
    return result


@scenario
def predict_only(out: Path) -> dict[str, Any]:
    """Rank 0 alone builds a model to predict with (an evaluation after training): no collective, no wait."""
    import torch.distributed as dist

    if RANK == 0:
        model = TRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=1), seed=0)
        model.predict(np.zeros(4, dtype=np.float32), deterministic=True)
    return {"initialised": dist.is_initialized()}


@scenario
def vine(out: Path) -> dict[str, Any]:
    model = TRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=1), n_steps=64, batch_size=64, seed=0,
                 sampling="vine", vine_n_states=8, vine_n_actions=2, vine_horizon=5)  # fmt: skip
    return train(model, 128)


@scenario
def recurrent(out: Path) -> dict[str, Any]:
    model = RecurrentTRPO("MlpLstmPolicy", make_vec_env("Pendulum-v1", n_envs=1), n_steps=32, batch_size=16, seed=0,
                          policy_kwargs=dict(lstm_hidden_size=8, net_arch=[8]))  # fmt: skip
    return train(model, 64)


@scenario
def maskable(out: Path) -> dict[str, Any]:
    from sb3_contrib.common.envs import InvalidActionEnvDiscrete

    env = make_vec_env(lambda: InvalidActionEnvDiscrete(dim=10, n_invalid_actions=4), n_envs=1)
    model = MaskableTRPO("MlpPolicy", env, n_steps=64, batch_size=64, seed=0)
    return train(model, 128)


if __name__ == "__main__":
    name, out_path = sys.argv[1], Path(sys.argv[2])
    th.set_num_threads(1)
    try:
        result = SCENARIOS[name](out_path)
    except Exception as error:  # reported to the test, which decides whether it was expected
        result = {"error": type(error).__name__, "message": str(error), "traceback": traceback.format_exc()}
    out_path.write_text(json.dumps(result))
    if "error" in result:
        sys.exit(3)
