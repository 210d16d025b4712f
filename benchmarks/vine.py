"""Vine against single-path sampling: gradient variance, branch throughput and learning curves.

Three sub-commands, each resumable (finished pieces are appended to a JSON-lines file under ``docs/vine/`` and
skipped when the command is run again):

``variance``
    From one fixed policy per environment (a short single-path training, cached under ``runs/vine/``), collect
    ``M`` independent batches (different seeds) per sampling scheme and compute the flat gradient ``g`` of the
    scheme's surrogate with respect to the actor's parameters. Schemes:

    * ``vine``: ``N`` states x ``K`` actions (CartPole: both actions are tried, so ``K = 2``);
    * ``single_path_equal_q``: single path with ``n_steps * n_envs = N * K`` (as many Q samples as vine, the
      paper's comparison);
    * ``single_path_equal_sim``: single path whose trunk is as long as vine's trunk + branch steps (measured);
    * ``single_path_same_trunk``: single path on vine's trunk length (the default setting; also the baseline
      of the throughput measurement).

    The surrogates differ in scale (normalised advantages over different sets), so raw variances are not
    comparable. We report scale-free figures: the signal-to-noise ratio ``SNR = ||E g||^2 / E||g - E g||^2``
    (with the unbiased estimate ``||mean g||^2 - tr/M`` of ``||E g||^2``), the mean cosine between each ``g`` and
    the leave-one-out mean of the other batches, and the cosine of each scheme's mean gradient with vine's.
    Throughput: branch steps/s (vine's ``collect_rollouts`` time minus single path's on the same trunk) against
    trunk steps/s (single path's ``collect_rollouts``).

``curves``
    Learning curves, vine against single path, several seeds, with a deterministic evaluation on a separate
    environment at the start of the first rollout after every ``eval_freq`` trunk steps and at the end. Each
    point records trunk steps, total simulator steps (trunk + branch), training wall seconds (evaluation time
    excluded) and the mean evaluation return.

``report``
    Rewrites ``docs/vine.md`` from the saved results, with tables and figures.

Run from the repository root, one training process at a time::

    python benchmarks/vine.py variance --envs CartPole-v1 Hopper-v5 --batches 24
    python benchmarks/vine.py curves --envs CartPole-v1 Acrobot-v1 --seeds 0 1 2
    python benchmarks/vine.py curves --envs Hopper-v5 --seeds 0 --timesteps 100000
    python benchmarks/vine.py report

To measure a fixed commit while the working tree changes, run on a snapshot of the package (recorded in the
results as ``code``)::

    git archive HEAD sb3_trpo_ext | tar -x -C /tmp/vine_pkg && git rev-parse --short HEAD > /tmp/vine_pkg/COMMIT
    PYTHONPATH=/tmp/vine_pkg python benchmarks/vine.py curves --envs Hopper-v5
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

ROOT = Path(__file__).resolve().parents[1]
try:  # the installed package, or one put first on PYTHONPATH (e.g. a snapshot of a commit)
    import sb3_trpo_ext
except ModuleNotFoundError:
    sys.path.insert(0, str(ROOT))
    import sb3_trpo_ext
from sb3_trpo_ext import TRPO  # noqa: E402

RESULTS = ROOT / "docs" / "vine"
CACHE = ROOT / "runs" / "vine"  # fixed policies of the variance study (git-ignored)
VARIANCE_FILE = RESULTS / "variance.jsonl"
CURVES_FILE = RESULTS / "curves.jsonl"
THROUGHPUT_FILE = RESULTS / "throughput.jsonl"
REPORT_FILE = ROOT / "docs" / "vine.md"
#: the machine the results were measured on (what the report states; rewritten by every measuring command)
MACHINE_FILE = ROOT / "docs" / "vine" / "machine.json"

#: Per environment: VecEnv layout, TRPO hyperparameters shared by both schemes, vine's own, curve budget.
CONFIGS: dict[str, dict[str, Any]] = {
    "CartPole-v1": {
        "n_envs": 1,
        "normalize": False,
        "trpo": {},  # the defaults: n_steps 2048
        "vine": {"vine_n_states": 64, "vine_n_actions": 4, "vine_horizon": 20},  # the defaults
        "timesteps": 100_000,
        "eval_freq": 10_000,
        "eval_episodes": 10,
        "pretrain_steps": 10_240,
    },
    "Acrobot-v1": {
        "n_envs": 2,
        "normalize": True,
        "trpo": {"n_steps": 1024},
        "vine": {"vine_n_states": 64, "vine_n_actions": 4, "vine_horizon": 20},
        "timesteps": 100_000,
        "eval_freq": 10_000,
        "eval_episodes": 10,
        "pretrain_steps": 10_240,
    },
    "Hopper-v5": {
        "n_envs": 2,
        "normalize": True,
        "trpo": {"n_steps": 1024, "batch_size": 128, "target_kl": 0.03, "cg_max_steps": 25, "n_critic_updates": 20},
        "vine": {"vine_n_states": 64, "vine_n_actions": 4, "vine_horizon": 50},
        "timesteps": 100_000,
        "eval_freq": 10_000,
        "eval_episodes": 5,
        "pretrain_steps": 20_480,
    },
}
SCHEMES = ("single_path", "vine")
#: The variance records predate the ``code`` field; what is known of the code they ran on.
UNRECORDED_CODE = "variance: sb3_trpo_ext from the working tree, not recorded (HEAD was 9abcdfd or 8bf2c8a)"
VARIANCE_SCHEMES = ("vine", "single_path_equal_q", "single_path_equal_sim", "single_path_same_trunk")


# ------------------------------------------------------------------------------------------------ helpers
def code_version() -> str:
    """Where ``sb3_trpo_ext`` was imported from: a snapshot's commit (a ``COMMIT`` file beside the package), or
    the working tree and the repository's HEAD commit."""
    location = Path(sb3_trpo_ext.__file__).parent.parent
    if (location / "COMMIT").exists():
        return f"sb3_trpo_ext snapshot of commit {(location / 'COMMIT').read_text().strip()} ({location})"
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    return f"sb3_trpo_ext from {location}, repository HEAD {head.strip()}"


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one finished piece of work to a JSON-lines results file (with the code version)."""
    record = {**record, "code": code_version()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as file:
        file.write(json.dumps(record) + "\n")


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines results file (none if it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def make_env(env_id: str, seed: int, normalize_stats: Path | None = None) -> VecEnv:
    """The training VecEnv of ``env_id`` (DummyVecEnv, ``VecNormalize`` where configured). With
    ``normalize_stats`` the normalisation statistics are loaded from that file and frozen."""
    config = CONFIGS[env_id]
    venv: VecEnv = make_vec_env(env_id, n_envs=config["n_envs"], seed=seed)
    if config["normalize"]:
        if normalize_stats is not None:
            venv = VecNormalize.load(str(normalize_stats), venv)
            venv.training = False
        else:
            venv = VecNormalize(venv)
    return venv


def make_model(env_id: str, scheme: str, venv: VecEnv, seed: int, **overrides: Any) -> TRPO:
    """TRPO with the environment's configuration and the given sampling scheme."""
    config = CONFIGS[env_id]
    kwargs = {**config["trpo"], **(config["vine"] if scheme == "vine" else {}), **overrides}
    return TRPO("MlpPolicy", venv, sampling=scheme, seed=seed, **kwargs)


def branch_steps(model: TRPO) -> int:
    """Cumulative branch simulator steps of a model (0 for single path)."""
    return model.vine_branch_steps


# ----------------------------------------------------------------------------------------------- variance
def fixed_policy(env_id: str) -> tuple[dict[str, th.Tensor], Path | None]:
    """The policy the gradients are measured at: single path trained for the configured ``pretrain_steps``
    (seed 0), saved once under ``runs/vine/``. Returns its state dict and the frozen VecNormalize statistics."""
    config = CONFIGS[env_id]
    model_path = CACHE / f"fixed_{env_id}.zip"
    stats_path = CACHE / f"fixed_{env_id}_vecnormalize.pkl" if config["normalize"] else None
    if not model_path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        venv = make_env(env_id, seed=0)
        model = make_model(env_id, "single_path", venv, seed=0)
        model.learn(config["pretrain_steps"])
        model.save(model_path)
        if stats_path is not None:
            venv.save(str(stats_path))
    model = TRPO.load(model_path, device="cpu")
    return model.policy.state_dict(), stats_path


def collect_gradient(
    env_id: str, scheme: str, n_steps: int, seed: int, policy_state: dict[str, th.Tensor], stats: Path | None
) -> dict[str, Any]:
    """One batch of ``scheme`` from the fixed policy: the flat surrogate gradient w.r.t. the actor's parameters,
    the batch's trunk and branch steps, and how long ``collect_rollouts`` and the branches took."""
    venv = make_env(env_id, seed, stats)
    sampling = "vine" if scheme == "vine" else "single_path"
    rollout = n_steps * CONFIGS[env_id]["n_envs"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make_model(env_id, sampling, venv, seed, n_steps=n_steps, batch_size=rollout)
    model.policy.load_state_dict(policy_state)
    _, callback = model._setup_learn(rollout, callback=None)

    branch_seconds = 0.0
    if model._vine is not None:  # time the branches where they run
        run_branches = model._vine.run_branches

        def timed_run_branches(*args: Any, **kwargs: Any) -> Any:
            nonlocal branch_seconds
            start = time.perf_counter()
            result = run_branches(*args, **kwargs)
            branch_seconds = time.perf_counter() - start
            return result

        model._vine.run_branches = timed_run_branches  # type: ignore[method-assign]
    start = time.perf_counter()
    model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=n_steps)
    collect_seconds = time.perf_counter() - start

    if model._vine is not None:
        rollout_set = model.rollout_buffer.rollout_set
        obs, surrogate, _ = rollout_set.surrogate(model.normalize_advantage)
        q_samples = int(rollout_set.q_values.numel())
    else:
        obs, surrogate, _ = model._single_path_surrogate(next(model.rollout_buffer.get(batch_size=None)))
        q_samples = rollout
    objective = surrogate(model.policy.get_distribution(obs))
    grads = th.autograd.grad(objective, model._actor_params)
    venv.close()
    return {
        "gradient": th.cat([g.flatten() for g in grads]).detach().double().numpy(),
        "trunk_steps": rollout,
        "branch_steps": branch_steps(model),
        "q_samples": q_samples,
        "collect_seconds": collect_seconds,
        "branch_seconds": branch_seconds,
    }


def gradient_statistics(gradients: np.ndarray) -> dict[str, float]:
    """Scale-free statistics of ``M`` gradient samples (rows).

    * ``total_variance``: ``tr Cov(g) = E||g - E g||^2`` (unbiased, ``M - 1``), in the surrogate's own units;
    * ``signal``: unbiased ``||E g||^2 = ||mean g||^2 - tr/M``;
    * ``snr``: ``signal / total_variance`` (per batch; higher is better);
    * ``relative_variance``: ``total_variance / ||mean g||^2``, the variance of ``g / ||mean g||``;
    * ``cosine_loo``: mean over batches of ``cos(g_i, mean of the other batches)``.
    """
    m = len(gradients)
    mean = gradients.mean(axis=0)
    total_variance = float(((gradients - mean) ** 2).sum() / (m - 1))
    mean_norm2 = float(mean @ mean)
    signal = mean_norm2 - total_variance / m
    cosines = []
    for i in range(m):
        others = (mean * m - gradients[i]) / (m - 1)
        cosines.append(float(gradients[i] @ others / (np.linalg.norm(gradients[i]) * np.linalg.norm(others))))
    return {
        "total_variance": total_variance,
        "mean_norm2": mean_norm2,
        "signal": signal,
        "snr": signal / total_variance,
        "relative_variance": total_variance / mean_norm2,
        "cosine_loo": float(np.mean(cosines)),
        "cosine_loo_std": float(np.std(cosines)),
    }


def scheme_steps(env_id: str, scheme: str, vine_record: dict[str, Any] | None) -> int:
    """``n_steps`` (per environment) of a variance scheme; the single-path ones are sized from vine's record."""
    config = CONFIGS[env_id]
    trunk_n_steps = config["trpo"].get("n_steps", 2048)
    if scheme in ("vine", "single_path_same_trunk"):
        return trunk_n_steps
    assert vine_record is not None, "vine's batches come first"
    if scheme == "single_path_equal_q":
        return math.ceil(vine_record["q_samples"] / config["n_envs"])
    total = vine_record["trunk_steps"] + vine_record["branch_steps"]
    return math.ceil(total / config["n_envs"])


def run_variance(envs: list[str], n_batches: int) -> None:
    """The variance study (see the module docstring), one (environment, scheme) record at a time."""
    done = {(r["env"], r["scheme"]): r for r in read_records(VARIANCE_FILE)}
    for env_id in envs:
        policy_state, stats = fixed_policy(env_id)
        vine_mean_path = CACHE / f"vine_mean_gradient_{env_id}.npy"
        for scheme in VARIANCE_SCHEMES:
            if (env_id, scheme) in done:
                print(f"skip {env_id} {scheme} (done)")
                continue
            n_steps = scheme_steps(env_id, scheme, done.get((env_id, "vine")))
            samples = [
                collect_gradient(env_id, scheme, n_steps, 10_000 + j, policy_state, stats) for j in range(n_batches)
            ]
            gradients = np.stack([s["gradient"] for s in samples])
            record: dict[str, Any] = {
                "env": env_id,
                "scheme": scheme,
                "batches": n_batches,
                "n_steps": n_steps,
                "n_envs": CONFIGS[env_id]["n_envs"],
                "fixed_policy": f"single path, {CONFIGS[env_id]['pretrain_steps']} steps, seed 0",
                "n_params": int(gradients.shape[1]),
                **gradient_statistics(gradients),
                **{
                    key: float(np.mean([s[key] for s in samples]))
                    for key in ("trunk_steps", "branch_steps", "q_samples")
                },
                "collect_seconds_median": float(np.median([s["collect_seconds"] for s in samples])),
                "branch_seconds_median": float(np.median([s["branch_seconds"] for s in samples])),
                "command": " ".join(sys.argv),
            }
            mean = gradients.mean(axis=0)
            if scheme == "vine":
                np.save(vine_mean_path, mean)
            vine_mean = np.load(vine_mean_path)
            record["cosine_to_vine_mean"] = float(mean @ vine_mean / (np.linalg.norm(mean) * np.linalg.norm(vine_mean)))
            append_record(VARIANCE_FILE, record)
            MACHINE_FILE.write_text(json.dumps(machine(), indent=2) + "\n")
            done[(env_id, scheme)] = record
            print(
                f"{env_id:12s} {scheme:24s} n_steps={n_steps:6d} sim={record['trunk_steps'] + record['branch_steps']:8.0f}"
                f" q={record['q_samples']:6.0f} snr={record['snr']:.3f} rel_var={record['relative_variance']:.3f}"
                f" cos_loo={record['cosine_loo']:.3f} cos_vine={record['cosine_to_vine_mean']:.3f}"
                f" collect={record['collect_seconds_median']:.2f}s",
                flush=True,
            )


def throughput(records: list[dict[str, Any]], env_id: str) -> dict[str, float] | None:
    """Trunk and branch steps/s on ``env_id`` from the variance records: the trunk from single path's
    ``collect_rollouts`` on vine's trunk, the branches from vine's extra ``collect_rollouts`` time."""
    by_scheme = {r["scheme"]: r for r in records if r["env"] == env_id}
    if "vine" not in by_scheme or "single_path_same_trunk" not in by_scheme:
        return None
    vine, single = by_scheme["vine"], by_scheme["single_path_same_trunk"]
    trunk_rate = single["trunk_steps"] / single["collect_seconds_median"]
    branch_time = vine["collect_seconds_median"] - single["collect_seconds_median"]
    branch_rate = vine["branch_steps"] / branch_time
    return {
        "trunk_steps": single["trunk_steps"],
        "branch_steps": vine["branch_steps"],
        "trunk_steps_per_s": trunk_rate,
        "branch_steps_per_s": branch_rate,
        "branch_steps_per_s_timed": vine["branch_steps"] / vine["branch_seconds_median"],
        "ratio": branch_rate / trunk_rate,
    }


def run_throughput(envs: list[str], repeats: int = 7) -> None:
    """Steady-state trunk and branch steps/s, measured side by side: a single-path and a vine model of the same
    configuration are warmed up with one update each, then their ``collect_rollouts`` calls alternate; the trunk
    rate is single path's, the branch rate is vine's branch steps over its extra collection time (medians)."""
    for env_id in envs:
        models = {}
        for scheme in ("single_path", "vine"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                models[scheme] = make_model(env_id, scheme, make_env(env_id, seed=0), seed=0)
            models[scheme].learn(models[scheme].n_steps * models[scheme].n_envs)
        seconds: dict[str, list[float]] = {scheme: [] for scheme in models}
        branches: list[int] = []
        for _ in range(repeats):
            for scheme, model in models.items():
                _, callback = model._setup_learn(10**9, callback=None, reset_num_timesteps=False)
                before = model.vine_branch_steps
                start = time.perf_counter()
                model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=model.n_steps)
                seconds[scheme].append(time.perf_counter() - start)
                if scheme == "vine":
                    branches.append(model.vine_branch_steps - before)
        single, vine = statistics.median(seconds["single_path"]), statistics.median(seconds["vine"])
        trunk = models["vine"].n_steps * models["vine"].n_envs
        record = {
            "env": env_id,
            "code": code_version(),
            "repeats": repeats,
            "trunk_steps": trunk,
            "branch_steps": statistics.median(branches),
            "trunk_steps_per_s": trunk / single,
            "branch_steps_per_s": statistics.median(branches) / (vine - single),
        }
        record["ratio"] = record["branch_steps_per_s"] / record["trunk_steps_per_s"]
        append_record(THROUGHPUT_FILE, record)
        print(
            f"{env_id}: trunk {record['trunk_steps_per_s']:.0f} steps/s, branches {record['branch_steps_per_s']:.0f} "
            f"steps/s, ratio {record['ratio']:.2f}",
            flush=True,
        )
        for model in models.values():
            model.env.close()


def steady_throughput_table(records: list[dict[str, Any]]) -> list[str]:
    """The latest steady-state measurement of each environment (``throughput`` command)."""
    latest = {r["env"]: r for r in records}
    lines = [
        "| env | trunk steps | branch steps | trunk steps/s | branch steps/s | ratio branch / trunk | code |",
        "|---|---|---|---|---|---|---|",
    ]
    for env_id, r in latest.items():
        lines.append(
            f"| {env_id} | {r['trunk_steps']} | {r['branch_steps']:.0f} | {r['trunk_steps_per_s']:.0f} "
            f"| {r['branch_steps_per_s']:.0f} | {r['ratio']:.2f} | {r['code']} |"
        )
    return lines


# ------------------------------------------------------------------------------------------------- curves
class PeriodicEvaluation(BaseCallback):
    """Deterministic evaluation on a separate environment when a rollout starts after every ``eval_freq`` trunk
    steps (so the policy evaluated is the one trained on exactly the steps recorded), and once more at the end."""

    def __init__(self, env_id: str, eval_freq: int, n_episodes: int, seed: int):
        super().__init__()
        self.eval_env = gym.make(env_id)
        self.eval_freq = eval_freq
        self.n_episodes = n_episodes
        self.seed = seed
        self.next_eval = 0
        self.points: list[dict[str, float]] = []
        self.start = time.perf_counter()
        self.eval_seconds = 0.0

    def evaluate(self) -> None:
        """Record (trunk steps, total simulator steps, training seconds, mean deterministic return)."""
        start = time.perf_counter()
        normalizer = self.model.get_vec_normalize_env()
        returns = []
        for episode in range(self.n_episodes):
            obs, _ = self.eval_env.reset(seed=self.seed * 1000 + episode)
            done, total = False, 0.0
            while not done:
                policy_obs = normalizer.normalize_obs(obs) if normalizer is not None else obs
                action, _ = self.model.predict(policy_obs, deterministic=True)
                obs, reward, terminated, truncated, _ = self.eval_env.step(action)
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
        self.points.append(
            {
                "trunk_steps": self.model.num_timesteps,
                "total_sim_steps": self.model.num_timesteps + branch_steps(self.model),
                "wall_seconds": time.perf_counter() - self.start - self.eval_seconds,
                "eval_mean": float(np.mean(returns)),
                "eval_std": float(np.std(returns)),
            }
        )
        self.eval_seconds += time.perf_counter() - start

    def _on_rollout_start(self) -> None:
        if self.model.num_timesteps >= self.next_eval:
            self.evaluate()
            self.next_eval += self.eval_freq

    def _on_step(self) -> bool:
        return True


def run_curve(env_id: str, scheme: str, seed: int, timesteps: int) -> dict[str, Any]:
    """Train one (scheme, env, seed) for ``timesteps`` trunk steps with periodic evaluation."""
    config = CONFIGS[env_id]
    model = make_model(env_id, scheme, make_env(env_id, seed), seed)
    evaluation = PeriodicEvaluation(env_id, config["eval_freq"], config["eval_episodes"], seed=10_000 + seed)
    model.learn(timesteps, callback=evaluation)
    evaluation.evaluate()
    return {
        "env": env_id,
        "scheme": scheme,
        "seed": seed,
        "timesteps": timesteps,
        "hyperparameters": {**config["trpo"], **(config["vine"] if scheme == "vine" else {})},
        "n_envs": config["n_envs"],
        "normalize": config["normalize"],
        "points": evaluation.points,
        "final_eval": evaluation.points[-1]["eval_mean"],
        "total_sim_steps": evaluation.points[-1]["total_sim_steps"],
        "wall_seconds": evaluation.points[-1]["wall_seconds"],
        "command": " ".join(sys.argv),
    }


def write_curves_csv() -> None:
    """Flatten the curve records into ``docs/vine/curves.csv``, one row per evaluation point."""
    rows = ["scheme,env,seed,trunk_steps,total_sim_steps,wall_seconds,eval_mean,eval_std"]
    for record in read_records(CURVES_FILE):
        for p in record["points"]:
            rows.append(
                f"{record['scheme']},{record['env']},{record['seed']},{p['trunk_steps']},{p['total_sim_steps']},"
                f"{p['wall_seconds']:.2f},{p['eval_mean']:.2f},{p['eval_std']:.2f}"
            )
    (RESULTS / "curves.csv").write_text("\n".join(rows) + "\n")


def run_curves(envs: list[str], seeds: list[int], timesteps: int | None) -> None:
    """Learning curves of both schemes, seed by seed (single path then vine per seed), skipping finished runs."""
    done = {(r["scheme"], r["env"], r["seed"]) for r in read_records(CURVES_FILE)}
    for env_id in envs:
        budget = timesteps or CONFIGS[env_id]["timesteps"]
        for seed in seeds:
            for scheme in SCHEMES:
                if (scheme, env_id, seed) in done:
                    print(f"skip {scheme} {env_id} seed {seed} (done)")
                    continue
                record = run_curve(env_id, scheme, seed, budget)
                append_record(CURVES_FILE, record)
                MACHINE_FILE.write_text(json.dumps(machine(), indent=2) + "\n")
                write_curves_csv()
                print(
                    f"{env_id:12s} {scheme:12s} seed {seed}: final eval {record['final_eval']:8.1f}, "
                    f"sim steps {record['total_sim_steps']}, {record['wall_seconds']:.0f} s",
                    flush=True,
                )
    plot_curves()


def plot_curves() -> list[Path]:
    """One PNG per environment: eval return against trunk steps and against total simulator steps, mean over
    seeds with a min/max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_records(CURVES_FILE)
    figures = []
    for env_id in dict.fromkeys(r["env"] for r in records):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        for scheme, color in zip(SCHEMES, ("tab:blue", "tab:orange"), strict=True):
            runs = [r for r in records if r["env"] == env_id and r["scheme"] == scheme]
            if not runs:
                continue
            length = min(len(r["points"]) for r in runs)
            returns = np.array([[p["eval_mean"] for p in r["points"][:length]] for r in runs])
            for ax, x_key in zip(axes, ("trunk_steps", "total_sim_steps"), strict=True):
                x = np.mean([[p[x_key] for p in r["points"][:length]] for r in runs], axis=0)
                ax.plot(x, returns.mean(axis=0), color=color, label=f"{scheme} ({len(runs)} seeds)")
                ax.fill_between(x, returns.min(axis=0), returns.max(axis=0), color=color, alpha=0.2)
        axes[0].set_xlabel("trunk steps (num_timesteps)")
        axes[1].set_xlabel("total simulator steps (trunk + branch)")
        axes[0].set_ylabel("deterministic eval return")
        for ax in axes:
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(f"{env_id}: mean and min/max over seeds")
        fig.tight_layout()
        path = RESULTS / f"curves_{env_id}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        figures.append(path)
    return figures


# ------------------------------------------------------------------------------------------------- report
def machine() -> dict[str, str]:
    """nproc, CPU model, Python, torch, SB3 and gymnasium versions of this machine."""
    import stable_baselines3

    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "torch": th.__version__,
        "stable_baselines3": stable_baselines3.__version__,
        "gymnasium": gym.__version__,
    }


def variance_tables(records: list[dict[str, Any]]) -> list[str]:
    """Markdown tables of the variance study: every scheme, then the two comparisons against vine."""
    lines = [
        "| env | scheme | n_steps x n_envs | Q samples | sim steps | SNR | rel. variance | cos (leave-one-out) "
        "| cos to vine mean |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['env']} | {r['scheme']} | {r['n_steps']} x {r['n_envs']} | {r['q_samples']:.0f} "
            f"| {r['trunk_steps'] + r['branch_steps']:.0f} | {r['snr']:.3f} | {r['relative_variance']:.2f} "
            f"| {r['cosine_loo']:.3f} ± {r['cosine_loo_std']:.3f} | {r['cosine_to_vine_mean']:.3f} |"
        )
    lines += [
        "",
        "| env | comparison | SNR vine | SNR single path | SNR ratio vine / single path | cos vine | cos single path |",
        "|---|---|---|---|---|---|---|",
    ]
    by_key = {(r["env"], r["scheme"]): r for r in records}
    for env_id in dict.fromkeys(r["env"] for r in records):
        vine = by_key.get((env_id, "vine"))
        for label, scheme in (
            ("equal Q samples", "single_path_equal_q"),
            ("equal simulator steps", "single_path_equal_sim"),
            ("same trunk (default)", "single_path_same_trunk"),
        ):
            single = by_key.get((env_id, scheme))
            if vine is None or single is None:
                continue
            lines.append(
                f"| {env_id} | {label} | {vine['snr']:.3f} | {single['snr']:.3f} | {vine['snr'] / single['snr']:.2f} "
                f"| {vine['cosine_loo']:.3f} | {single['cosine_loo']:.3f} |"
            )
    return lines


def throughput_table(records: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| env | trunk steps | branch steps | trunk steps/s | branch steps/s (difference) "
        "| branch steps/s (timed run_branches) | ratio branch / trunk |",
        "|---|---|---|---|---|---|---|",
    ]
    for env_id in dict.fromkeys(r["env"] for r in records):
        t = throughput(records, env_id)
        if t is None:
            continue
        lines.append(
            f"| {env_id} | {t['trunk_steps']:.0f} | {t['branch_steps']:.0f} | {t['trunk_steps_per_s']:.0f} "
            f"| {t['branch_steps_per_s']:.0f} | {t['branch_steps_per_s_timed']:.0f} | {t['ratio']:.2f} |"
        )
    return lines


def curve_tables(records: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Per-run final returns, and per (env, scheme) means."""
    runs = [
        "| env | scheme | seed | trunk steps | total sim steps | wall s | final eval return |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(records, key=lambda r: (r["env"], r["scheme"], r["seed"])):
        runs.append(
            f"| {r['env']} | {r['scheme']} | {r['seed']} | {r['timesteps']} | {r['total_sim_steps']} "
            f"| {r['wall_seconds']:.0f} | {r['final_eval']:.1f} |"
        )
    means = [
        "| env | scheme | seeds | final eval mean | min | max | eval averaged over the curve "
        "| total sim steps (mean) | wall s (mean) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for env_id in dict.fromkeys(r["env"] for r in records):
        for scheme in SCHEMES:
            group = [r for r in records if r["env"] == env_id and r["scheme"] == scheme]
            if not group:
                continue
            finals = [r["final_eval"] for r in group]
            means.append(
                f"| {env_id} | {scheme} | {len(group)} | {np.mean(finals):.1f} | {min(finals):.1f} | {max(finals):.1f} "
                f"| {np.mean([np.mean([p['eval_mean'] for p in r['points']]) for r in group]):.1f} "
                f"| {np.mean([r['total_sim_steps'] for r in group]):.0f} "
                f"| {np.mean([r['wall_seconds'] for r in group]):.0f} |"
            )
    return runs, means


def summary(variance: list[dict[str, Any]], curves: list[dict[str, Any]]) -> list[str]:
    """A one-paragraph summary computed from the results: SNR ratio ranges and curve averages."""
    by_key = {(r["env"], r["scheme"]): r for r in variance}
    envs = [e for e in dict.fromkeys(r["env"] for r in variance) if (e, "vine") in by_key]
    lines = []
    for label, scheme in (
        ("equal Q samples", "single_path_equal_q"),
        ("equal simulator steps", "single_path_equal_sim"),
    ):
        ratios = [by_key[(e, "vine")]["snr"] / by_key[(e, scheme)]["snr"] for e in envs if (e, scheme) in by_key]
        if ratios:
            lines.append(
                f"At {label}, vine's gradient SNR is {min(ratios):.2f}x to {max(ratios):.2f}x single path's "
                f"({len(ratios)} environments)."
            )
    ahead, extra = [], []
    for env_id in dict.fromkeys(r["env"] for r in curves):
        group = {s: [r for r in curves if r["env"] == env_id and r["scheme"] == s] for s in SCHEMES}
        if not all(group.values()):
            continue
        average = {s: np.mean([np.mean([p["eval_mean"] for p in r["points"]]) for r in group[s]]) for s in SCHEMES}
        ahead.append(average["vine"] > average["single_path"])
        extra.append(np.mean([r["total_sim_steps"] / r["points"][-1]["trunk_steps"] for r in group["vine"]]))
    if ahead:
        lines.append(
            f"In learning at equal trunk steps, vine's eval averaged over the curve is above single path's on "
            f"{sum(ahead)} of {len(ahead)} environments, while each vine run takes {min(extra):.1f}x to "
            f"{max(extra):.1f}x as many simulator steps as trunk steps."
        )
    return lines


def reading(variance: list[dict[str, Any]], curves: list[dict[str, Any]]) -> list[str]:
    """Plain statements of what the numbers say, generated from them."""
    lines = [" ".join(summary(variance, curves)), ""]
    by_key = {(r["env"], r["scheme"]): r for r in variance}
    for env_id in dict.fromkeys(r["env"] for r in variance):
        vine = by_key.get((env_id, "vine"))
        for label, scheme in (
            ("equal Q samples", "single_path_equal_q"),
            ("equal simulator steps", "single_path_equal_sim"),
        ):
            single = by_key.get((env_id, scheme))
            if vine is None or single is None:
                continue
            ratio = vine["snr"] / single["snr"]
            verdict = "higher" if ratio > 1 else "lower"
            lines.append(
                f"- {env_id}, {label}: vine's gradient SNR is {ratio:.2f}x single path's ({verdict}; "
                f"{vine['snr']:.3f} vs {single['snr']:.3f}, {vine['batches']} batches each)."
            )
        single = by_key.get((env_id, "single_path_equal_sim"))
        if vine is not None and single is not None:
            lines.append(
                f"- {env_id}: the mean gradients of both schemes point almost the same way (cosine "
                f"{single['cosine_to_vine_mean']:.3f} between vine's and single path's at equal simulator steps), "
                "so the SNR compares estimators of nearly the same direction."
            )
        t = throughput(variance, env_id)
        if t is not None:
            lines.append(
                f"- {env_id}: a branch step costs {1 / t['ratio']:.1f}x a trunk step "
                f"({t['branch_steps_per_s']:.0f} vs {t['trunk_steps_per_s']:.0f} steps/s)."
            )
    for env_id in dict.fromkeys(r["env"] for r in curves):
        finals = {s: [r["final_eval"] for r in curves if r["env"] == env_id and r["scheme"] == s] for s in SCHEMES}
        if not all(finals.values()):
            continue
        sims = {
            s: np.mean([r["total_sim_steps"] for r in curves if r["env"] == env_id and r["scheme"] == s])
            for s in SCHEMES
        }
        walls = {
            s: np.mean([r["wall_seconds"] for r in curves if r["env"] == env_id and r["scheme"] == s]) for s in SCHEMES
        }
        averages = {
            s: np.mean(
                [
                    np.mean([p["eval_mean"] for p in r["points"]])
                    for r in curves
                    if r["env"] == env_id and r["scheme"] == s
                ]
            )
            for s in SCHEMES
        }
        vine_final, single_final = np.mean(finals["vine"]), np.mean(finals["single_path"])
        if min(finals["vine"]) <= max(finals["single_path"]) and min(finals["single_path"]) <= max(finals["vine"]):
            verdict = "the seed ranges overlap, so no winner at the end"
        else:
            verdict = f"{'vine' if vine_final > single_final else 'single path'} is ahead on every seed"
        # vine at single path's simulator budget: each vine run's last evaluation within that many total steps
        budget = sims["single_path"]
        vine_at_budget = np.mean(
            [
                [p["eval_mean"] for p in r["points"] if p["total_sim_steps"] <= budget][-1]
                for r in curves
                if r["env"] == env_id and r["scheme"] == "vine"
            ]
        )
        lines.append(
            f"- {env_id}, equal trunk steps: final eval {vine_final:.1f} (vine, {len(finals['vine'])} seeds, "
            f"{min(finals['vine']):.1f} to {max(finals['vine']):.1f}) vs {single_final:.1f} (single path, "
            f"{len(finals['single_path'])} seeds, {min(finals['single_path']):.1f} to "
            f"{max(finals['single_path']):.1f}): {verdict}; eval averaged over the curve {averages['vine']:.1f} "
            f"(vine) vs {averages['single_path']:.1f} (single path); vine used "
            f"{sims['vine'] / sims['single_path']:.2f}x the simulator steps and "
            f"{walls['vine'] / walls['single_path']:.2f}x the wall time. At single path's final simulator budget "
            f"({budget:.0f} steps) vine's last evaluation averages {vine_at_budget:.1f} against single path's "
            f"{single_final:.1f}."
        )
    return lines


def write_report(check: bool = False) -> None:
    """Regenerate ``docs/vine.md`` from ``docs/vine/*.jsonl`` and ``docs/vine/machine.json`` (nothing is rerun);
    with ``check``, write nothing and exit 1 with a diff if the committed report differs from what the data give.
    ``machine.json`` records the machine the results were measured on (written by ``variance`` and ``curves``)."""
    variance = read_records(VARIANCE_FILE)
    curves = read_records(CURVES_FILE)
    if curves and not check:
        write_curves_csv()
        figures = plot_curves()
    else:
        figures = [RESULTS / f"curves_{env_id}.png" for env_id in dict.fromkeys(r["env"] for r in curves)]
    info = json.loads(MACHINE_FILE.read_text())
    commands = list(dict.fromkeys(r["command"] for r in [*variance, *curves]))
    runs_table, means_table = curve_tables(curves)
    text = [
        "# Vine against single-path sampling",
        "",
        "Generated by `python benchmarks/vine.py report` from `docs/vine/variance.jsonl` and "
        "`docs/vine/curves.jsonl` (see the docstring of `benchmarks/vine.py` for the method).",
        "",
        "## Machine and commands",
        "",
        f"- `nproc`: {info['nproc']} (shared with other work while these ran); CPU: {info['cpu']}",
        f"- Python {info['python']}, torch {info['torch']} (one thread), stable-baselines3 "
        f"{info['stable_baselines3']}, gymnasium {info['gymnasium']}",
        "",
        "Commands run (from the repository root, `.venv/bin/python`):",
        "",
        "```bash",
        *[f"python {c.replace(str(ROOT) + '/', '')}" for c in commands],
        "python benchmarks/vine.py report",
        "```",
        "",
        "Code measured (recorded with each result; the curves ran on a snapshot of a commit, "
        "`git archive <commit> sb3_trpo_ext | tar -x -C /tmp/vine_pkg`, the commit written to "
        "`/tmp/vine_pkg/COMMIT`, and `PYTHONPATH=/tmp/vine_pkg`, because "
        "the working tree was being edited meanwhile):",
        "",
        *[f"- {c}" for c in dict.fromkeys(r.get("code", UNRECORDED_CODE) for r in [*variance, *curves])],
        "",
        "Configurations (both schemes share the TRPO hyperparameters; vine adds its own):",
        "",
        "| env | n_envs | VecNormalize | TRPO | vine |",
        "|---|---|---|---|---|",
        *[
            f"| {e} | {c['n_envs']} | {c['normalize']} | {c['trpo'] or 'defaults (n_steps 2048)'} | {c['vine']} |"
            for e, c in CONFIGS.items()
        ],
        "",
        "## Gradient variance at a fixed policy",
        "",
        "Fixed policy per environment: single path trained from seed 0 for "
        + ", ".join(f"{e} {c['pretrain_steps']} steps" for e, c in CONFIGS.items() if e != "Acrobot-v1")
        + " (VecNormalize statistics frozen after it). Each batch is a fresh environment seed (10000 + j); "
        "`g` is the gradient of the scheme's surrogate (normalised advantages, as in training) with respect to "
        "the actor's parameters. Because the two surrogates have different scales, we compare scale-free "
        "figures: **SNR** = `||E g||^2 / E||g - E g||^2` per batch (signal estimated without bias as "
        "`||mean g||^2 - tr(Cov)/M`), **relative variance** = `tr(Cov) / ||mean g||^2` (the variance of "
        "`g / ||mean g||`), the mean **cosine** of each `g` with the mean of the other batches, and the cosine of "
        "each scheme's mean gradient with vine's (are they estimating the same direction?). "
        "CartPole has 2 actions, so vine tries both (K = 2, N x K = 128 Q samples).",
        "",
        *variance_tables(variance),
        "",
        "### Branch against trunk throughput",
        "",
        "Median `collect_rollouts` time of single path on vine's trunk length (trunk steps/s) and vine's extra "
        "time over it (branch steps/s); the branches' own timing (`run_branches`) is given as a check.",
        "",
        *throughput_table(variance),
        "",
        "Steady state on the code as of the last `python benchmarks/vine.py throughput` (both models warmed up "
        "by one update, then their collections alternate; medians of 7; the trunk of single path uses the numpy "
        "actor, so the comparison is against the fastest trunk):",
        "",
        *steady_throughput_table(read_records(THROUGHPUT_FILE)),
        "",
        "A branch step can be cheaper than a trunk step: the branches of one step share one batched policy "
        "forward pass, while the trunk calls the policy once per step for one or two environments; each branch "
        "step also restores and snapshots the simulator state (not timed separately here).",
        "",
        "## Learning curves",
        "",
        "Deterministic evaluation on a separate environment (10 episodes, 5 on Hopper) at the first rollout start "
        "after every 10k trunk steps and at the end. Wall seconds exclude evaluation. 'Eval averaged over the "
        "curve' is the mean of all evaluation points of a run (an area under the curve against trunk steps), "
        "averaged over seeds: it separates runs that all end at the maximum.",
        "",
        *means_table,
        "",
        "Every run:",
        "",
        *runs_table,
        "",
        *[f"![{f.stem}](vine/{f.name})" for f in figures],
        "",
        "## Reading",
        "",
        *reading(variance, curves),
        "",
        "Caveats: few batches and seeds on a shared 2-core machine; the variance is measured at one policy per "
        "environment; the vine hyperparameters (N, K, H) were not tuned. Read the numbers above, not more.",
    ]
    report = "\n".join(text) + "\n"
    if check:
        committed = REPORT_FILE.read_text()
        if committed != report:
            diff = difflib.unified_diff(
                committed.splitlines(), report.splitlines(), "committed", "regenerated", lineterm=""
            )
            print("\n".join(diff))
            raise SystemExit(1)
        print(f"{REPORT_FILE} is what its data give")
        return
    REPORT_FILE.write_text(report)
    print(f"wrote {REPORT_FILE}")


# --------------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("variance", "curves", "throughput", "report"))
    parser.add_argument("--envs", nargs="+", default=None, help="environments (default per command)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="curves: training seeds")
    parser.add_argument("--timesteps", type=int, default=None, help="curves: trunk steps (default per env)")
    parser.add_argument("--batches", type=int, default=24, help="variance: independent batches per scheme")
    parser.add_argument("--check", action="store_true", help="report: exit 1 if docs/vine.md differs from its data")
    args = parser.parse_args()
    th.set_num_threads(1)
    if args.command == "variance":
        run_variance(args.envs or ["CartPole-v1", "Hopper-v5"], args.batches)
    elif args.command == "throughput":
        run_throughput(args.envs or ["CartPole-v1", "Hopper-v5"])
    elif args.command == "curves":
        run_curves(args.envs or ["CartPole-v1", "Acrobot-v1"], args.seeds, args.timesteps)
    else:
        write_report(check=args.check)


if __name__ == "__main__":
    main()
