"""Benchmark sweeps through the RL Zoo, and their report (console script ``sb3-trpo-bench``).

::

    sb3-trpo-bench run --algos trpo_ext trpo_vine trpo ppo td3 ddpg --envs Hopper-v5 --seeds 0 1 2 -f bench/
    sb3-trpo-bench run ... --dask tcp://scheduler:8786        # on a Dask distributed cluster (extra "dask")
    sb3-trpo-bench report bench/ -o docs/bench/

Layout:

- :mod:`~sb3_trpo_ext.benchmark.sweep`: run specifications, the output folder, resumption, the local pool and
  the Dask engine;
- :mod:`~sb3_trpo_ext.benchmark.zoo_train`: one run's process (the Zoo's ``train`` through our command, with a
  callback recording evaluations, checkpoints and progress);
- :mod:`~sb3_trpo_ext.benchmark.progress`: the live display;
- :mod:`~sb3_trpo_ext.benchmark.report`: tidy CSV, IQM tables with bootstrap confidence intervals, plots;
- :mod:`~sb3_trpo_ext.benchmark.cli` (and ``__main__``): the command line.

Importing this package imports neither rl_zoo3 nor dask.
"""

from sb3_trpo_ext.benchmark.cli import main
from sb3_trpo_ext.benchmark.sweep import RunSpec, SweepConfig, SweepError, execute_run, prepare_sweep

__all__ = ["RunSpec", "SweepConfig", "SweepError", "execute_run", "main", "prepare_sweep"]
