"""Action-masked TRPO: :class:`MaskableTRPO` (sb3-contrib's MaskablePPO conventions, TRPO's natural-gradient step)."""

from sb3_trpo_ext.maskable.policies import MaskableCnnPolicy, MaskableMlpPolicy, MaskableMultiInputPolicy
from sb3_trpo_ext.maskable.trpo_mask import MaskableTRPO
from sb3_trpo_ext.maskable.wrappers import TaxiActionMasker

__all__ = ["MaskableCnnPolicy", "MaskableMlpPolicy", "MaskableMultiInputPolicy", "MaskableTRPO", "TaxiActionMasker"]
