"""The README's first example, measured: train it, evaluate it, and write what it scored to docs/first_example.json
(the data behind the README's "what to expect" sentence, which benchmarks/readme_numbers.py writes).

    python benchmarks/first_example.py [--json docs/first_example.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_trpo_ext import TRPO

#: the trpo_ext Zoo block for Pendulum-v1 (hyperparams/trpo_ext.yml), as the README's example passes it
SETTINGS = dict(n_steps=1024, gamma=0.9, n_critic_updates=15, use_sde=True, sde_sample_freq=4, target_kl=0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=Path("docs/first_example.json"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    env = make_vec_env("Pendulum-v1", n_envs=2, seed=args.seed)
    model = TRPO("MlpPolicy", env, seed=args.seed, **SETTINGS).learn(100_000)
    mean, std = evaluate_policy(model, env, n_eval_episodes=10)
    record = {
        "command": "python benchmarks/first_example.py",
        "env": "Pendulum-v1",
        "n_envs": 2,
        "settings": SETTINGS,
        "timesteps": 100_000,
        "seed": args.seed,
        "n_eval_episodes": 10,
        "mean_return": float(mean),
        "std_return": float(std),
        "wall_seconds": time.perf_counter() - start_wall,
        "cpu_seconds": time.process_time() - start_cpu,
    }
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
