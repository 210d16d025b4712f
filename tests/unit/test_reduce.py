"""The reducer seam of the natural-gradient step (:mod:`sb3_trpo_ext.common.reduce`): with a reducer that averages
over two "ranks" (threads, each with half of a batch), the step equals the one-process step on the whole batch.
This is what data-parallel TRPO builds on: every mean of the update passes through the reducer."""

from __future__ import annotations

import threading

import pytest
import torch as th
from reduce_helpers import half, make_batch, make_model, step
from torch.nn.utils import parameters_to_vector

from sb3_trpo_ext.common.reduce import LOCAL


class ThreadReducer:
    """A reducer over ``world`` threads: each call gathers every thread's value behind a barrier."""

    def __init__(self, rank: int, slots: list, barrier: threading.Barrier):
        self.rank, self.slots, self.barrier = rank, slots, barrier

    def _gather(self, value):
        self.slots[self.rank] = value
        self.barrier.wait()
        gathered = list(self.slots)
        self.barrier.wait()  # every thread has read before the next call writes
        return gathered

    def mean(self, local_mean, count):
        gathered = self._gather((local_mean.detach().double() * count, count))
        return (sum(v for v, _ in gathered) / sum(n for _, n in gathered)).to(local_mean.dtype)

    def moments(self, values):
        v = values.detach().double()
        gathered = self._gather((v.numel(), v.sum(), v.square().sum()))
        n = sum(g[0] for g in gathered)
        total, squares = sum(g[1] for g in gathered), sum(g[2] for g in gathered)
        mean = total / n
        std = ((squares - n * mean**2) / (n - 1)).sqrt()
        return mean.to(values.dtype), std.to(values.dtype)


@pytest.mark.parametrize("discrete", [False, True])
def test_two_ranks_on_halves_equal_one_process_on_the_whole_batch(discrete: bool) -> None:
    whole = make_model(discrete)
    assert whole._reducer is LOCAL
    batch = make_batch(whole)
    before = parameters_to_vector(whole._actor_params).detach().clone()
    expected = step(whole, batch)

    ranks = [make_model(discrete) for _ in range(2)]
    slots: list = [None, None]
    barrier = threading.Barrier(2, timeout=60)
    results: list = [None, None]

    def run(rank: int) -> None:
        ranks[rank]._reducer = ThreadReducer(rank, slots, barrier)
        results[rank] = step(ranks[rank], half(batch, rank))

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all(result is not None for result in results), "a rank failed (see the thread's exception above)"

    assert expected["is_line_search_success"] == 1.0  # a step was taken: the comparison means something
    after = parameters_to_vector(whole._actor_params).detach()
    assert not th.equal(after, before)
    for rank, result in enumerate(results):
        # the same decisions on every rank (same CG iterations, same accepted candidate) ...
        for key in ("cg_iterations", "line_search_steps", "is_line_search_success", "cg_stop_reason"):
            assert result[key] == expected[key], (rank, key)
        # ... and the same step, to float32 precision: the halves' means are summed in another order
        th.testing.assert_close(parameters_to_vector(ranks[rank]._actor_params).detach(), after, rtol=1e-4, atol=1e-5)
        assert result["kl"] == pytest.approx(expected["kl"], rel=1e-4)
