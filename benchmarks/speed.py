"""Speed benchmark: our TRPO (``sb3_trpo_ext``) against sb3-contrib's TRPO.

Both algorithms run in this one process, on one torch thread, with the same hyperparameters
(sb3-contrib's defaults: ``MlpPolicy``, one environment, ``n_steps=2048``, everything else default)
and the same seed. For every environment and algorithm it measures

* **end-to-end steps/s** of ``model.learn(timesteps)``, after an untimed warm-up ``learn`` of one rollout;
* **train()**: the wall time of each ``model.train()`` call (one policy + critic update), median;
* **collect**: the wall time of each ``model.collect_rollouts(...)`` call (one rollout of ``n_steps``), median.

``train`` and ``collect_rollouts`` are timed by wrapping the bound methods on the model instance, so
both algorithms run their own, unmodified code. The algorithms alternate across repeats
(ours, theirs, ours, theirs, ...) so that noise on a shared machine hits both alike; every figure is a
median over the repeats (over all calls, for train and collect). The summary gives the ratios
ours/theirs of the train() time (lower is better) and the speedups theirs/ours of the end-to-end and
collection times (higher is better).

Note: our ``target_kl`` bounds the true KL (summed over action dimensions) while sb3-contrib's bounds the
per-dimension mean, so with the same value our trust region is tighter on multi-dimensional action
spaces (Hopper-v5: 3 dimensions). This changes the line search a little, not the amount of work per step.

Run it with ``make bench`` or, from the repository root::

    python benchmarks/speed.py                          # CartPole-v1 and Hopper-v5, 3 repeats
    python benchmarks/speed.py --envs Hopper-v5 --repeats 5 --json runs/bench.json
    python benchmarks/speed.py --recurrent              # RecurrentTRPO vs RecurrentPPO on CartPoleNoVel-v1 only
    python benchmarks/speed.py --masked                 # MaskableTRPO vs MaskablePPO on Taxi-v4 only (Zoo blocks)
    python benchmarks/speed.py --masked-defaults        # the same with each algorithm's defaults (n_steps 2048)

``--recurrent`` measures our ``RecurrentTRPO`` against sb3-contrib's ``RecurrentPPO`` instead (the same figures,
the same protocol): ``MlpLstmPolicy`` on ``CartPoleNoVel-v1`` (registered by ``rl_zoo3.import_envs``), both with
the settings they share taken from our ``trpo_lstm`` Zoo block (``n_envs=8``, ``n_steps=128``, ``gamma=0.99``,
``gae_lambda=0.98``, VecNormalize, ``policy_kwargs`` with ``lstm_hidden_size=64``, the seed) and each with its own
update settings from its Zoo block (ours: ``batch_size=512``, ``n_critic_updates=20``, ``cg_damping=1e-3``;
RecurrentPPO: ``batch_size=256``, ``n_epochs=20``, ``learning_rate=1e-3``, ``clip_range=0.2``, constants instead
of the block's linear schedules, which cost nothing) and each class's default feature-extractor sharing.

``--masked`` measures our ``MaskableTRPO`` against sb3-contrib's ``MaskablePPO`` the same way: ``MlpPolicy`` on
``Taxi-v4`` with its action masks (``TaxiActionMasker``), the settings of the ``trpo_mask`` / ``ppo_mask`` Zoo
blocks they share (``n_envs=8``, ``n_steps=256``, ``batch_size=256``, ``gamma=0.99``, ``gae_lambda=0.95``, the
seed) and each one's own (ours: ``target_kl=0.02``; MaskablePPO: ``ent_coef=0.01``, its default 10 epochs).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from time import perf_counter, process_time
from typing import Any

import gymnasium
import sb3_contrib
import stable_baselines3
import torch as th
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

N_STEPS = 2048  # sb3-contrib's default rollout length (one environment)
ALGORITHMS = ("ours", "sb3-contrib")
TARGETS = {"train_ratio": 0.45, "end_to_end_speedup": {"CartPole-v1": 4.0, "Hopper-v5": 2.5}}
DEFAULT_SPEEDUP_TARGET = 2.5


def speedup_target(env_id: str) -> float:
    return TARGETS["end_to_end_speedup"].get(env_id, DEFAULT_SPEEDUP_TARGET)  # type: ignore[union-attr]


def load_algorithms() -> dict[str, type[OnPolicyAlgorithm]]:
    """Our TRPO and sb3-contrib's, by name. Falls back to the repository root when the package is not installed."""
    try:
        from sb3_trpo_ext import TRPO as OurTRPO
    except ModuleNotFoundError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from sb3_trpo_ext import TRPO as OurTRPO
    from sb3_contrib import TRPO as ContribTRPO

    return {"ours": OurTRPO, "sb3-contrib": ContribTRPO}


# ------------------------------------------------------------------------------------------ measuring
@dataclass
class Timings:
    """Raw measurements of one algorithm on one environment."""

    learn_seconds: list[float] = field(default_factory=list)  # one per repeat
    learn_cpu_seconds: list[float] = field(default_factory=list)  # this process's CPU time of each repeat
    learn_steps: list[int] = field(default_factory=list)  # environment steps of each timed learn()
    train_seconds: list[float] = field(default_factory=list)  # one per train() call
    collect_seconds: list[float] = field(default_factory=list)  # one per collect_rollouts() call

    def steps_per_second(self) -> float:
        return statistics.median(steps / seconds for steps, seconds in zip(self.learn_steps, self.learn_seconds))

    def summary(self) -> dict[str, float]:
        cpu_rates = [steps / seconds for steps, seconds in zip(self.learn_steps, self.learn_cpu_seconds)]
        return {
            "steps_per_s": self.steps_per_second(),
            # per CPU second of this process: what other processes on the machine (a sweep) change least
            "steps_per_cpu_s": statistics.median(cpu_rates) if cpu_rates else float("nan"),
            "steps_per_cpu_s_min": min(cpu_rates) if cpu_rates else float("nan"),
            "steps_per_cpu_s_max": max(cpu_rates) if cpu_rates else float("nan"),
            "learn_s": statistics.median(self.learn_seconds),
            "train_s": statistics.median(self.train_seconds),
            "train_min_s": min(self.train_seconds),
            "train_max_s": max(self.train_seconds),
            "collect_s": statistics.median(self.collect_seconds),
            "collect_min_s": min(self.collect_seconds),
            "collect_max_s": max(self.collect_seconds),
        }


def time_calls(model: OnPolicyAlgorithm, method: str, record: list[float]) -> None:
    """Replace ``model.<method>`` on the instance by a wrapper that appends each call's wall time to ``record``."""
    original: Callable[..., Any] = getattr(model, method)

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = perf_counter()
        result = original(*args, **kwargs)
        record.append(perf_counter() - start)
        return result

    setattr(model, method, timed)


def benchmark_env(
    env_id: str, algorithms: dict[str, type[OnPolicyAlgorithm]], timesteps: int, repeats: int, seed: int
) -> tuple[dict[str, Timings], dict[str, float], dict[str, float]]:
    """Build, warm up and time every algorithm on ``env_id``, alternating the algorithms across repeats; then time
    our Fisher-vector products on the last batch and every model's ``predict``."""
    models = {
        name: algorithm("MlpPolicy", env_id, n_steps=N_STEPS, seed=seed, device="cpu", verbose=0)
        for name, algorithm in algorithms.items()
    }
    timings = time_learning(models, N_STEPS, timesteps, repeats, env_id)
    return timings, fisher_product_ms(models["ours"]), predict_microseconds(models, env_id, seed)


def time_learning(
    models: dict[str, OnPolicyAlgorithm], warm_up: int, timesteps: int, repeats: int, label: str
) -> dict[str, Timings]:
    """Warm every model up (``learn(warm_up)``: a rollout and an update, not timed), then time ``learn(timesteps)``
    ``repeats`` times, the models alternating, with every ``train()`` and ``collect_rollouts()`` call timed too."""
    timings: dict[str, Timings] = {}
    for name, model in models.items():
        model.learn(warm_up)
        timings[name] = Timings()
        time_calls(model, "train", timings[name].train_seconds)
        time_calls(model, "collect_rollouts", timings[name].collect_seconds)
    for repeat in range(repeats):
        for name, model in models.items():
            gc.collect()
            start, cpu_start = perf_counter(), process_time()
            model.learn(timesteps, reset_num_timesteps=True)
            seconds = perf_counter() - start
            timings[name].learn_seconds.append(seconds)
            timings[name].learn_cpu_seconds.append(process_time() - cpu_start)
            timings[name].learn_steps.append(model.num_timesteps)
            print(
                f"  [{label} repeat {repeat + 1}/{repeats}] {name:<12} {model.num_timesteps} steps in {seconds:.2f} s",
                flush=True,
            )
    return timings


def predict_microseconds(
    models: dict[str, OnPolicyAlgorithm], env_id: str, seed: int, calls: int = 2000, blocks: int = 10
) -> dict[str, float]:
    """Median microseconds of one ``model.predict(obs, deterministic=True)`` on a single observation (what an
    evaluation callback does every step), the models alternating over ``blocks`` blocks of ``calls`` calls."""
    env = gymnasium.make(env_id)
    observations = [env.reset(seed=seed)[0]]
    for _ in range(99):
        observation, _, terminated, truncated, _ = env.step(env.action_space.sample())
        observations.append(env.reset()[0] if terminated or truncated else observation)
    env.close()
    per_call: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(blocks):
        for name, model in models.items():
            start = perf_counter()
            for i in range(calls):
                model.predict(observations[i % len(observations)], deterministic=True)
            per_call[name].append(1e6 * (perf_counter() - start) / calls)
    return {name: statistics.median(values) for name, values in per_call.items()}


def fisher_product_ms(model: OnPolicyAlgorithm, calls: int = 20) -> dict[str, float]:
    """Median wall time [ms] of one damped Fisher-vector product on ``model``'s last rollout batch, for each of
    our ``fisher`` variants (``analytic``: ``J^T M J v`` with autograd's ``J``; ``analytic_mlp``: the same with ``J v``
    and ``J^T u`` written out for MLP actors, what ``train()`` uses; ``autograd``: Hessian of the KL, as sb3-contrib
    computes it), called alternately."""
    from sb3_trpo_ext.common.fisher import FISHER_PRODUCTS, action_family

    observations = next(model.rollout_buffer.get(batch_size=None)).observations
    params = model._actor_params
    distribution = model.policy.get_distribution(observations)
    family = action_family(distribution)
    dist_params = family.params(distribution)
    products = {name: make(dist_params, params, family, 0.1) for name, make in FISHER_PRODUCTS.items()}
    products["analytic_mlp"] = model._fisher_product(observations, dist_params, family)  # what train() uses
    vector = th.randn(sum(p.numel() for p in params))
    times: dict[str, list[float]] = {name: [] for name in products}
    for _ in range(calls):
        for name, product in products.items():
            start = perf_counter()
            product(vector)
            times[name].append(1e3 * (perf_counter() - start))
    return {name: statistics.median(values) for name, values in times.items()}


def tanh_microseconds(shape: tuple[int, int] = (128, 64), calls: int = 2000) -> dict[str, float]:
    """Median time [µs] of one tanh of a critic minibatch's hidden layer (``shape``, float32): torch's ``tanh``
    against NumPy's in place (:func:`sb3_trpo_ext.fast.mlp.tanh_`, what the critic's regression uses),
    called alternately."""
    from sb3_trpo_ext.fast.mlp import tanh_

    x = th.randn(*shape)
    scratch = x.clone()
    times: dict[str, list[float]] = {"torch": [], "numpy_in_place": []}
    for _ in range(calls):
        start = perf_counter()
        th.tanh(x)
        times["torch"].append(1e6 * (perf_counter() - start))
        scratch.copy_(x)
        start = perf_counter()
        tanh_(scratch)
        times["numpy_in_place"].append(1e6 * (perf_counter() - start))
    return {name: statistics.median(values) for name, values in times.items()}


def simulator_steps_per_second(env_id: str, steps: int = 20_000, seed: int = 0) -> float:
    """Steps/s of the bare environment (``gym.make``, random actions drawn beforehand, reset on episode end):
    the physical limit of any training loop on this machine."""
    env = gymnasium.make(env_id)
    env.action_space.seed(seed)
    actions = [env.action_space.sample() for _ in range(steps)]
    env.reset(seed=seed)
    start = perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    seconds = perf_counter() - start
    env.close()
    return steps / seconds


def _busy_loop() -> None:  # pragma: no cover - runs in a neighbour process
    while True:
        pass


def thread_check(timesteps: int = 20_000, neighbours: tuple[int, ...] = (0, 1, 2)) -> list[dict[str, Any]]:
    """The README's usage example (``TRPO("MlpPolicy", "Pendulum-v1")``, ``timesteps`` steps) with torch's default
    thread pool (``num_threads=None`` after ``torch.set_num_threads(os.cpu_count())``, i.e. what a user gets
    without our setting) against the default ``num_threads="auto"``, with 0, 1 and 2 busy neighbour processes
    (pure-Python spin loops) sharing the cores, as seeds or sweeps run side by side do."""
    import multiprocessing

    from sb3_trpo_ext import TRPO

    rows = []
    for n_busy in neighbours:
        busy = [multiprocessing.Process(target=_busy_loop, daemon=True) for _ in range(n_busy)]
        for process in busy:
            process.start()
        try:
            row: dict[str, Any] = {"busy_neighbours": n_busy}
            for label, num_threads in (("torch_default_threads_s", None), ("auto_s", "auto")):
                th.set_num_threads(os.cpu_count() or 1)
                start = perf_counter()
                TRPO("MlpPolicy", "Pendulum-v1", seed=0, num_threads=num_threads).learn(timesteps)
                row[label] = perf_counter() - start
            rows.append(row)
            print(
                f"  [threads] {n_busy} busy neighbour(s): torch default threads {row['torch_default_threads_s']:.1f} s,"
                f" num_threads='auto' {row['auto_s']:.1f} s",
                flush=True,
            )
        finally:
            for process in busy:
                process.terminate()
                process.join()
    th.set_num_threads(1)
    return rows


# ------------------------------------------------------------------ the TRPO family: --recurrent, --masked
@dataclass(frozen=True)
class FamilyComparison:
    """One member of our TRPO family against its sb3-contrib PPO counterpart, on one task: the settings both
    share (the Zoo block's environment and rollout settings) and each one's own update settings (its Zoo block).

    :param flag: the command-line flag that selects it
    :param classes: ``"ours"`` / ``"sb3-contrib"`` -> (module, class name)
    :param env_id: the task
    :param n_envs: environments
    :param policy: the policy alias both take
    :param shared: hyperparameters both take
    :param own: each algorithm's own update settings
    :param policy_kwargs: ``policy_kwargs`` both take (each class's default feature-extractor sharing)
    :param normalize: wrap the environments in ``VecNormalize`` (with ``shared["gamma"]``)
    :param wrapper: ``module:name`` of a gymnasium wrapper applied to each environment (the masks), or None
    """

    flag: str
    classes: dict[str, tuple[str, str]]
    env_id: str
    n_envs: int
    policy: str
    shared: dict[str, Any]
    own: dict[str, dict[str, Any]]
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    normalize: bool = False
    wrapper: str | None = None

    @property
    def rollout_steps(self) -> int:
        return self.shared["n_steps"] * self.n_envs

    @property
    def class_names(self) -> tuple[str, str]:
        """Ours, theirs."""
        ours, theirs = (self.classes[name][1] for name in ALGORITHMS)
        return ours, theirs

    def label(self, name: str) -> str:
        return f"{self.classes[name][1]} ({'ours' if name == 'ours' else name})"

    def algorithms(self) -> dict[str, type[OnPolicyAlgorithm]]:
        """The two classes, by name (registers the Zoo's environments; finds this checkout's package)."""
        import rl_zoo3.import_envs  # noqa: F401  (registers CartPoleNoVel-v1)

        try:
            importlib.import_module("sb3_trpo_ext")
        except ModuleNotFoundError:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        return {name: getattr(importlib.import_module(module), cls) for name, (module, cls) in self.classes.items()}

    def make_env(self, seed: int) -> Any:
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.vec_env import VecNormalize

        wrapper_class = None
        if self.wrapper is not None:
            module, name = self.wrapper.split(":")
            wrapper_class = getattr(importlib.import_module(module), name)
        env = make_vec_env(self.env_id, n_envs=self.n_envs, seed=seed, wrapper_class=wrapper_class)
        return VecNormalize(env, gamma=self.shared["gamma"]) if self.normalize else env


#: ``--recurrent``: our trpo_lstm block for CartPoleNoVel-v1, whose policy settings are the Zoo's ppo_lstm's
RECURRENT = FamilyComparison(
    flag="--recurrent",
    classes={"ours": ("sb3_trpo_ext", "RecurrentTRPO"), "sb3-contrib": ("sb3_contrib", "RecurrentPPO")},
    env_id="CartPoleNoVel-v1",
    n_envs=8,
    policy="MlpLstmPolicy",
    shared={"n_steps": 128, "gamma": 0.99, "gae_lambda": 0.98},
    own={
        "ours": {"batch_size": 512, "n_critic_updates": 20, "cg_damping": 1e-3, "learning_rate": 1e-3},
        "sb3-contrib": {"batch_size": 256, "n_epochs": 20, "ent_coef": 0.0, "learning_rate": 1e-3, "clip_range": 0.2},
    },
    policy_kwargs=dict(
        ortho_init=False,
        activation_fn=th.nn.ReLU,
        lstm_hidden_size=64,
        enable_critic_lstm=True,
        net_arch=dict(pi=[64], vf=[64]),
    ),
    normalize=True,
)

#: ``--masked``: the trpo_mask and ppo_mask blocks for Taxi-v4 (hyperparams/trpo_mask.yml, ppo_mask.yml)
MASKED = FamilyComparison(
    flag="--masked",
    classes={"ours": ("sb3_trpo_ext", "MaskableTRPO"), "sb3-contrib": ("sb3_contrib", "MaskablePPO")},
    env_id="Taxi-v4",
    n_envs=8,
    policy="MlpPolicy",
    shared={"n_steps": 256, "batch_size": 256, "gamma": 0.99, "gae_lambda": 0.95},
    own={"ours": {"target_kl": 0.02}, "sb3-contrib": {"ent_coef": 0.01}},
    wrapper="sb3_trpo_ext.maskable.wrappers:TaxiActionMasker",
)

#: ``--masked-defaults``: the same task with each algorithm's own defaults (one environment, ``n_steps=2048``)
MASKED_DEFAULTS = FamilyComparison(
    flag="--masked-defaults",
    classes=MASKED.classes,
    env_id="Taxi-v4",
    n_envs=1,
    policy="MlpPolicy",
    shared={"n_steps": 2048},
    own={"ours": {}, "sb3-contrib": {}},
    wrapper=MASKED.wrapper,
)

FAMILY = {comparison.flag: comparison for comparison in (RECURRENT, MASKED, MASKED_DEFAULTS)}


def benchmark_family(comparison: FamilyComparison, timesteps: int, repeats: int, seed: int) -> dict[str, Timings]:
    """Build, warm up (one untimed rollout and update) and time both algorithms of ``comparison``, alternating
    across repeats, as :func:`benchmark_env` does for TRPO."""
    models = {
        name: algorithm(
            comparison.policy,
            comparison.make_env(seed),
            **comparison.shared,
            **comparison.own[name],
            policy_kwargs=comparison.policy_kwargs or None,
            seed=seed,
            device="cpu",
            verbose=0,
        )
        for name, algorithm in comparison.algorithms().items()
    }
    return time_learning(models, comparison.rollout_steps, timesteps, repeats, comparison.env_id)


def print_family(
    comparison: FamilyComparison, summaries: dict[str, dict[str, float]], family_ratios: dict[str, float]
) -> None:
    """The table of ``comparison`` and its ratios, whatever they are (no target)."""
    header = f"{'algorithm':<26} {'steps/s':>8} {'learn [s]':>10} {'train() [ms]':>24} {'collect [ms]':>24}"
    print(
        f"{comparison.env_id}, {comparison.policy}, {comparison.n_envs} envs x n_steps={comparison.shared['n_steps']}"
    )
    print(header)
    print("-" * len(header))
    for name in ALGORITHMS:
        s = summaries[name]
        train = f"{1e3 * s['train_s']:.0f} [{1e3 * s['train_min_s']:.0f}-{1e3 * s['train_max_s']:.0f}]"
        collect = f"{1e3 * s['collect_s']:.0f} [{1e3 * s['collect_min_s']:.0f}-{1e3 * s['collect_max_s']:.0f}]"
        print(f"{comparison.label(name):<26} {s['steps_per_s']:>8.0f} {s['learn_s']:>10.2f} {train:>24} {collect:>24}")
    print("(train and collect: median [min-max] over all calls)")
    ours, theirs = comparison.class_names
    print(
        f"{ours} vs {theirs}: end-to-end steps/s ratio {family_ratios['end_to_end_speedup']:.2f}x, "
        f"train() time ours/theirs {family_ratios['train_ratio']:.2f}, "
        f"collect speedup {family_ratios['collect_speedup']:.2f}x; per CPU second "
        f"{family_ratios['end_to_end_cpu_speedup']:.2f}x [{family_ratios['end_to_end_cpu_speedup_min']:.2f}-"
        f"{family_ratios['end_to_end_cpu_speedup_max']:.2f}]"
    )


def family_main(comparison: FamilyComparison, args: argparse.Namespace, info: dict[str, Any]) -> None:
    """``--recurrent`` / ``--masked``: that comparison only."""
    ours, theirs = comparison.class_names
    print(
        f"{ours} vs {theirs}, seed={args.seed}; learn({args.timesteps}) x {args.repeats} repeats per algorithm, "
        "interleaved\n"
    )
    timings = benchmark_family(comparison, args.timesteps, args.repeats, args.seed)
    summaries = {name: timings[name].summary() for name in ALGORITHMS}
    family_ratios = ratios(summaries["ours"], summaries["sb3-contrib"])
    print()
    print_family(comparison, summaries, family_ratios)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        config = {
            "env": comparison.env_id,
            "n_envs": comparison.n_envs,
            "policy": comparison.policy,
            **comparison.shared,
            "own": comparison.own,
            "wrapper": comparison.wrapper,
            "normalize": comparison.normalize,
            "timesteps": args.timesteps,
            "repeats": args.repeats,
            "seed": args.seed,
        }
        payload = {
            "system": info,
            "config": config,
            "results": {comparison.env_id: {**summaries, "ratios": family_ratios}},
            "raw": {comparison.env_id: {name: asdict(timings[name]) for name in ALGORITHMS}},
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nwrote {args.json}")


def ratios(ours: dict[str, float], theirs: dict[str, float]) -> dict[str, float]:
    """train(): ours/theirs time (lower is better); end-to-end and collection: theirs/ours time (speedups)."""
    return {
        "train_ratio": ours["train_s"] / theirs["train_s"],
        "end_to_end_speedup": ours["steps_per_s"] / theirs["steps_per_s"],
        "collect_speedup": theirs["collect_s"] / ours["collect_s"],
        "end_to_end_cpu_speedup": ours["steps_per_cpu_s"] / theirs["steps_per_cpu_s"],
        # the spread: the slowest of ours against the fastest of theirs, and the other way round
        "end_to_end_cpu_speedup_min": ours["steps_per_cpu_s_min"] / theirs["steps_per_cpu_s_max"],
        "end_to_end_cpu_speedup_max": ours["steps_per_cpu_s_max"] / theirs["steps_per_cpu_s_min"],
    }


# ----------------------------------------------------------------------------------------- reporting
def system_info() -> dict[str, Any]:
    cpu_model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu_model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "python": platform.python_version(),
        "torch": th.__version__,
        "stable_baselines3": stable_baselines3.__version__,
        "sb3_contrib": sb3_contrib.__version__,
        "gymnasium": gymnasium.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model or "unknown",
        "nproc": os.cpu_count(),
        "torch_threads": th.get_num_threads(),
    }


def print_header(info: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"torch {info['torch']} | stable-baselines3 {info['stable_baselines3']} | sb3-contrib {info['sb3_contrib']}"
        f" | gymnasium {info['gymnasium']} | python {info['python']}"
    )
    print(
        f"CPU: {info['cpu']} ({info['nproc']} logical cores), {info['platform']}, torch threads: {info['torch_threads']}"
    )
    print(
        f"TRPO MlpPolicy, n_steps={N_STEPS}, 1 env, seed={args.seed}; learn({args.timesteps}) x {args.repeats} "
        "repeats per algorithm, interleaved\n"
    )


def print_table(results: dict[str, dict[str, Any]]) -> None:
    header = f"{'env':<12} {'algorithm':<12} {'steps/s':>8} {'learn [s]':>10} {'train() [ms]':>24} {'collect [ms]':>24}"
    print(header)
    print("-" * len(header))
    for env_id, result in results.items():
        for name in ALGORITHMS:
            s = result[name]
            train = f"{1e3 * s['train_s']:.0f} [{1e3 * s['train_min_s']:.0f}-{1e3 * s['train_max_s']:.0f}]"
            collect = f"{1e3 * s['collect_s']:.0f} [{1e3 * s['collect_min_s']:.0f}-{1e3 * s['collect_max_s']:.0f}]"
            print(f"{env_id:<12} {name:<12} {s['steps_per_s']:>8.0f} {s['learn_s']:>10.2f} {train:>24} {collect:>24}")
    print("(train and collect: median [min-max] over all calls)\n")

    header = (
        f"{'env':<12} {'train() ours/theirs':>20} {'end-to-end speedup':>19} {'collect speedup':>16}"
        f" {'simulator steps/s':>18} {'ours/simulator':>15}"
    )
    print(header)
    print("-" * len(header))
    for env_id, result in results.items():
        r = result["ratios"]
        train_mark = "ok" if r["train_ratio"] <= TARGETS["train_ratio"] else "MISS"
        e2e_mark = "ok" if r["end_to_end_speedup"] >= speedup_target(env_id) else "MISS"
        simulator = result["simulator_steps_per_s"]
        print(
            f"{env_id:<12} {r['train_ratio']:>15.2f} {train_mark:<4} {r['end_to_end_speedup']:>13.2f}x {e2e_mark:<4}"
            f" {r['collect_speedup']:>15.2f}x {simulator:>18.0f} {result['ours']['steps_per_s'] / simulator:>15.3f}"
        )
    targets = ", ".join(f"{env} >= {target}x" for env, target in TARGETS["end_to_end_speedup"].items())  # type: ignore[union-attr]
    print(f"targets: train() ours/theirs <= {TARGETS['train_ratio']}, end-to-end speedup {targets}\n")
    print("one Fisher-vector product on the last batch (median ms):")
    for env_id, result in results.items():
        fisher = result["fisher_product_ms"]
        print(
            f"{env_id:<12} analytic, MLP by hand {fisher['analytic_mlp']:.2f} ms; analytic, autograd J "
            f"{fisher['analytic']:.2f} ms; autograd (Hessian of KL) {fisher['autograd']:.2f} ms"
            f" -> Hessian/ours {fisher['autograd'] / fisher['analytic_mlp']:.2f}x"
        )
    print("one predict(obs, deterministic=True) on a single observation (median us; target: ours >= 5x faster):")
    for env_id, result in results.items():
        predict = result["predict_us"]
        speedup = predict["sb3-contrib"] / predict["ours"]
        print(
            f"{env_id:<12} ours {predict['ours']:.1f} us, sb3-contrib {predict['sb3-contrib']:.1f} us -> "
            f"{speedup:.1f}x {'ok' if speedup >= 5 else 'MISS'}"
        )


# -------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Speed benchmark: our TRPO against sb3-contrib's TRPO.")
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1", "Hopper-v5"], help="Gymnasium environment ids")
    parser.add_argument(
        "--timesteps",
        type=int,
        default=None,
        help=f"steps of each timed learn() (default {3 * N_STEPS}; with --recurrent or --masked 4 rollouts)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed learn() calls per algorithm and environment")
    parser.add_argument("--seed", type=int, default=0, help="seed of both algorithms")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--no-threads",
        action="store_true",
        help="skip the thread check (torch's default threads vs 'auto', busy neighbours)",
    )
    family = parser.add_mutually_exclusive_group()
    for comparison in FAMILY.values():
        ours, theirs = comparison.class_names
        family.add_argument(
            comparison.flag,
            dest="family",
            action="store_const",
            const=comparison.flag,
            help=f"{ours} vs sb3-contrib's {theirs} on {comparison.env_id} instead of the TRPO comparison",
        )
    args = parser.parse_args(argv)
    if args.timesteps is None:
        args.timesteps = 4 * FAMILY[args.family].rollout_steps if args.family else 3 * N_STEPS
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    th.set_num_threads(1)
    info = system_info()
    if args.family:
        print(
            f"torch {info['torch']} | stable-baselines3 {info['stable_baselines3']} | sb3-contrib "
            f"{info['sb3_contrib']} | CPU: {info['cpu']} ({info['nproc']} logical cores), torch threads: "
            f"{info['torch_threads']}"
        )
        family_main(FAMILY[args.family], args, info)
        return
    algorithms = load_algorithms()
    print_header(info, args)

    results: dict[str, dict[str, Any]] = {}
    raw: dict[str, dict[str, Any]] = {}
    for env_id in args.envs:
        timings, fisher_ms, predict_us = benchmark_env(env_id, algorithms, args.timesteps, args.repeats, args.seed)
        summaries = {name: timings[name].summary() for name in ALGORITHMS}
        results[env_id] = {
            **summaries,
            "ratios": ratios(summaries["ours"], summaries["sb3-contrib"]),
            "fisher_product_ms": fisher_ms,
            "predict_us": predict_us,
            "simulator_steps_per_s": simulator_steps_per_second(env_id),
        }
        raw[env_id] = {name: asdict(timings[name]) for name in ALGORITHMS}
    threads = [] if args.no_threads else thread_check()
    tanh_us = tanh_microseconds()
    print()
    print_table(results)
    print(
        f"one tanh of 128 x 64 float32 (critic minibatch, median): torch {tanh_us['torch']:.1f} us, "
        f"NumPy in place {tanh_us['numpy_in_place']:.1f} us"
    )
    for row in threads:
        print(
            f"threads, Pendulum-v1 20k steps, {row['busy_neighbours']} busy neighbour(s): torch default threads "
            f"{row['torch_default_threads_s']:.1f} s vs num_threads='auto' {row['auto_s']:.1f} s"
        )

    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        config = {"n_steps": N_STEPS, "timesteps": args.timesteps, "repeats": args.repeats, "seed": args.seed}
        payload = {
            "system": info,
            "config": config,
            "targets": TARGETS,
            "results": results,
            "threads": threads,
            "tanh_us": tanh_us,
            "raw": raw,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
