"""Train, evaluate and save a TRPO agent in a few lines.

Usage::

    python -m sb3_trpo_ext.demo                      # CartPole-v1, 100k steps
    python -m sb3_trpo_ext.demo --env Pendulum-v1 --timesteps 200_000 --seed 1

The model is trained with ``TRPO("MlpPolicy", env_id)``, evaluated deterministically on a fresh
``Monitor``-wrapped environment, and saved as a ``.zip`` that ``TRPO.load(path)`` reads back.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path

import gymnasium as gym
import torch as th
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from sb3_trpo_ext import TRPO

DEFAULT_ENV = "CartPole-v1"
DEFAULT_TIMESTEPS = 100_000
DEFAULT_EVAL_EPISODES = 20
PROG = "python -m sb3_trpo_ext.demo"


def default_output_path(env_id: str) -> Path:
    """``runs/demo/trpo_<env>.zip``, with characters that are awkward in file names (``ALE/Pong-v5``) replaced."""
    safe_env = re.sub(r"[^A-Za-z0-9_.-]+", "_", env_id)
    return Path("runs") / "demo" / f"trpo_{safe_env}.zip"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train TRPO on a Gymnasium environment, evaluate it and save the model.",
    )
    parser.add_argument("--env", default=DEFAULT_ENV, help=f"Gymnasium environment id (default: {DEFAULT_ENV})")
    parser.add_argument(
        "--timesteps",
        type=int,
        default=DEFAULT_TIMESTEPS,
        help=f"total training timesteps (default: {DEFAULT_TIMESTEPS})",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed; evaluation uses seed + 1 (default: 0)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to save the model (default: runs/demo/trpo_<env>.zip)",
    )
    parser.add_argument(
        "--eval-episodes",
        type=int,
        default=DEFAULT_EVAL_EPISODES,
        help=f"evaluation episodes (default: {DEFAULT_EVAL_EPISODES})",
    )
    parser.add_argument("--no-progress-bar", action="store_true", help="do not show the training progress bar")
    args = parser.parse_args(argv)
    if args.timesteps <= 0:
        parser.error("--timesteps must be positive")
    if args.eval_episodes <= 0:
        parser.error("--eval-episodes must be positive")
    if args.out is None:
        args.out = default_output_path(args.env)
    return args


def check_env_id(env_id: str) -> None:
    """Exit with status 2 and one line naming ``env_id`` and the closest registered ids if gymnasium does not
    know it (checked before anything is built, instead of gymnasium's traceback from inside ``TRPO``)."""
    try:
        gym.spec(env_id)
    except gym.error.Error:  # NameNotFound, VersionNotFound, NamespaceNotFound, DeprecatedEnv, ...
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
        hint = f"close matches: {', '.join(close)}" if close else "see gymnasium.pprint_registry() for the ids"
        print(f"{PROG}: error: unknown environment id {env_id!r} ({hint})", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    env_id: str = args.env
    out: Path = args.out
    check_env_id(env_id)

    # A small MLP gains nothing from intra-op threads; on a busy machine they slow it several times.
    th.set_num_threads(1)
    print(f"Training TRPO on {env_id} for {args.timesteps} timesteps (seed={args.seed})")
    model = TRPO("MlpPolicy", env_id, seed=args.seed, verbose=0)
    model.learn(total_timesteps=args.timesteps, progress_bar=not args.no_progress_bar)

    eval_env = Monitor(gym.make(env_id))
    eval_env.reset(seed=args.seed + 1)
    eval_env.action_space.seed(args.seed + 1)
    try:
        mean_reward, std_reward = evaluate_policy(
            model, eval_env, n_eval_episodes=args.eval_episodes, deterministic=True
        )
    finally:
        eval_env.close()

    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    saved = out.resolve()
    if saved.suffix == "":  # SB3 appends ".zip" when the path has no suffix
        saved = saved.with_name(saved.name + ".zip")
    train_env = model.get_env()
    if train_env is not None:
        train_env.close()

    print(f"Saved model: {saved}")
    print(f"mean reward {mean_reward:.2f} +/- {std_reward:.2f} over {args.eval_episodes} episodes")
    print("Reload it with:")
    print("    from sb3_trpo_ext import TRPO")
    print(f'    model = TRPO.load("{saved}")')


if __name__ == "__main__":
    main()
