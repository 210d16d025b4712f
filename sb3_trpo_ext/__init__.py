"""sb3-trpo-ext: Trust Region Policy Optimization for Stable-Baselines3, single path and vine."""

from typing import TYPE_CHECKING

from sb3_trpo_ext.safe_load import UnsafeCheckpointError, add_safe_globals
from sb3_trpo_ext.trpo import TRPO

if TYPE_CHECKING:  # the lazy exports below, as type checkers should see them
    from sb3_trpo_ext.maskable import MaskableTRPO
    from sb3_trpo_ext.recurrent import RecurrentTRPO

__version__ = "0.1.0"

__all__ = ["MaskableTRPO", "RecurrentTRPO", "TRPO", "UnsafeCheckpointError", "__version__", "add_safe_globals"]


def __getattr__(name: str) -> object:
    """Lazy exports whose modules need an optional dependency (``MaskableTRPO``, ``RecurrentTRPO``: sb3-contrib)."""
    if name == "MaskableTRPO":
        from sb3_trpo_ext.maskable import MaskableTRPO

        return MaskableTRPO
    if name == "RecurrentTRPO":
        from sb3_trpo_ext.recurrent import RecurrentTRPO

        return RecurrentTRPO
    raise AttributeError(f"module 'sb3_trpo_ext' has no attribute {name!r}")
