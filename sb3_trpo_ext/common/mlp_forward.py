"""Old home of the hand-derived MLP's torch forward pass: now :mod:`sb3_trpo_ext.common.mlp` (``PlainMlp`` is
:class:`~sb3_trpo_ext.common.mlp.TorchMlp`). Kept so that imports of these names keep working."""

from sb3_trpo_ext.common.mlp import TorchMlp as PlainMlp
from sb3_trpo_ext.common.mlp import tanh_

__all__ = ["PlainMlp", "tanh_"]
