"""RL Baselines3 Zoo integration: our TRPO as a Zoo algorithm, beside PPO, TD3, DDPG and sb3-contrib's TRPO.

Command line (every Zoo flag passes through)::

    python -m sb3_trpo_ext.zoo train --algo trpo_ext --env Hopper-v5 -f logs/
    python -m sb3_trpo_ext.zoo enjoy --algo trpo_ext --env Hopper-v5 -f logs/
    python -m sb3_trpo_ext.zoo train --algo ppo --env Hopper-v5 -f logs/   # peers through the same command
    sb3-trpo-zoo train ...                                                  # console script, same thing

The Zoo builds its ``--algo`` choices when a script's parser is made and looks for
``rl_zoo3/hyperparams/{algo}.yml``, so this package registers our keys in the Zoo's tables first, points
``--conf-file`` at our hyperparameter file (unless the user gave one), then runs the Zoo's own script as
``__main__`` with :mod:`runpy`.

From Python: :func:`register` (idempotent) adds our keys to the Zoo's algorithm, sampler and converter
tables; :func:`load_zoo_model` loads a Zoo-trained model with its environment wrapped in the saved
``VecNormalize`` statistics.

Layout (as rl_zoo3's own modules):

- :mod:`~sb3_trpo_ext.zoo.registry`: our keys (``ZOO_ALGORITHMS``: key -> class, YAML file, sampler,
  converter) and :func:`register`;
- :mod:`~sb3_trpo_ext.zoo.hyperparams_opt`: the Optuna sampler and converter;
- :mod:`~sb3_trpo_ext.zoo.config`: hyperparameter file paths, ``train``'s checks, block selection;
- :mod:`~sb3_trpo_ext.zoo.hub_compat`: the Hugging Face hub fixes (each gated on the broken upstream);
- :mod:`~sb3_trpo_ext.zoo.loading`: :func:`load_zoo_model`, and the Zoo's scripts pointed at safe readers;
- :mod:`~sb3_trpo_ext.zoo.safe_config`: ``config.yml`` / ``args.yml``, ``normalize`` and wrapper names read
  without running code (checkpoints: :mod:`sb3_trpo_ext.safe_load`);
- :mod:`~sb3_trpo_ext.zoo.masking`, :mod:`~sb3_trpo_ext.zoo.vine_env`, :mod:`~sb3_trpo_ext.zoo.optimize`:
  what one Zoo command changes in the Zoo while it runs (masked evaluation and play, vine's subprocess wrapper,
  seeded Optuna trials);
- :mod:`~sb3_trpo_ext.zoo.torchrun`: ``train`` under ``torchrun`` (one data-parallel job, one run folder: each rank's
  command line rewritten before the Zoo parses it);
- :mod:`~sb3_trpo_ext.zoo.cli` (and ``__main__``): the command line.

Importing this package does not import rl_zoo3: each function imports it when called.
"""

from __future__ import annotations

from sb3_trpo_ext.zoo.cli import COMMANDS, PROG, main
from sb3_trpo_ext.zoo.config import ZooConfigError, find_earlier_version_block, hyperparams_path
from sb3_trpo_ext.zoo.hub_compat import PACKAGE_NAME
from sb3_trpo_ext.zoo.hyperparams_opt import convert_trpo_ext_params, sample_trpo_ext_params
from sb3_trpo_ext.zoo.loading import load_zoo_model
from sb3_trpo_ext.zoo.registry import ZOO_ALGORITHMS, ZooAlgorithm, register

__all__ = [
    "COMMANDS",
    "PACKAGE_NAME",
    "PROG",
    "ZOO_ALGORITHMS",
    "ZooAlgorithm",
    "ZooConfigError",
    "convert_trpo_ext_params",
    "find_earlier_version_block",
    "hyperparams_path",
    "load_zoo_model",
    "main",
    "register",
    "sample_trpo_ext_params",
]
