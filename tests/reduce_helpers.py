"""A fixed batch and one natural-gradient step on it, shared by the reducer tests: the thread ranks of
tests/unit/test_reduce.py and the torch.distributed ranks of tests/integration/test_distributed_reducer.py (whose
worker processes import this module with ``tests/`` on their ``PYTHONPATH``)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.type_aliases import RolloutBufferSamples

from sb3_trpo_ext import TRPO
from sb3_trpo_ext.common.natural_gradient import natural_gradient_step


class SpacesOnly(gym.Env):
    """Only the spaces matter: the tests feed a fixed batch to the update directly."""

    def __init__(self, discrete: bool):
        self.observation_space = spaces.Box(-1, 1, (4,), np.float32)
        self.action_space = spaces.Discrete(3) if discrete else spaces.Box(-1, 1, (2,), np.float32)


def make_model(discrete: bool) -> TRPO:
    return TRPO(
        "MlpPolicy", SpacesOnly(discrete), policy_kwargs=dict(net_arch=[16]), target_kl=0.05, seed=0, device="cpu"
    )


def make_batch(model: TRPO, n: int = 64) -> RolloutBufferSamples:
    gen = th.Generator().manual_seed(1)
    obs = th.randn(n, 4, generator=gen)
    with th.no_grad():
        actions = model.policy.get_distribution(obs).get_actions()
        _, log_prob, _ = model.policy.evaluate_actions(obs, actions)
    if isinstance(model.action_space, spaces.Discrete):
        actions = actions.float().view(-1, 1)
    return RolloutBufferSamples(obs, actions, th.zeros(n), log_prob, th.randn(n, generator=gen), th.zeros(n))


def half(batch: RolloutBufferSamples, rank: int) -> RolloutBufferSamples:
    """Rank ``rank``'s half of ``batch`` (of two)."""
    n = len(batch.advantages) // 2
    return RolloutBufferSamples(*(t[rank * n : (rank + 1) * n] for t in batch))


def step(model: TRPO, batch: RolloutBufferSamples) -> dict:
    """The natural-gradient step ``train()`` takes on ``batch``'s single-path surrogate, with ``model``'s reducer."""
    states, surrogate, n_states = model._single_path_surrogate(batch)
    return natural_gradient_step(
        model._actor_params, states, surrogate, model._actor_functions(), model._trust_region(), n_states,
        model._reducer,
    )  # fmt: skip
