"""Scaling benchmark of data-parallel TRPO (issue 24): two ranks against one process on this machine, what the
ranks spend on communication, the loopback's latency and bandwidth, and a cost model projected to many ranks.

Protocol. Every configuration runs in fresh processes started by this script (``OMP_NUM_THREADS=1``, one torch
thread, the same seed everywhere); each process builds its model, runs an untimed warm-up ``learn`` of
``--warmup-updates`` updates, writes a ready file and waits; when every process of the configuration is ready
the script releases them together (a line on their stdin) and each times ``learn`` of K updates
(``reset_num_timesteps=True``). The configurations alternate across repeats (the order rotates by one each
repeat), so that noise on a shared machine hits all alike; every figure is a median over repeats with its min-max.

Configurations, each with the environment's ``trpo_ext`` Zoo block (hyperparams/trpo_ext.yml; VecNormalize where
it says ``normalize``; the global batch is the block's ``n_envs`` (2) times its ``n_steps`` per env):

* ``one_process`` (a): our TRPO, one process, DummyVecEnv with 2 envs;
* ``two_ranks`` (b): our TRPO, 2 data-parallel ranks with 1 env each (``n_steps`` per env as in the block, so the
  same global batch), launched as torchrun launches its workers (RANK, WORLD_SIZE, MASTER_ADDR=127.0.0.1,
  ``TORCHELASTIC_USE_AGENT_STORE=True``, ``GLOO_SOCKET_IFNAME=lo``) with the job's store hosted by this script on
  a socket bound to 127.0.0.1 (a TCPStore given a port listens on every interface); steps/s = global steps over
  the slower rank's time;
* ``ceiling`` (c): two independent one-process runs with 1 env each and the block's ``n_steps``, released
  together, their steps/s summed: what two cores give with no communication at all;
* ``ours_subproc`` (d): our TRPO, one process, SubprocVecEnv over 2 processes;
* ``contrib_subproc`` (e) and ``contrib_dummy`` (f): sb3-contrib's ``TRPO`` with SubprocVecEnv over 2 processes
  and DummyVecEnv with 2 envs, with the same hyperparameters converted to sb3-contrib's per-dimension
  conventions: ``target_kl`` and ``cg_damping`` divided by the action dimensions (Hopper-v5: 3, so 0.01 and 0.1;
  the same trust region and step as ours, as hyperparams/trpo_ext.yml explains);
* ``one_process_256`` and ``two_ranks_256`` (Hopper only): (a) and (b) with 256x256 actor and critic
  (``net_arch=dict(pi=[256, 256], vf=[256, 256])``).

Inside the ranks (the script's own instrumentation, not package code): ``torch.distributed``'s ``all_reduce``,
``all_gather``, ``broadcast`` and ``all_gather_object`` are wrapped in the rank processes (count, wall time,
bytes this rank contributes: the tensor's, or the pickled object's), each call labelled with the phase it ran in
(``actor``: the natural-gradient step; ``critic``: its gather; ``train``: the rest of ``train()``; ``rollout``:
between the rollouts and the update; ``start``: learn's start), and ``train``, ``collect_rollouts``, the
natural-gradient step, the critic's fit and ``Ranks.meet`` are timed.

Loopback: ``all_reduce`` and ``all_gather`` of float64 tensors of each ``--loopback-sizes`` between 2 gloo ranks
on 127.0.0.1, each call timed (``--loopback-reps`` after 5 untimed), with the cores idle and with both busy (one
busy-loop process per core at normal priority), alternating over ``--loopback-rounds`` rounds; medians; a fit of
``alpha + bytes / beta`` per kind (least squares on relative error).

The critic's minibatch step (forward, gradient, Adam) on this machine, for each network and minibatch size
(``--critic-sizes``; 16 steps an epoch, as the Zoo's Hopper block has), feeds the cost model; its projection to
8, 64 and 256 ranks uses an assumed network (``--alpha-us``, ``--gbit``; all_reduce ``2 log2(N) alpha +
2 bytes/beta``, all_gather ``log2(N) alpha + (N-1) bytes/beta``) and is labelled as projected.

Every process imports one copy of ``sb3_trpo_ext`` taken when the run starts (edits to the working tree during
the run's minutes change nothing measured); ``system`` in the JSON records the commit and the package files that
differed from it.

Run it from the repository root (docs/bench/scale.json: the first line, then the second once the summary gained
sections; ~15 minutes on 2 cores, nothing else running)::

    OMP_NUM_THREADS=1 python benchmarks/scale.py --json docs/bench/scale.json --raw /tmp/scale.raw.json
    python benchmarks/scale.py --from-raw /tmp/scale.raw.json --json docs/bench/scale.json  # summarise again
    python benchmarks/scale.py --envs CartPole-v1 --repeats 5
    python benchmarks/scale.py --tiny --json /tmp/scale.json   # a smoke test at tiny sizes, ~25 s
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import math
import os
import pickle
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter, process_time
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HYPERPARAMS = ROOT / "hyperparams" / "trpo_ext.yml"
KINDS = ("all_reduce", "all_gather", "broadcast", "all_gather_object")
NETS: dict[str, dict[str, Any] | None] = {
    "64x64": None,  # SB3's MlpPolicy default, the Zoo's Hopper block
    "256x256": {"net_arch": {"pi": [256, 256], "vf": [256, 256]}},
}
TARGETS = {"Hopper-v5": {"two_ranks/one_process": 1.6, "two_ranks/ceiling": 0.85}}
SNAPSHOT = os.environ.get("SCALE_PACKAGE_SNAPSHOT", "")  # a copy of sb3_trpo_ext the workers import (see main)
SMALL = 1000  # bytes: a collective below it is latency-bound (a flag, a count, a KL)


@dataclass(frozen=True)
class Config:
    """One configuration: ``processes`` processes released together (ranks of one job, or independent)."""

    name: str
    label: str
    library: str  # "ours" or "sb3-contrib"
    processes: int
    ranks: bool  # the processes are the ranks of one data-parallel job (else independent, steps/s summed)
    envs_per_process: int
    vec_env: str  # "dummy" or "subproc"
    net: str = "64x64"


CONFIGS = {
    config.name: config
    for config in [
        Config("one_process", "(a) ours, 1 process, DummyVecEnv 2 envs", "ours", 1, False, 2, "dummy"),
        Config("two_ranks", "(b) ours, 2 ranks x 1 env", "ours", 2, True, 1, "dummy"),
        Config("ceiling", "(c) 2 independent processes x 1 env, summed", "ours", 2, False, 1, "dummy"),
        Config("ours_subproc", "(d) ours, SubprocVecEnv 2 processes", "ours", 1, False, 2, "subproc"),
        Config("contrib_subproc", "(e) sb3-contrib, SubprocVecEnv 2 processes", "sb3-contrib", 1, False, 2, "subproc"),
        Config("contrib_dummy", "(f) sb3-contrib, DummyVecEnv 2 envs", "sb3-contrib", 1, False, 2, "dummy"),
        Config("one_process_256", "(a) with 256x256 networks", "ours", 1, False, 2, "dummy", "256x256"),
        Config("two_ranks_256", "(b) with 256x256 networks", "ours", 2, True, 1, "dummy", "256x256"),
    ]
}
BASE_CONFIGS = ["one_process", "two_ranks", "ceiling", "ours_subproc", "contrib_subproc", "contrib_dummy"]
DEFAULT_CONFIGS = {"Hopper-v5": [*BASE_CONFIGS, "one_process_256", "two_ranks_256"], "CartPole-v1": BASE_CONFIGS}
RATIOS = [
    ("two_ranks/one_process", "two_ranks", "one_process"),
    ("two_ranks/ceiling", "two_ranks", "ceiling"),
    ("one_process/ceiling", "one_process", "ceiling"),
    ("ours_subproc/one_process", "ours_subproc", "one_process"),
    ("contrib_subproc/contrib_dummy", "contrib_subproc", "contrib_dummy"),
    ("one_process/contrib_dummy", "one_process", "contrib_dummy"),
    ("two_ranks_256/one_process_256", "two_ranks_256", "one_process_256"),
]


def zoo_block(env_id: str) -> tuple[int, bool, dict[str, Any]]:
    """The ``trpo_ext`` Zoo block of ``env_id``: its ``n_envs``, ``normalize`` and the algorithm's arguments."""
    import yaml

    block = dict(yaml.safe_load(HYPERPARAMS.read_text())[env_id])
    n_envs = int(block.pop("n_envs", 1))
    normalize = bool(block.pop("normalize", False))
    for key in ("n_timesteps", "policy"):
        block.pop(key, None)
    return n_envs, normalize, block


def effective_block(env_id: str, divisor: int) -> tuple[int, bool, dict[str, Any]]:
    """The block as run: ``n_steps`` divided by ``divisor`` (smoke tests), ``batch_size`` at most the global batch."""
    n_envs, normalize, hyper = zoo_block(env_id)
    hyper["n_steps"] = max(8, int(hyper["n_steps"]) // divisor)
    hyper["batch_size"] = min(int(hyper.get("batch_size", 64)), hyper["n_steps"] * n_envs)
    return n_envs, normalize, hyper


# ---------------------------------------------------------------------------------------- processes
def process_env(rank: int | None = None, world: int = 1, port: int = 0) -> dict[str, str]:
    """The environment of a worker: one thread, loopback only; a rank's torchrun variables, or none."""
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo")
    code = [SNAPSHOT] if SNAPSHOT else []  # the package as it was when the run began (see main)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [*code, str(ROOT), os.environ.get("PYTHONPATH", "")] if p)
    if rank is not None:
        env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_PORT=str(port))
        env.update(LOCAL_WORLD_SIZE=str(world), TORCHELASTIC_USE_AGENT_STORE="True")
    return env


def run_together(mode: str, specs: list[dict[str, Any]], ranks: bool, folder: Path, timeout: float) -> list[Any]:
    """Start one worker process per spec (``--<mode> SPEC``), wait until all are ready, release them together, and
    return their results. Every process is killed (by its handle) if it outlives ``timeout``."""
    from sb3_trpo_ext.distributed.ranks import loopback_store  # the job's store on 127.0.0.1

    stack = contextlib.ExitStack()
    port = stack.enter_context(loopback_store(timeout)) if ranks else 0
    processes: list[subprocess.Popen[bytes]] = []
    logs = []
    with stack:
        try:
            for index, spec in enumerate(specs):
                spec_path = folder / f"{mode}-{index}.json"
                spec.update(
                    out=str(folder / f"{mode}-{index}-result.json"), ready=str(folder / f"{mode}-{index}.ready")
                )
                spec_path.write_text(json.dumps(spec))
                log = open(folder / f"{mode}-{index}.log", "wb")  # noqa: SIM115 - closed below
                logs.append(log)
                env = process_env(index, len(specs), port) if ranks else process_env()
                command = [sys.executable, str(Path(__file__).resolve()), f"--{mode}", str(spec_path)]
                processes.append(
                    subprocess.Popen(command, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env)
                )
            deadline = time.monotonic() + timeout
            while not all(Path(spec["ready"]).exists() for spec in specs):
                failed = [p.returncode for p in processes if p.poll() is not None]
                if failed or time.monotonic() > deadline:
                    raise RuntimeError(f"{mode}: a process ended or timed out before it was ready ({failed})")
                time.sleep(0.01)
            for process in processes:  # released together
                assert process.stdin is not None
                process.stdin.write(b"go\n")
                process.stdin.flush()
                process.stdin.close()
            for process in processes:
                process.wait(timeout=max(1.0, deadline - time.monotonic()))
            codes = [process.returncode for process in processes]
            if any(codes):
                raise RuntimeError(f"{mode}: exit codes {codes}")
            return [json.loads(Path(spec["out"]).read_text()) for spec in specs]
        except BaseException:
            for log in logs:
                log.flush()
            for index in range(len(specs)):
                text = (folder / f"{mode}-{index}.log").read_text(errors="replace")
                print(f"--- process {index} of {mode} ---\n{text[-3000:]}", file=sys.stderr)
            raise
        finally:
            _stop(processes)
            for log in logs:
                log.close()


def wait_for_go(spec: dict[str, Any]) -> None:
    Path(spec["ready"]).write_text("")
    sys.stdin.readline()


# ------------------------------------------------------------------------------------- training worker
class Probe:
    """Times methods and ``torch.distributed``'s collectives in a worker; each collective is labelled with the phase
    it ran in. Records only while ``enabled`` (the timed learn)."""

    def __init__(self) -> None:
        self.enabled = False
        self.phase = "start"
        self.times: dict[str, list[float]] = defaultdict(list)
        self.calls: list[tuple[str, str, int, float]] = []  # (phase, kind, bytes, seconds)
        self.actor_stats: list[tuple[int, int]] = []  # (CG iterations, line-search candidates) per update

    def time_method(self, owner: Any, name: str, key: str, phase: str | None = None, stay: bool = False) -> None:
        """Wrap ``owner.<name>``: its wall time goes to ``times[key]``; inside it the phase is ``phase`` (kept after
        the call when ``stay``)."""
        original: Callable[..., Any] = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            previous = self.phase
            if phase is not None:
                self.phase = phase
            start = perf_counter()
            try:
                result = original(*args, **kwargs)
            finally:
                if self.enabled:
                    self.times[key].append(perf_counter() - start)
                if not stay:
                    self.phase = previous
            if key == "actor" and self.enabled:
                self.actor_stats.append((int(result["cg_iterations"]), int(result["line_search_steps"])))
            return result

        setattr(owner, name, timed)

    def wrap_collectives(self) -> None:
        import torch.distributed as dist

        for kind in KINDS:
            original: Callable[..., Any] = getattr(dist, kind)

            def wrapped(*args: Any, _kind: str = kind, _original: Callable[..., Any] = original, **kwargs: Any) -> Any:
                start = perf_counter()
                result = _original(*args, **kwargs)
                if self.enabled:
                    self.calls.append((self.phase, _kind, payload_bytes(_kind, args, kwargs), perf_counter() - start))
                return result

            setattr(dist, kind, wrapped)


def payload_bytes(kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """The bytes this rank contributes to a collective: its tensor (all_gather: its own part), or the pickled
    object."""
    if kind == "all_gather_object":
        return len(pickle.dumps(args[1] if len(args) > 1 else kwargs["obj"]))
    tensor = (args[1] if len(args) > 1 else kwargs["tensor"]) if kind == "all_gather" else (args or [None])[0]
    if tensor is None:
        tensor = kwargs["tensor"]
    return int(tensor.numel() * tensor.element_size())


def build_model(spec: dict[str, Any], config: Config) -> Any:
    import gymnasium as gym
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

    hyper = dict(spec["hyper"])
    vec_env_cls = SubprocVecEnv if config.vec_env == "subproc" else DummyVecEnv
    env = make_vec_env(spec["env_id"], n_envs=config.envs_per_process, vec_env_cls=vec_env_cls)
    if spec["normalize"]:
        env = VecNormalize(env, gamma=hyper.get("gamma", 0.99))
    policy_kwargs = NETS[config.net]
    common = dict(seed=spec["seed"], device="cpu", verbose=0, policy_kwargs=policy_kwargs)
    if config.library == "ours":
        from sb3_trpo_ext import TRPO

        return TRPO("MlpPolicy", env, distributed_timeout=spec["distributed_timeout"], **hyper, **common)
    from sb3_contrib import TRPO as ContribTRPO

    space = env.action_space
    dims = int(np.prod(space.shape)) if isinstance(space, gym.spaces.Box) else 1
    for key, default in (("target_kl", 0.01), ("cg_damping", 0.1)):  # ours: true KL; sb3-contrib's: per dimension
        hyper[key] = hyper.get(key, default) / dims
    return ContribTRPO("MlpPolicy", env, **hyper, **common)


def training_worker(spec: dict[str, Any]) -> None:
    """One process of one configuration: warm up, wait for the release, time ``learn`` of K updates."""
    import torch as th

    th.set_num_threads(1)
    config = CONFIGS[spec["config"]]
    model = build_model(spec, config)
    world = config.processes if config.ranks else 1
    steps_per_update = spec["n_steps"] * config.envs_per_process * world
    model.learn(spec["warmup_updates"] * steps_per_update)
    ranks = getattr(model, "_ranks", None)  # joined by learn() (or at construction, in earlier versions)
    if config.ranks and ranks is None:
        raise RuntimeError("the model did not join the ranks")

    probe = Probe()
    probe.time_method(model, "train", "train", phase="train")
    probe.time_method(model, "collect_rollouts", "collect", phase="rollout", stay=True)
    if config.library == "ours":
        import sb3_trpo_ext.trpo.trpo as trpo_module

        probe.time_method(trpo_module, "natural_gradient_step", "actor", phase="actor")
        probe.time_method(model, "_update_critic", "critic", phase="critic")
    if ranks is not None:
        import torch.distributed as dist

        probe.time_method(ranks, "meet", "meet")
        probe.wrap_collectives()
    gc.collect()
    wait_for_go(spec)
    if ranks is not None:
        dist.barrier()
    probe.enabled = True
    start, cpu_start = perf_counter(), process_time()
    model.learn(spec["updates"] * steps_per_update, reset_num_timesteps=True)
    seconds, cpu_seconds = perf_counter() - start, process_time() - cpu_start
    probe.enabled = False
    result: dict[str, Any] = {
        "steps": int(model.num_timesteps),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "times": dict(probe.times),
        "calls": probe.calls,
        "actor_stats": probe.actor_stats,
    }
    if config.library == "ours":
        result["package"] = str(Path(sys.modules["sb3_trpo_ext"].__file__ or "").parent)
        result["params"] = {
            "actor": sum(p.numel() for p in model._actor_params),
            "critic": sum(p.numel() for p in model._critic_params),
        }
        result["obs_dim"] = int(np.prod(model.observation_space.shape))
        result["action_dim"] = int(np.prod(model.action_space.shape or (1,)))
        result["local_batch"] = spec["n_steps"] * config.envs_per_process
    Path(spec["out"]).write_text(json.dumps(result))
    model.env.close()
    if ranks is not None:
        ranks.close()
        dist.destroy_process_group()


def run_config(env_id: str, config: Config, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    _, normalize, hyper = effective_block(env_id, args.n_steps_divisor)
    n_steps = hyper["n_steps"]
    updates = args.updates if args.updates is not None else (10 if env_id.startswith("Hopper") else 20)
    spec = dict(
        env_id=env_id, config=config.name, hyper=hyper, normalize=normalize, n_steps=n_steps, seed=args.seed,
        warmup_updates=args.warmup_updates, updates=updates, distributed_timeout=args.timeout,
    )  # fmt: skip
    results = run_together("worker", [dict(spec) for _ in range(config.processes)], config.ranks, folder, args.timeout)
    if config.ranks:
        steps_per_s = results[0]["steps"] / max(r["seconds"] for r in results)
    else:
        steps_per_s = sum(r["steps"] / r["seconds"] for r in results)
    return {"steps_per_s": steps_per_s, "updates": updates, "processes": results}


# ------------------------------------------------------------------------------------- summarising
def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [t for run in runs for process in run["processes"] for t in process["times"].get(key, [])]
    return statistics.median(values) if values else None


def summarise_config(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {"steps_per_s": spread([run["steps_per_s"] for run in runs])}
    summary["per_repeat_steps_per_s"] = [run["steps_per_s"] for run in runs]
    for key in ("train", "collect", "actor", "critic", "meet"):
        value = median_of(runs, key)
        if value is not None:
            summary[f"{key}_s"] = value
    return summary


def ratio_table(env_runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Each ratio of medians, and the min-max of the ratios of the same repeat (the configurations ran side by
    side)."""
    table = {}
    for name, top, bottom in RATIOS:
        if top in env_runs and bottom in env_runs:
            tops = [run["steps_per_s"] for run in env_runs[top]]
            bottoms = [run["steps_per_s"] for run in env_runs[bottom]]
            paired = [t / b for t, b in zip(tops, bottoms)]
            table[name] = {
                "ratio_of_medians": statistics.median(tops) / statistics.median(bottoms),
                "min": min(paired),
                "max": max(paired),
            }
    return table


def inside_ranks(runs: list[dict[str, Any]], obs_bytes: int) -> dict[str, Any]:
    """Per update, averaged over ranks and repeats: the collectives by kind and by phase (count, seconds, bytes this
    rank sends), the phases' times, and the decomposition of the cost model (means: they add up). ``obs_bytes``:
    the bytes of one observation entry (the rollout buffer keeps the observation space's dtype)."""
    processes = [process for run in runs for process in run["processes"]]
    updates = sum(len(process["times"]["train"]) for process in processes)
    by_kind: dict[str, dict[str, float]] = {}
    by_phase: dict[str, dict[str, float]] = {}
    for table, index in ((by_kind, 1), (by_phase, 0)):
        for process in processes:
            for call in process["calls"]:
                if call[0] == "start":  # learn's start (settings, parameters, statistics): once per learn
                    continue
                row = table.setdefault(call[index], {"count": 0.0, "seconds": 0.0, "bytes": 0.0})
                row["count"] += 1 / updates
                row["seconds"] += call[3] / updates
                row["bytes"] += call[2] / updates

    def mean_time(key: str) -> float:
        return sum(sum(process["times"].get(key, [])) for process in processes) / updates

    def calls(phase: str, small: bool | None = None, kind: str | None = None) -> list[list[Any]]:
        return [
            call
            for process in processes
            for call in process["calls"]
            if call[0] == phase and (kind is None or call[1] == kind) and (small is None or (call[2] < SMALL) == small)
        ]

    actor_calls = calls("actor")
    critic_calls = calls("critic")
    rollout_calls = [c for c in calls("rollout") + calls("train") if c[2] < SMALL]
    check_calls = [c for c in calls("rollout") if c[2] >= SMALL]
    stats = [s for process in processes for s in process["actor_stats"]]
    first = processes[0]
    return {
        "updates_timed_per_rank": len(processes[0]["times"]["train"]),
        "train_s": median_of(runs, "train"),
        "actor_s": median_of(runs, "actor"),
        "critic_s": median_of(runs, "critic"),
        "collect_s": median_of(runs, "collect"),
        "meet_s": median_of(runs, "meet"),
        "meet_max_s": max(t for process in processes for t in process["times"].get("meet", [0.0])),
        "collectives_per_update_by_kind": by_kind,
        "collectives_at_learn_start": {
            "count": len(calls("start")) / len(processes),
            "seconds": sum(c[3] for c in calls("start")) / len(processes),
            "bytes": sum(c[2] for c in calls("start")) / len(processes),
        },
        "collectives_per_update_by_phase": by_phase,
        "cg_iterations_mean": statistics.mean(s[0] for s in stats),
        "line_search_candidates_mean": statistics.mean(s[1] for s in stats),
        "params": first["params"],
        "obs_dim": first["obs_dim"],
        "obs_bytes": obs_bytes,
        "action_dim": first["action_dim"],
        "local_batch": first["local_batch"],
        "model_inputs": {  # means per update, per rank
            "collect_s": mean_time("collect"),
            "meet_s": mean_time("meet"),
            "actor_s": mean_time("actor"),
            "actor_collectives_s": sum(c[3] for c in actor_calls) / updates,
            "actor_compute_s": mean_time("actor") - sum(c[3] for c in actor_calls) / updates,
            "actor_large_all_reduces": sum(c[2] >= SMALL for c in actor_calls) / updates,
            "actor_small_all_reduces": sum(c[2] < SMALL for c in actor_calls) / updates,
            "actor_large_bytes_mean": statistics.mean([c[2] for c in actor_calls if c[2] >= SMALL] or [0]),
            "critic_s": mean_time("critic"),
            "critic_gather_s": sum(c[3] for c in critic_calls) / updates,
            "critic_compute_s": mean_time("critic") - sum(c[3] for c in critic_calls) / updates,
            "small_all_reduces": sum(c[1] == "all_reduce" for c in rollout_calls) / updates,
            "small_all_gathers": sum(c[1] == "all_gather" for c in rollout_calls) / updates,
            "small_collectives_s": sum(c[3] for c in rollout_calls) / updates,
            "parameter_check_s": sum(c[3] for c in check_calls) / updates,
            "train_s": mean_time("train"),
            "update_wall_s": statistics.mean(run["processes"][0]["seconds"] / run["updates"] for run in runs),
        },
    }


def bytes_from_parameters(inside: dict[str, Any]) -> dict[str, float]:
    """The bytes per update one rank sends, from the parameter counts and the measured counts of CG iterations and
    line-search candidates (float64 reductions: every mean carries its weight; the observations in their dtype,
    float32 returns)."""
    actor, critic = inside["params"]["actor"], inside["params"]["critic"]
    cg, candidates = inside["cg_iterations_mean"], inside["line_search_candidates_mean"]
    local, obs_dim = inside["local_batch"], inside["obs_dim"]
    parts = {
        "gradient_and_objective": (actor + 2) * 8,
        "advantage_moments": 3 * 8,
        "fisher_products": cg * (actor + 1) * 8,
        "line_search": candidates * 3 * 8,
        "critic_gather": local * (obs_dim * inside["obs_bytes"] + 4),
        "parameter_check_per_update": (actor + critic) * 8 / 10,
    }
    return {**parts, "total": sum(parts.values())}


# ---------------------------------------------------------------------------------------- loopback
def one_collective(kind: str, tensor: Any, parts: list[Any]) -> None:
    import torch.distributed as dist

    if kind == "all_reduce":
        dist.all_reduce(tensor)
    else:
        dist.all_gather(parts, tensor)


def collective_worker(spec: dict[str, Any]) -> None:
    import torch as th
    import torch.distributed as dist

    th.set_num_threads(1)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=spec["timeout"]))
    world = dist.get_world_size()
    wait_for_go(spec)
    dist.barrier()
    result: dict[str, dict[str, list[float]]] = {kind: {} for kind in ("all_reduce", "all_gather")}
    for size in spec["sizes"]:
        tensor = th.zeros(int(size), dtype=th.float64)
        parts = [th.empty_like(tensor) for _ in range(world)]
        for kind in ("all_reduce", "all_gather"):
            for _ in range(5):
                one_collective(kind, tensor, parts)
            times = []
            for _ in range(spec["reps"]):
                start = perf_counter()
                one_collective(kind, tensor, parts)
                times.append(perf_counter() - start)
            result[kind][str(int(size))] = times
    Path(spec["out"]).write_text(json.dumps(result))
    dist.destroy_process_group()


@contextlib.contextmanager
def busy_cores(n: int, seconds: float) -> Iterator[None]:
    """``n`` busy-loop processes at normal priority, each ending by itself after ``seconds`` (or killed here)."""
    code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"
    loops = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]
    try:
        time.sleep(0.2)
        yield
    finally:
        _stop(loops)


def _stop(processes: Sequence[subprocess.Popen]) -> None:
    """Kill the processes still running and reap every one (none is left behind, whatever raised)."""
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


def fit_linear_cost(sizes: list[int], seconds: list[float]) -> dict[str, float]:
    """``t = alpha + bytes / beta``, least squares on the relative error (both ends weigh)."""
    x = np.array(sizes, dtype=float) * 8
    t = np.array(seconds, dtype=float)
    design = np.stack([1 / t, x / t], axis=1)
    (alpha, inverse_beta), *_ = np.linalg.lstsq(design, np.ones_like(t), rcond=None)
    return {
        "alpha_us": float(alpha * 1e6),
        "beta_GB_per_s": float(1 / inverse_beta / 1e9) if inverse_beta > 0 else float("nan"),
    }


def loopback(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    pooled: dict[str, dict[str, dict[str, list[float]]]] = {"idle": {}, "busy": {}}
    for round_ in range(args.loopback_rounds):
        for condition in ("idle", "busy"):
            spec = dict(sizes=args.loopback_sizes, reps=args.loopback_reps, timeout=args.timeout)
            with busy_cores(os.cpu_count() or 2, args.timeout) if condition == "busy" else contextlib.nullcontext():
                results = run_together("collectives", [dict(spec), dict(spec)], True, folder, args.timeout)
            for result in results:
                for kind, by_size in result.items():
                    for size, times in by_size.items():
                        pooled[condition].setdefault(kind, {}).setdefault(size, []).extend(times)
            print(f"  [loopback round {round_ + 1}/{args.loopback_rounds}] {condition} done", flush=True)
    table: dict[str, Any] = {}
    for condition, kinds in pooled.items():
        table[condition] = {}
        for kind, by_size in kinds.items():
            medians = {size: statistics.median(times) for size, times in by_size.items()}
            sizes = [int(size) for size in medians]
            table[condition][kind] = {
                "median_us": {size: value * 1e6 for size, value in medians.items()},
                "fit": fit_linear_cost(sizes, list(medians.values())),
            }
    return table


# ------------------------------------------------------------------------------------------- critic
def critic_steps(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Median seconds of one critic minibatch step (forward, hand-derived gradient, fused Adam; the permutation and
    gather of its epoch shared by 16 steps) for each network and minibatch size, on Hopper-v5's observations."""
    import torch as th

    from sb3_trpo_ext import TRPO
    from sb3_trpo_ext.trpo.critic import fit_critic

    th.set_num_threads(1)
    steps_per_epoch = 16
    table: dict[str, dict[str, float]] = {}
    for net, policy_kwargs in NETS.items():
        model = TRPO("MlpPolicy", args.network_env, n_steps=64, batch_size=64, seed=0, device="cpu",
                     policy_kwargs=policy_kwargs)  # fmt: skip
        obs_dim = int(np.prod(model.observation_space.shape or (1,)))
        hand_derived, value_of = model._speed.critic(model.policy)
        table[net] = {}
        for size in args.critic_sizes:
            generator = th.Generator().manual_seed(0)
            obs = th.randn(size * steps_per_epoch, obs_dim, generator=generator)
            returns = th.randn(size * steps_per_epoch, generator=generator)

            arguments = (model.policy, model._critic_params, obs, returns, 1, size, hand_derived, value_of)
            fit_critic(*arguments)  # warm-up
            times = []
            for _ in range(args.critic_reps):
                start = perf_counter()
                fit_critic(*arguments)
                times.append((perf_counter() - start) / steps_per_epoch)
            table[net][str(size)] = statistics.median(times)
        if model.env is not None:
            model.env.close()
        print(f"  [critic step] {net}: " + ", ".join(f"{k}: {v * 1e3:.2f} ms" for k, v in table[net].items()))
    return table


def loopback_seconds(loop: dict[str, Any], condition: str, kind: str, nbytes: float) -> float:
    """The loopback's median time of one ``kind`` of ``nbytes`` bytes per rank: log-log interpolation of the
    measured medians (gloo changes algorithm with the size, which a straight line does not follow)."""
    medians = loop[condition][kind]["median_us"]
    sizes = sorted(int(size) for size in medians)
    x = np.log([size * 8 for size in sizes])
    y = np.log([medians[str(size)] * 1e-6 for size in sizes])
    return float(np.exp(np.interp(np.log(max(nbytes, 8.0)), x, y)))


def design_at_two_ranks(
    inside: dict[str, Any], steps: dict[str, float], loop: dict[str, Any] | None, one_process_actor_s: float | None,
    n_critic_updates: int, batch_size: int,
) -> dict[str, Any]:  # fmt: skip
    """The design's choices priced with this machine's measurements (2 ranks, the Zoo block's global batch)."""
    m = inside["model_inputs"]
    actor_calls = m["actor_large_all_reduces"] + m["actor_small_all_reduces"]
    global_batch = 2 * inside["local_batch"]
    critic_steps_per_update = n_critic_updates * math.ceil(global_batch / batch_size)
    half = max(1, batch_size // 2)
    design: dict[str, Any] = {
        "actor": {
            "all_reduces_per_update": actor_calls,
            "bytes_each": m["actor_large_bytes_mean"],
            "compute_per_rank_s": m["actor_compute_s"],
            "collectives_s": m["actor_collectives_s"],
            "per_all_reduce_in_training_s": m["actor_collectives_s"] / actor_calls,
        },
        "critic": {
            "minibatch_steps_per_update": critic_steps_per_update,
            "step_s_at_batch_size": interpolate_step(steps, batch_size),
            "step_s_at_half": interpolate_step(steps, half),
            "redundant_compute_s": m["critic_compute_s"],
            "gather_s": m["critic_gather_s"],
        },
    }
    if loop is not None:
        each = loopback_seconds(loop, "idle", "all_reduce", (inside["params"]["critic"] + 1) * 8)
        design["critic"]["split_all_reduce_loopback_s"] = each
        design["critic"]["split_added_s"] = critic_steps_per_update * each
        design["critic"]["split_saved_s"] = critic_steps_per_update * (
            design["critic"]["step_s_at_batch_size"] - design["critic"]["step_s_at_half"]
        )
        design["actor"]["all_reduce_loopback_s"] = loopback_seconds(
            loop, "idle", "all_reduce", m["actor_large_bytes_mean"]
        )
    if one_process_actor_s is not None:  # the actor run redundantly on the gathered batch: one process's actor time
        design["actor"]["redundant_on_global_batch_s"] = one_process_actor_s
    return design


# ----------------------------------------------------------------------------------------- the model
def interpolate_step(table: dict[str, float], size: float) -> float:
    """The critic step's time at ``size`` states: log-log interpolation of the measured sizes; below the smallest
    its time (overhead-bound), above the largest proportional to the size."""
    sizes = sorted(int(s) for s in table)
    times = [table[str(s)] for s in sizes]
    if size <= sizes[0]:
        return times[0]
    if size >= sizes[-1]:
        return times[-1] * size / sizes[-1]
    return float(np.exp(np.interp(np.log(size), np.log(sizes), np.log(times))))


@dataclass(frozen=True)
class Links:
    """What a collective among ``n`` ranks costs: seconds of an all_reduce of ``size`` bytes, of an all_gather in
    which each rank contributes ``size`` bytes."""

    all_reduce: Callable[[int, float], float]
    all_gather: Callable[[int, float], float]


def assumed_links(alpha: float, beta: float) -> Links:
    """Tree latency, ring bandwidth: all_reduce ``2 log2(n) alpha + 2 size/beta``, all_gather ``log2(n) alpha +
    (n-1) size/beta``; nothing for one rank."""
    return Links(
        lambda n, size: 0.0 if n == 1 else 2 * math.log2(n) * alpha + 2 * size / beta,
        lambda n, size: 0.0 if n == 1 else math.log2(n) * alpha + (n - 1) * size / beta,
    )


def fitted_links(loop: dict[str, Any]) -> Links:
    """The loopback's own fits of 2 ranks (``alpha + size/beta`` per kind; valid for n = 2 only)."""
    fits = {kind: (row["fit"]["alpha_us"] * 1e-6, row["fit"]["beta_GB_per_s"] * 1e9) for kind, row in loop.items()}
    return Links(
        lambda n, size: 0.0 if n == 1 else fits["all_reduce"][0] + size / fits["all_reduce"][1],
        lambda n, size: 0.0 if n == 1 else fits["all_gather"][0] + size / fits["all_gather"][1],
    )


def update_seconds(
    inside: dict[str, Any], steps: dict[str, float], actor_s: Callable[[int], float], n: int, batch: str,
    design: str, links: Links, n_critic_updates: int, zoo_batch: int, zoo_global: int,
) -> dict[str, float]:  # fmt: skip
    """The per-update time of one rank in an ``n``-rank job (the cost model of docs/distributed.md).

    :param batch: ``"fixed"``: the critic's minibatch stays the Zoo's; ``"scaled"``: it grows with the global batch
        (the Zoo's minibatch per ``zoo_global`` states, the Zoo's global batch: the number of minibatch steps stays
        the Zoo's)
    :param design: ``"built"`` (actor reduced, critic redundant on the gathered batch), ``"split_critic"`` (each
        rank's critic minibatch a 1/n share, one all_reduce of the critic's gradient per step), ``"redundant"``
        (everything gathered, actor and critic computed on the global batch by every rank)
    """
    m = inside["model_inputs"]
    local, obs_dim, action_dim = inside["local_batch"], inside["obs_dim"], inside["action_dim"]
    obs_row = obs_dim * inside["obs_bytes"]  # bytes of one observation
    actor_params, critic_params = inside["params"]["actor"], inside["params"]["critic"]
    global_batch = local * n
    minibatch = zoo_batch if batch == "fixed" else zoo_batch * global_batch / zoo_global
    critic_steps_n = n_critic_updates * math.ceil(global_batch / minibatch)
    parts = {"collect": m["collect_s"], "meet": m["meet_s"] if n > 1 else 0.0}
    parts["small_collectives"] = m["small_all_reduces"] * links.all_reduce(n, 24) + m[
        "small_all_gathers"
    ] * links.all_gather(n, 32)
    parts["parameter_check"] = links.all_gather(n, (actor_params + critic_params) * 8) / 10
    if design == "redundant":
        parts["actor_compute"] = actor_s(global_batch)
        parts["actor_collectives"] = 0.0
        # observations, actions, returns, advantages, old log-probabilities
        parts["gather"] = links.all_gather(n, local * (obs_row + (action_dim + 3) * 4))
    else:
        parts["actor_compute"] = actor_s(local)
        parts["actor_collectives"] = m["actor_large_all_reduces"] * links.all_reduce(
            n, m["actor_large_bytes_mean"]
        ) + m["actor_small_all_reduces"] * links.all_reduce(n, 24)
        parts["gather"] = links.all_gather(n, local * obs_row) + links.all_gather(n, local * 4)
    if design == "split_critic":
        parts["gather"] = 0.0
        per_step = interpolate_step(steps, max(1.0, minibatch / n)) + links.all_reduce(n, (critic_params + 1) * 8)
        parts["critic"] = critic_steps_n * per_step
    else:
        parts["critic"] = critic_steps_n * interpolate_step(steps, minibatch)
    parts["total"] = sum(parts.values())
    return parts


def project(
    inside: dict[str, dict[str, Any]], steps: dict[str, dict[str, float]], one_process: dict[str, float | None],
    args: argparse.Namespace, loop: dict[str, Any] | None, ceiling_update_s: float | None,
) -> dict[str, Any]:  # fmt: skip
    n_envs, _, block = effective_block(args.network_env, args.n_steps_divisor)
    n_critic_updates, zoo_batch = int(block.get("n_critic_updates", 10)), int(block["batch_size"])
    zoo_global = n_envs * int(block["n_steps"])
    links = assumed_links(args.alpha_us * 1e-6, args.gbit * 1e9 / 8)
    projection: dict[str, Any] = {
        "label": "PROJECTED (a model, not a measurement)",
        "assumptions": {
            "alpha_us": args.alpha_us,
            "link_Gbit_per_s": args.gbit,
            "all_reduce": "2 log2(N) alpha + 2 bytes/beta",
            "all_gather": "log2(N) alpha + (N-1) bytes/beta (bytes: one rank's part)",
            "per_rank": "1 env, the Zoo's n_steps per env (weak scaling: the global batch is N x n_steps)",
            "measured_inputs": "collect, meet, actor compute per local batch and the counts of collectives from "
            "the 2-rank Hopper run; the critic step from critic_step_s",
            "actor_compute_of_n_states": "linear through the 2-rank run (local batch) and the one-process run "
            "(twice it); used by the 'redundant' design",
            "not_modelled": "stragglers (the meeting's wait grows with the spread of N ranks' rollouts), the "
            "store's load (N ranks polling one TCPStore), contention on the network",
        },
        "rows": [],
    }
    for net, measured in inside.items():
        m = measured["model_inputs"]
        local = measured["local_batch"]
        both = one_process.get(net)
        slope = (both - m["actor_compute_s"]) / local if both is not None and both > m["actor_compute_s"] else None

        def actor_s(states: int, m: dict[str, float] = m, slope: float | None = slope, local: int = local) -> float:
            if slope is None:
                return m["actor_compute_s"] * states / local
            return m["actor_compute_s"] + slope * (states - local)

        for batch in ("fixed", "scaled"):
            base = update_seconds(
                measured, steps[net], actor_s, 1, batch, "built", links, n_critic_updates, zoo_batch, zoo_global
            )
            for n in args.project_ranks:
                for design in ("built", "split_critic", "redundant"):
                    parts = update_seconds(
                        measured, steps[net], actor_s, n, batch, design, links, n_critic_updates, zoo_batch, zoo_global
                    )
                    projection["rows"].append(
                        {
                            "net": net, "batch_size": batch, "design": design, "ranks": n,
                            "update_s": parts["total"], "steps_per_s": n * local / parts["total"],
                            "efficiency": base["total"] / parts["total"], "parts_s": parts,
                        }
                    )  # fmt: skip
            projection.setdefault("one_rank_update_s", {})[f"{net}/{batch}"] = base["total"]
            if net == "64x64" and batch == "fixed" and ceiling_update_s is not None:
                # the model at N=1 against the ceiling's processes (1 env, the block's n_steps, 2 running at once)
                projection["check_at_1_rank"] = {"model_update_s": base["total"], "measured_update_s": ceiling_update_s}
    if loop is not None:  # the model at N=2 with the loopback's own fits, against the measured 2-rank update
        check = {}
        for condition in ("idle", "busy"):
            if not all(math.isfinite(row["fit"]["beta_GB_per_s"]) for row in loop[condition].values()):
                continue
            for net, measured in inside.items():
                compute: float = measured["model_inputs"]["actor_compute_s"]

                def local_actor_s(states: int, compute: float = compute) -> float:
                    return compute

                parts = update_seconds(
                    measured, steps[net], local_actor_s, 2, "fixed", "built",
                    fitted_links(loop[condition]), n_critic_updates, zoo_batch, zoo_global,
                )  # fmt: skip
                check[f"{net}/{condition}"] = {
                    "model_update_s": parts["total"],
                    "measured_update_s": measured["model_inputs"]["update_wall_s"],
                    "parts_s": parts,
                }
        projection["check_at_2_ranks_loopback"] = check
    return projection


# ------------------------------------------------------------------------------------------- report
def system_info() -> dict[str, Any]:
    import gymnasium
    import sb3_contrib
    import stable_baselines3
    import torch

    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as cpuinfo:
        cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))

    def git(*command: str) -> str:
        done = subprocess.run(["git", *command], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    lscpu = {}
    with contextlib.suppress(OSError):
        listing = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        wanted = ("Model name", "CPU family", "Model", "CPU(s)", "Hypervisor vendor", "L2 cache", "L3 cache")
        for line in listing.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in wanted:
                lscpu[key.strip()] = value.strip()
    return {
        "git_commit": git("rev-parse", "HEAD"),
        "lscpu": lscpu,
        "git_changed_package_files": git("status", "--porcelain", "--", "sb3_trpo_ext").splitlines(),
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "stable_baselines3": stable_baselines3.__version__,
        "sb3_contrib": sb3_contrib.__version__,
        "gymnasium": gymnasium.__version__,
    }


def print_report(payload: dict[str, Any]) -> None:
    print("\n== end-to-end steps/s (median [min-max] over repeats) ==")
    for env_id, configs in payload["end_to_end"].items():
        print(env_id)
        for name, summary in configs.items():
            s = summary["steps_per_s"]
            train = summary.get("train_s")
            extra = f"  train() {train * 1e3:.0f} ms" if train is not None else ""
            print(f"  {CONFIGS[name].label:<48} {s['median']:8.0f} [{s['min']:.0f}-{s['max']:.0f}]{extra}")
        for name, r in payload["ratios"][env_id].items():
            print(f"  {name:<34} {r['ratio_of_medians']:.3f} [{r['min']:.3f}-{r['max']:.3f}]")
    for env_id, checks in payload["targets"].items():
        for name, check in checks.items():
            verdict = "MET" if check["met"] else "NOT MET"
            print(f"target {env_id} {name} >= {check['target']}: {check['value']:.3f} -> {verdict}")
    for key, inside in payload["inside_two_ranks"].items():
        print(f"\n== inside the 2-rank run: {key} ==")
        print(
            f"  train() {inside['train_s'] * 1e3:.1f} ms (actor {inside['actor_s'] * 1e3:.1f}, critic "
            f"{inside['critic_s'] * 1e3:.1f}), collect {inside['collect_s'] * 1e3:.1f} ms, meet "
            f"{inside['meet_s'] * 1e3:.2f} ms (median); CG iterations {inside['cg_iterations_mean']:.1f}, "
            f"line-search candidates {inside['line_search_candidates_mean']:.1f}; params {inside['params']}"
        )
        for kind, row in inside["collectives_per_update_by_kind"].items():
            print(
                f"  {kind:<18} {row['count']:6.1f}/update {row['seconds'] * 1e3:8.2f} ms {row['bytes'] / 1e3:9.1f} kB"
            )
        for phase, row in inside["collectives_per_update_by_phase"].items():
            print(
                f"  phase {phase:<12} {row['count']:6.1f}/update {row['seconds'] * 1e3:8.2f} ms {row['bytes'] / 1e3:9.1f} kB"
            )
    if payload.get("loopback"):
        print("\n== loopback, 2 ranks (median us) ==")
        for condition, kinds in payload["loopback"].items():
            for kind, row in kinds.items():
                cells = "  ".join(f"{size}: {value:.0f}" for size, value in row["median_us"].items())
                fit = row["fit"]
                print(
                    f"  {condition:<5} {kind:<11} {cells}  | alpha {fit['alpha_us']:.0f} us, beta {fit['beta_GB_per_s']:.2f} GB/s"
                )
    for net, design in payload.get("design_at_two_ranks", {}).items():
        actor, critic = design["actor"], design["critic"]
        print(f"\n== design at 2 ranks, {net} ==")
        print(
            f"  actor: {actor['all_reduces_per_update']:.0f} all_reduces of {actor['bytes_each'] / 1e3:.0f} kB, "
            f"{actor['per_all_reduce_in_training_s'] * 1e3:.2f} ms each in training"
            + (f" ({actor['all_reduce_loopback_s'] * 1e3:.2f} ms on the idle loopback)" if "all_reduce_loopback_s" in actor else "")
            + f"; compute {actor['compute_per_rank_s'] * 1e3:.1f} ms"
            + (f"; redundant on the global batch {actor['redundant_on_global_batch_s'] * 1e3:.1f} ms" if "redundant_on_global_batch_s" in actor else "")
        )  # fmt: skip
        line = (
            f"  critic: {critic['minibatch_steps_per_update']} steps, {critic['step_s_at_batch_size'] * 1e3:.2f} ms "
            f"each vs {critic['step_s_at_half'] * 1e3:.2f} ms at half the minibatch"
        )
        if "split_added_s" in critic:
            line += f"; split: +{critic['split_added_s'] * 1e3:.0f} ms collectives, -{critic['split_saved_s'] * 1e3:.0f} ms compute"
        print(line)
    projection = payload.get("projection")
    if projection and "check_at_1_rank" in projection:
        check = projection["check_at_1_rank"]
        print(
            f"  check 1 rank: model {check['model_update_s'] * 1e3:.0f} ms vs measured {check['measured_update_s'] * 1e3:.0f} ms"
        )
    if projection:
        print(f"\n== {projection['label']}: alpha {args_alpha(projection)} ==")
        for row in projection["rows"]:
            print(
                f"  {row['net']:<8} batch {row['batch_size']:<6} {row['design']:<13} N={row['ranks']:<4} "
                f"update {row['update_s'] * 1e3:9.1f} ms  {row['steps_per_s']:10.0f} steps/s  "
                f"efficiency {row['efficiency']:.2f}"
            )
        for key, check in projection.get("check_at_2_ranks_loopback", {}).items():
            print(
                f"  check {key}: model {check['model_update_s'] * 1e3:.0f} ms vs measured {check['measured_update_s'] * 1e3:.0f} ms"
            )


def args_alpha(projection: dict[str, Any]) -> str:
    a = projection["assumptions"]
    return f"{a['alpha_us']} us, {a['link_Gbit_per_s']} Gb/s"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Data-parallel scaling benchmark (2 ranks on this machine).")
    parser.add_argument("--envs", nargs="+", default=["Hopper-v5", "CartPole-v1"])
    parser.add_argument("--configs", nargs="+", default=None, choices=sorted(CONFIGS),
                        help="configurations (default: all for Hopper-v5, the 64x64 ones for other envs)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--updates", type=int, default=None, help="timed updates (default 10 Hopper, 20 others)")
    parser.add_argument("--warmup-updates", type=int, default=2)
    parser.add_argument("--n-steps-divisor", type=int, default=1, help="divide the blocks' n_steps (smoke tests)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a configuration's run may take")
    parser.add_argument("--loopback-sizes", type=int, nargs="+", default=[1, 1000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--loopback-reps", type=int, default=50)
    parser.add_argument("--loopback-rounds", type=int, default=2)
    parser.add_argument("--no-loopback", action="store_true")
    parser.add_argument("--critic-sizes", type=int, nargs="+", default=[2**k for k in range(6, 15)])
    parser.add_argument("--critic-reps", type=int, default=3)
    parser.add_argument("--network-env", default="Hopper-v5", help="environment of the critic-step measurement")
    parser.add_argument("--project-ranks", type=int, nargs="+", default=[8, 64, 256])
    parser.add_argument("--alpha-us", type=float, default=50.0, help="projection: latency per message")
    parser.add_argument("--gbit", type=float, default=10.0, help="projection: link bandwidth, Gb/s")
    parser.add_argument("--json", type=Path, default=None, help="write the summary (JSON)")
    parser.add_argument("--raw", type=Path, default=None, help="write every measurement (JSON, large)")
    parser.add_argument("--from-raw", type=Path, default=None, help="summarise the measurements of a --raw file")
    parser.add_argument("--tiny", action="store_true", help="smoke test: CartPole, tiny sizes, one repeat")
    args = parser.parse_args(argv)
    if args.tiny:
        args.envs, args.repeats, args.updates, args.warmup_updates = ["CartPole-v1"], 1, 2, 1
        args.n_steps_divisor, args.loopback_sizes, args.loopback_reps, args.loopback_rounds = 8, [1, 1000], 5, 1
        args.critic_sizes, args.critic_reps, args.network_env = [64, 128], 1, "CartPole-v1"
        args.configs = args.configs or ["one_process", "two_ranks"]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    info = system_info()
    if args.from_raw is not None:
        raw = json.loads(args.from_raw.read_text())
        if "protocol" in raw:  # the measured run's arguments and system
            for key, value in raw["protocol"].items():
                if key not in ("json", "raw", "from_raw"):
                    setattr(args, key, value)
        return summarise(args, raw.get("system", info), raw["runs"], raw["loopback"], raw["critic_step_s"])
    print(f"CPU: {info['cpu']} ({info['nproc']} cores) | torch {info['torch']} | sb3-contrib {info['sb3_contrib']}")
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        folder = Path(tmp)
        # Every process imports one copy of the package, taken now: edits to the working tree during the run (its
        # minutes) change nothing measured.
        global SNAPSHOT
        SNAPSHOT = str(folder / "package")
        shutil.copytree(ROOT / "sb3_trpo_ext", folder / "package" / "sb3_trpo_ext")
        os.environ["SCALE_PACKAGE_SNAPSHOT"] = SNAPSHOT
        sys.path.insert(0, SNAPSHOT)
        for env_id in args.envs:
            names = args.configs or DEFAULT_CONFIGS.get(env_id, BASE_CONFIGS)
            runs[env_id] = {name: [] for name in names}
            for repeat in range(args.repeats):
                shift = repeat % len(names)
                for name in names[shift:] + names[:shift]:
                    run = run_config(env_id, CONFIGS[name], args, folder)
                    runs[env_id][name].append(run)
                    print(f"  [{env_id} repeat {repeat + 1}/{args.repeats}] {name:<16} {run['steps_per_s']:.0f} steps/s",
                          flush=True)  # fmt: skip
        loop = None if args.no_loopback else loopback(args, folder)
        steps = critic_steps(args)
    if args.raw is not None:  # every measurement, before anything is summarised (--from-raw summarises again)
        args.raw.parent.mkdir(parents=True, exist_ok=True)
        protocol = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}
        raw = {"system": info, "protocol": protocol, "runs": runs, "loopback": loop, "critic_step_s": steps}
        args.raw.write_text(json.dumps(raw))
    return summarise(args, info, runs, loop, steps)


def summarise(
    args: argparse.Namespace, info: dict[str, Any], runs: dict[str, dict[str, list[dict[str, Any]]]],
    loop: dict[str, Any] | None, steps: dict[str, dict[str, float]],
) -> dict[str, Any]:  # fmt: skip
    payload: dict[str, Any] = {
        "system": info,
        "protocol": {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()},
        "end_to_end": {env: {name: summarise_config(r) for name, r in by.items()} for env, by in runs.items()},
        "ratios": {env: ratio_table(by) for env, by in runs.items()},
        "targets": {},
        "inside_two_ranks": {},
        "networks": {},
        "loopback": loop,
        "critic_step_s": steps,
    }
    for env_id, checks in TARGETS.items():
        for name, target in checks.items():
            if name in payload["ratios"].get(env_id, {}):
                value = payload["ratios"][env_id][name]["ratio_of_medians"]
                payload["targets"].setdefault(env_id, {})[name] = {
                    "target": target,
                    "value": value,
                    "met": value >= target,
                }
    import gymnasium as gym

    hopper_inside: dict[str, dict[str, Any]] = {}
    one_process_actor: dict[str, float | None] = {}
    for env_id, by in runs.items():
        space = gym.make(env_id).observation_space
        obs_bytes = int(np.dtype(space.dtype).itemsize) if space.dtype is not None else 4
        for name, net in (("two_ranks", "64x64"), ("two_ranks_256", "256x256")):
            if by.get(name):
                inside = inside_ranks(by[name], obs_bytes)
                payload["inside_two_ranks"][f"{env_id}/{net}"] = inside
                if env_id == args.network_env:
                    hopper_inside[net] = inside
                    one = {"64x64": "one_process", "256x256": "one_process_256"}[net]
                    one_process_actor[net] = median_of(by[one], "actor") if by.get(one) else None
                    payload["networks"][net] = {
                        "params": inside["params"],
                        "collectives_per_update": {k: v["count"] for k, v in inside["collectives_per_update_by_kind"].items()},
                        "bytes_per_update_measured": sum(v["bytes"] for v in inside["collectives_per_update_by_kind"].values()),
                        "bytes_per_update_from_parameters": bytes_from_parameters(inside),
                    }  # fmt: skip
    if hopper_inside:
        ceiling = runs.get(args.network_env, {}).get("ceiling")
        ceiling_update_s = (
            statistics.median(p["seconds"] / run["updates"] for run in ceiling for p in run["processes"])
            if ceiling
            else None
        )
        payload["projection"] = project(hopper_inside, steps, one_process_actor, args, loop, ceiling_update_s)
        _, _, block = effective_block(args.network_env, args.n_steps_divisor)
        payload["design_at_two_ranks"] = {
            net: design_at_two_ranks(
                inside,
                steps[net],
                loop,
                one_process_actor[net],
                int(block.get("n_critic_updates", 10)),
                int(block["batch_size"]),
            )  # fmt: skip
            for net, inside in hopper_inside.items()
        }
    print_report(payload)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
        print(f"\nwrote {args.json}")
    return payload


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in ("--worker", "--collectives"):
        sys.path[:0] = [p for p in (SNAPSHOT, str(ROOT)) if p]
        worker_spec = json.loads(Path(sys.argv[2]).read_text())
        (training_worker if sys.argv[1] == "--worker" else collective_worker)(worker_spec)
    else:
        main()
