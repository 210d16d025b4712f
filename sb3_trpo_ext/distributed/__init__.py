"""Data-parallel TRPO on ``torch.distributed`` (launched by ``torchrun``; docs/distributed.md).

The same training script runs in one process or as N ranks: under ``torchrun`` the algorithm joins the job when
it is built (:func:`~sb3_trpo_ext.distributed.ranks.join`), each rank collects from its own environments, and
the update's means are taken over every rank's states (:class:`~sb3_trpo_ext.common.reduce.DistributedReducer`).
The pieces, one home each: :mod:`.ranks` (who this process is, seeds, the collectives), :mod:`.learn` (the loop
and its per-rollout meeting), :mod:`.callbacks` (global steps, rank 0's callbacks), :mod:`.monitor` (the fault
bound), :mod:`.vecnormalize` (merging ``VecNormalize`` statistics).
"""
