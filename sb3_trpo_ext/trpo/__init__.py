from sb3_trpo_ext.trpo.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_trpo_ext.trpo.trpo import TRPO

__all__ = ["TRPO", "CnnPolicy", "MlpPolicy", "MultiInputPolicy"]
