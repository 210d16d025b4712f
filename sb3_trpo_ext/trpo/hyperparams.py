"""TRPO's hyperparameters: the checks construction runs (and ``load(..., **kwargs)``, through ``_setup_model``)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer

from sb3_trpo_ext.common.fisher import FISHER_PRODUCTS
from sb3_trpo_ext.common.vine import VineBufferMixin

SAMPLING_SCHEMES = ("single_path", "vine")
#: What SB3 chooses when ``rollout_buffer_class`` is None (and saves with the model): vine upgrades these.
AUTOMATIC_BUFFERS = (None, RolloutBuffer, DictRolloutBuffer)


def is_int(value: Any) -> bool:
    """An integer (Python's or numpy's), not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A real number (Python's or numpy's), not a bool."""
    return isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)


def require(ok: bool, label: str, value: Any, allowed: str) -> None:
    """Raise ``ValueError("Invalid {label}={value!r}: must be {allowed}")`` unless ``ok``: every construction-time
    check of the family says what was given and what is allowed in this one form."""
    if not ok:
        raise ValueError(f"Invalid {label}={value!r}: must be {allowed}")


def validate_hyperparameters(model: Any) -> None:
    """Raise ``ValueError`` naming the first bad hyperparameter of ``model`` (a TRPO)."""

    def check(name: str, ok: bool, allowed: str) -> None:
        require(ok, name, getattr(model, name), allowed)

    check("n_steps", is_int(model.n_steps) and model.n_steps >= 1, "an integer >= 1")
    check("batch_size", is_int(model.batch_size) and model.batch_size >= 1, "an integer >= 1")
    check("gamma", is_real(model.gamma) and 0 <= model.gamma <= 1, "in [0, 1]")
    check("gae_lambda", is_real(model.gae_lambda) and 0 <= model.gae_lambda <= 1, "in [0, 1]")
    check("target_kl", is_real(model.target_kl) and 0 < model.target_kl < math.inf, "a finite number > 0")
    check("cg_max_steps", is_int(model.cg_max_steps) and model.cg_max_steps >= 1, "an integer >= 1")
    check("cg_damping", is_real(model.cg_damping) and 0 <= model.cg_damping < math.inf, "a finite number >= 0")
    check("cg_rtol", is_real(model.cg_rtol) and 0 <= model.cg_rtol < math.inf, "a finite number >= 0")
    check(
        "line_search_shrinking_factor",
        is_real(model.line_search_shrinking_factor) and 0 < model.line_search_shrinking_factor < 1,
        "in the open interval (0, 1)",
    )
    check(
        "line_search_max_iter",
        is_int(model.line_search_max_iter) and model.line_search_max_iter >= 1,
        "an integer >= 1",
    )
    check("n_critic_updates", is_int(model.n_critic_updates) and model.n_critic_updates >= 1, "an integer >= 1")
    check(
        "sub_sampling_factor", is_int(model.sub_sampling_factor) and model.sub_sampling_factor >= 1, "an integer >= 1"
    )
    check(
        "fisher",
        isinstance(model.fisher, str) and model.fisher in FISHER_PRODUCTS,
        f"one of {sorted(FISHER_PRODUCTS)}",
    )
    check(
        "sampling",
        isinstance(model.sampling, str) and model.sampling in SAMPLING_SCHEMES,
        f"one of {SAMPLING_SCHEMES}",
    )
    check("vine_n_states", is_int(model.vine_n_states) and model.vine_n_states >= 1, "an integer >= 1")
    check("vine_n_actions", is_int(model.vine_n_actions) and model.vine_n_actions >= 2, "an integer >= 2")
    check("vine_horizon", is_int(model.vine_horizon) and model.vine_horizon >= 1, "an integer >= 1")
    check("vine_bootstrap", isinstance(model.vine_bootstrap, (bool, np.bool_)), "True or False")
    check(
        "num_threads",
        model.num_threads is None
        or model.num_threads == "auto"
        or (is_int(model.num_threads) and model.num_threads >= 1),
        "'auto', None or an integer >= 1",
    )
    check("fast_collect", isinstance(model.fast_collect, (bool, np.bool_)), "True or False")
    check("accelerate", isinstance(model.accelerate, (bool, np.bool_)), "True or False")
    if model.sampling == "vine" and model.rollout_buffer_class not in AUTOMATIC_BUFFERS:
        check(
            "rollout_buffer_class",
            isinstance(model.rollout_buffer_class, type) and issubclass(model.rollout_buffer_class, VineBufferMixin),
            "a subclass of VineRolloutBuffer or DictVineRolloutBuffer with sampling='vine'",
        )
    check(
        "learning_rate",
        callable(model.learning_rate) or (is_real(model.learning_rate) and 0 <= model.learning_rate < math.inf),
        "a finite number >= 0 or a schedule",
    )
    n_envs = getattr(model, "n_envs", None)
    if n_envs and model.normalize_advantage:
        check(
            "n_steps",
            model.n_steps * n_envs > 1,
            f"such that n_steps * n_envs > 1 to normalize advantages (n_envs={n_envs})",
        )


def warn_about_minibatches(model: Any) -> None:
    """The critic's minibatches as PPO and sb3-contrib's TRPO report them: a ``batch_size`` larger than the
    rollout uses the whole rollout as one minibatch; one that does not divide it leaves a truncated one."""
    buffer_size = model.n_steps * model.n_envs
    if model.batch_size > buffer_size:
        warnings.warn(
            f"batch_size={model.batch_size} is larger than the rollout (n_steps * n_envs = {model.n_steps} * "
            f"{model.n_envs} = {buffer_size}): the critic's regression uses the whole rollout as one minibatch",
            stacklevel=3,
        )
    elif buffer_size % model.batch_size > 0:
        warnings.warn(
            f"You have specified a mini-batch size of {model.batch_size}, but because the `RolloutBuffer` is of "
            f"size `n_steps * n_envs = {buffer_size}`, after every {buffer_size // model.batch_size} untruncated "
            f"mini-batches, there will be a truncated mini-batch of size {buffer_size % model.batch_size}\n"
            "We recommend using a `batch_size` that is a factor of `n_steps * n_envs`.\n"
            f"Info: (n_steps={model.n_steps} and n_envs={model.n_envs})",
            stacklevel=3,
        )
