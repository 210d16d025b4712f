"""sb3-trpo-ext: Trust Region Policy Optimization for Stable-Baselines3, single path and vine."""

from sb3_trpo_ext.trpo import TRPO

__version__ = "0.1.0"

__all__ = ["TRPO", "__version__"]
