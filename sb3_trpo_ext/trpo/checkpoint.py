"""Save/load compatibility of TRPO checkpoints: ours of every version, and sb3-contrib's TRPO's.

What ``TRPO.load`` and ``TRPO.set_parameters`` need beyond SB3's own: the hyperparameters that make a file a TRPO
checkpoint, a clear error for a missing path, the warning that converts sb3-contrib's per-dimension ``target_kl``,
and the remapping of sb3-contrib's optimizer state (over all policy parameters) onto our critic-only optimizer.
Safe unpickling itself lives in :mod:`sb3_trpo_ext.safe_load`.
"""

from __future__ import annotations

import pathlib
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from torch import nn

#: Hyperparameters every TRPO checkpoint (ours or sb3-contrib's) holds.
TRPO_SAVED_KEYS = ("target_kl", "cg_max_steps", "cg_damping", "line_search_max_iter", "n_critic_updates")


def check_trpo_data(path: Any, data: dict[str, Any] | None) -> None:
    """Raise ``ValueError`` if ``data`` (a checkpoint's) was not saved by a TRPO; warn with the converted
    ``target_kl`` and ``cg_damping`` if it was saved by sb3-contrib's (no ``fisher`` entry) with more than one
    action dimension (with one, the per-dimension mean KL is the true KL: the values carry over unchanged)."""
    missing = [key for key in TRPO_SAVED_KEYS if key not in (data or {})]
    if missing:
        raise ValueError(f"{path!r} was not saved by a TRPO model: it lacks the hyperparameters {missing}")
    assert data is not None
    action_dim = kl_dimensions(data.get("action_space"))
    if "fisher" not in data and action_dim != 1:  # saved by sb3-contrib, and the conversion changes the values
        warnings.warn(
            f"{path!r} was saved by sb3-contrib's TRPO, whose target_kl={data['target_kl']} bounds the KL "
            f"averaged over {action_dim} action dimension(s). This TRPO bounds the true (summed) KL, so the "
            f"same trust region is target_kl={data['target_kl'] * action_dim:g}, and its step needs "
            f"cg_damping={data['cg_damping'] * action_dim:g} (our Fisher is that of the summed KL); the saved "
            "values are kept unless you pass target_kl=... and cg_damping=... to load().",
            stacklevel=3,
        )


def critic_optimizer_state(
    state: dict[str, Any], optimizer: th.optim.Optimizer, policy: nn.Module, critic_params: Sequence[nn.Parameter]
) -> dict[str, Any]:
    """A saved optimizer state for our critic-only ``optimizer``: as saved when it holds the critic's parameters;
    one over all of ``policy``'s parameters (sb3-contrib's layout) remapped onto the critic's; else a warning
    and ``optimizer``'s own state (it starts fresh)."""
    own = optimizer.state_dict()
    saved_ids = [i for group in state["param_groups"] for i in group["params"]]
    if len(saved_ids) == len(critic_params):
        return state
    all_params = list(policy.parameters())
    if len(saved_ids) != len(all_params):
        warnings.warn(
            "The saved optimizer state does not match the critic's parameters: the critic's optimizer starts fresh",
            stacklevel=3,
        )
        return own
    critic_ids = {id(p) for p in critic_params}
    positions = [i for i, p in enumerate(all_params) if id(p) in critic_ids]
    remapped_state = {
        new: state["state"][saved_ids[old]] for new, old in enumerate(positions) if saved_ids[old] in state["state"]
    }
    group = {**state["param_groups"][0], "params": list(range(len(positions)))}
    for implementation in ("fused", "foreach"):  # keep our optimizer's kernel choice
        if implementation in own["param_groups"][0]:
            group[implementation] = own["param_groups"][0][implementation]
    return {"state": remapped_state, "param_groups": [group]}


def check_exists(path: pathlib.Path) -> None:
    """SB3 retries a missing path with ``.zip`` appended and reports only that variant: name what was given."""
    with_suffix = path.with_name(path.name + ".zip")
    if not path.exists() and not with_suffix.exists():
        raise FileNotFoundError(f"No such file: {str(path)!r} (also tried {str(with_suffix)!r})")


def kl_dimensions(action_space: spaces.Space | None) -> int:
    """Factor between the true KL and SB3's per-dimension mean KL (diagonal Gaussian, Bernoulli)."""
    if isinstance(action_space, (spaces.Box, spaces.MultiBinary)):
        return int(np.prod(action_space.shape))
    return 1
