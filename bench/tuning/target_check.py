"""Issue 26's target check of the tuned trpo_lstm block: for each seed, the Zoo command a user runs

    python -m sb3_trpo_ext.zoo train --algo trpo_lstm --env CartPoleNoVel-v1 --seed S

then the saved final model (the Zoo's ``CartPoleNoVel-v1.zip`` with its ``vecnormalize.pkl``) over 10 deterministic
episodes. Target: mean of the seeds' means >= 450, no seed below 350. Every seed is reported.

    python bench/tuning/target_check.py [--seeds 0 1 2]     # resumable: a seed with a result is not rerun
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENV_ID = "CartPoleNoVel-v1"


def evaluate(run: Path, seed: int) -> list[float]:
    import rl_zoo3.import_envs  # noqa: F401  (registers CartPoleNoVel-v1)
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize

    from sb3_trpo_ext import RecurrentTRPO

    env = VecNormalize.load(str(run / ENV_ID / "vecnormalize.pkl"), make_vec_env(ENV_ID, n_envs=1, seed=seed))
    env.training, env.norm_reward = False, False
    model = RecurrentTRPO.load(run / f"{ENV_ID}.zip", env=env)
    returns, _ = evaluate_policy(model, env, n_eval_episodes=10, deterministic=True, return_episode_rewards=True)
    return [float(r) for r in returns]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=HERE / f"target-check-{ENV_ID}.json")
    args = parser.parse_args()
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    for seed in args.seeds:
        if str(seed) in results:
            continue
        folder = HERE / "target-check" / f"seed{seed}"
        command = [sys.executable, "-m", "sb3_trpo_ext.zoo", "train", "--algo", "trpo_lstm", "--env", ENV_ID,
                   "--seed", str(seed), "-f", str(folder)]  # fmt: skip
        started = time.time()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
        run = sorted((folder / "trpo_lstm").glob(f"{ENV_ID}_*"))[-1]
        returns = evaluate(run, seed)
        results[str(seed)] = {
            "command": " ".join(command[1:]),
            "commit": commit,
            "wall_seconds": round(time.time() - started, 1),
            "returns": returns,
            "mean": sum(returns) / len(returns),
        }
        args.out.write_text(json.dumps(results, indent=1))
        print(f"seed {seed}: mean {results[str(seed)]['mean']:.1f} over 10 episodes", flush=True)
    means = [results[str(seed)]["mean"] for seed in args.seeds]
    met = sum(means) / len(means) >= 450 and min(means) >= 350
    print(f"seeds {args.seeds}: means {[round(m, 1) for m in means]}, average {sum(means) / len(means):.1f}: "
          f"target {'met' if met else 'missed'}")  # fmt: skip


if __name__ == "__main__":
    main()
