"""The reducer over ``torch.distributed`` (:class:`sb3_trpo_ext.common.reduce.DistributedReducer`): two ranks (gloo on
127.0.0.1, two processes), each with one half of a fixed batch, take the natural-gradient step one process takes on
the whole batch (the data-parallel issue's "one update" semantics, at the level of the step). Every rendezvous binds
127.0.0.1 only and every process stops by itself within a bounded time."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from loopback import rank_env, run_ranks

TESTS = Path(__file__).resolve().parents[1]

WORKER = r"""
import datetime, json, sys
import torch as th
import torch.distributed as dist
from reduce_helpers import make_model, make_batch, half, step

rank, world, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
discrete = sys.argv[4] == "discrete"
th.set_num_threads(1)
model = make_model(discrete)
batch = make_batch(model)
if world > 1:
    from sb3_trpo_ext.common.reduce import DistributedReducer

    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    model._reducer = DistributedReducer()
    batch = half(batch, rank)
try:
    stats = step(model, batch)
finally:
    if world > 1:
        dist.destroy_process_group()
params = th.nn.utils.parameters_to_vector(model._actor_params).detach().tolist()
json.dump({"params": params, "stats": {k: v for k, v in stats.items() if not isinstance(v, float) or v == v}},
          open(out, "w"))
"""


def _reducer_only(env: dict[str, str]) -> dict[str, str]:
    """The worker builds its group itself (rank and size as arguments): without WORLD_SIZE in its environment the
    model does not join a job (sb3_trpo_ext.distributed), so this test stays at the level of the reducer."""
    return {key: value for key, value in env.items() if key not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}


def _run(tmp_path: Path, kind: str, world: int) -> list[dict]:
    outs = [tmp_path / f"{kind}-{world}-{rank}.json" for rank in range(world)]
    commands = [[sys.executable, "-c", WORKER, str(rank), str(world), str(out), kind] for rank, out in enumerate(outs)]
    codes, errors, _ = run_ranks(commands, lambda rank, port: _reducer_only(rank_env(rank, world, port)), 120)
    assert codes == [0] * world, errors
    return [json.loads(out.read_text()) for out in outs]


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_two_ranks_on_halves_take_the_one_process_step_on_the_whole_batch(tmp_path: Path, kind: str) -> None:
    (whole,) = _run(tmp_path, kind, 1)
    ranks = _run(tmp_path, kind, 2)
    assert whole["stats"]["is_line_search_success"] == 1.0  # a step was taken: the comparison means something
    for rank in ranks:
        # every rank decides alike (CG's iterations, the accepted candidate) and ends with the same parameters ...
        for key in ("cg_iterations", "line_search_steps", "is_line_search_success"):
            assert rank["stats"][key] == whole["stats"][key], key
        np.testing.assert_allclose(rank["params"], ranks[0]["params"], rtol=0, atol=0)
        # ... which are the one-process step's to float32 precision (the halves' means are summed in float64)
        np.testing.assert_allclose(rank["params"], whole["params"], rtol=1e-4, atol=1e-5)
