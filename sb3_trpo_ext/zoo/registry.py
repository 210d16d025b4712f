"""Our Zoo keys and their registration in the Zoo's tables.

Adding a key is one entry in :data:`ZOO_ALGORITHMS` (plus its YAML file in ``hyperparams/``, which the
wheel ships by the ``force-include`` of that folder).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sb3_contrib import MaskablePPO
from stable_baselines3.common.base_class import BaseAlgorithm

from sb3_trpo_ext.maskable import MaskableTRPO
from sb3_trpo_ext.recurrent import RecurrentTRPO
from sb3_trpo_ext.trpo import TRPO
from sb3_trpo_ext.zoo.hyperparams_opt import (
    convert_ppo_mask_params,
    convert_trpo_ext_params,
    convert_trpo_lstm_params,
    convert_trpo_vine_params,
    sample_ppo_mask_params,
    sample_trpo_ext_params,
    sample_trpo_lstm_params,
    sample_trpo_vine_params,
)

__all__ = ["ZOO_ALGORITHMS", "VineTRPO", "ZooAlgorithm", "register"]


class VineTRPO(TRPO):
    """:class:`sb3_trpo_ext.TRPO` with ``sampling="vine"`` as its default: the Zoo key ``trpo_vine``, so that a
    ``--conf-file`` or a ``-params`` line without ``sampling`` still trains vine. Its models are TRPO models
    (``TRPO.load`` reads them)."""

    def __init__(self, policy: Any, env: Any, sampling: str = "vine", **kwargs: Any):
        super().__init__(policy, env, sampling=sampling, **kwargs)


@dataclass(frozen=True)
class ZooAlgorithm:
    """What the Zoo needs to know about one of our keys."""

    algo_class: type[BaseAlgorithm]
    #: file name of its hyperparameters in our ``hyperparams/`` folder
    hyperparams_file: str
    sampler: Callable[..., dict[str, Any]] = sample_trpo_ext_params
    converter: Callable[[dict[str, Any]], dict[str, Any]] = convert_trpo_ext_params
    #: evaluates with action masks (sb3-contrib's ``MaskableEvalCallback``, see :mod:`sb3_trpo_ext.zoo.masking`)
    masked: bool = False


#: Our Zoo keys -> class, YAML file name, Optuna sampler and converter. Everything else (``--algo`` choices,
#: ``hyperparams_path``, the default ``--conf-file``, the YAML key checks, the hub model card) reads this table,
#: so a key is one line here, e.g. ``"trpo_vine": ZooAlgorithm(TRPO, "trpo_vine.yml"),``.
ZOO_ALGORITHMS: dict[str, ZooAlgorithm] = {
    "trpo_ext": ZooAlgorithm(TRPO, "trpo_ext.yml"),
    "trpo_vine": ZooAlgorithm(VineTRPO, "trpo_vine.yml", sample_trpo_vine_params, convert_trpo_vine_params),
    "trpo_mask": ZooAlgorithm(MaskableTRPO, "trpo_mask.yml", masked=True),
    "trpo_lstm": ZooAlgorithm(RecurrentTRPO, "trpo_lstm.yml", sample_trpo_lstm_params, convert_trpo_lstm_params),
    # sb3-contrib's MaskablePPO, which the Zoo lacks: the masked comparison runs through the same command
    "ppo_mask": ZooAlgorithm(MaskablePPO, "ppo_mask.yml", sample_ppo_mask_params, convert_ppo_mask_params, masked=True),
}


def register() -> None:
    """Add our keys to the Zoo's algorithm (``rl_zoo3.ALGOS``), sampler and converter tables.

    Idempotent; the Zoo's own keys (sb3-contrib's ``trpo`` included) are left alone.
    """
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER
    from rl_zoo3.utils import ALGOS

    for key, entry in ZOO_ALGORITHMS.items():
        ALGOS[key] = entry.algo_class
        HYPERPARAMS_SAMPLER[key] = entry.sampler
        # rl_zoo3's table is unannotated: mypy infers its values as requiring the parameter name `sampled_params`
        HYPERPARAMS_CONVERTER[key] = entry.converter  # type: ignore[assignment]  # rl_zoo3's inferred table type
