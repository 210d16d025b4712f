"""Recurrent (LSTM) TRPO on sb3-contrib's recurrent policies and rollout buffer."""

from sb3_trpo_ext.recurrent.policies import CnnLstmPolicy, MlpLstmPolicy, MultiInputLstmPolicy
from sb3_trpo_ext.recurrent.recurrent_trpo import RecurrentTRPO

__all__ = ["CnnLstmPolicy", "MlpLstmPolicy", "MultiInputLstmPolicy", "RecurrentTRPO"]
