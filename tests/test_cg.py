"""Conjugate gradient against a direct solve."""

import numpy as np
import pytest
import torch as th

from sb3_trpo_ext.common.cg import CONVERGED, MAX_ITER, NON_POSITIVE_CURVATURE, conjugate_gradient


def _spd(n, seed, condition=10.0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eigenvalues = np.geomspace(1.0, condition, n)
    return (q * eigenvalues) @ q.T, rng.standard_normal(n)


@pytest.mark.parametrize("seed", range(5))
def test_matches_direct_solve(seed):
    a, b = _spd(20, seed)
    a_t, b_t = th.from_numpy(a), th.from_numpy(b)
    result = conjugate_gradient(lambda v: a_t @ v, b_t, max_iter=100, rtol=1e-12)
    np.testing.assert_allclose(result.x.numpy(), np.linalg.solve(a, b), rtol=1e-9, atol=1e-10)
    assert result.reason == CONVERGED and result.converged
    assert result.iterations <= 20 + 1  # exact in n steps in exact arithmetic
    true_residual = np.linalg.norm(b - a @ result.x.numpy())
    assert result.residual_norm <= 1e-12 * np.linalg.norm(b) * 10
    assert true_residual <= 1e-10


def test_first_iterate_is_the_cauchy_step_from_zero():
    """Starting from x=0, one CG step is the exact line minimiser along b: x = (b.b / b.Ab) b."""
    a, b = _spd(6, 7)
    a_t, b_t = th.from_numpy(a), th.from_numpy(b)
    result = conjugate_gradient(lambda v: a_t @ v, b_t, max_iter=1, rtol=0.0)
    expected = (b @ b) / (b @ a @ b) * b
    np.testing.assert_allclose(result.x.numpy(), expected, rtol=1e-12)
    assert result.iterations == 1 and result.reason == MAX_ITER


def test_rtol_stops_early_with_residual_below_tolerance():
    a, b = _spd(50, 3, condition=1e4)
    a_t, b_t = th.from_numpy(a), th.from_numpy(b)
    loose = conjugate_gradient(lambda v: a_t @ v, b_t, max_iter=500, rtol=1e-2)
    tight = conjugate_gradient(lambda v: a_t @ v, b_t, max_iter=500, rtol=1e-10)
    assert loose.converged and tight.converged
    assert loose.iterations < tight.iterations
    for result, rtol in ((loose, 1e-2), (tight, 1e-10)):
        assert result.residual_norm <= rtol * np.linalg.norm(b)
        # the recurrence's residual tracks the true one
        np.testing.assert_allclose(
            np.linalg.norm(b - a @ result.x.numpy()), result.residual_norm, rtol=1e-3, atol=1e-12
        )


def test_max_iter_reports_iterations_and_residual():
    a, b = _spd(30, 4, condition=1e3)
    a_t, b_t = th.from_numpy(a), th.from_numpy(b)
    result = conjugate_gradient(lambda v: a_t @ v, b_t, max_iter=3, rtol=1e-12)
    assert result.reason == MAX_ITER and result.iterations == 3
    np.testing.assert_allclose(np.linalg.norm(b - a @ result.x.numpy()), result.residual_norm, rtol=1e-6)


def test_zero_rhs_returns_zero_without_products():
    calls = []
    result = conjugate_gradient(lambda v: calls.append(v) or v, th.zeros(4), max_iter=5)
    assert result.iterations == 0 and not calls and result.converged
    assert th.equal(result.x, th.zeros(4))


def test_non_positive_curvature_returns_last_iterate():
    # indefinite: the first direction b has b^T A b < 0
    a = th.diag(th.tensor([-1.0, -2.0, 3.0], dtype=th.float64))
    b = th.tensor([1.0, 1.0, 0.1], dtype=th.float64)
    result = conjugate_gradient(lambda v: a @ v, b, max_iter=10)
    assert result.reason == NON_POSITIVE_CURVATURE and not result.converged
    assert th.equal(result.x, th.zeros(3))  # no step was taken before the bad direction
    assert result.residual_norm == pytest.approx(float(th.linalg.vector_norm(b)))


def test_non_positive_curvature_after_progress():
    # positive along b, negative on a later conjugate direction: returns the iterate reached so far
    a = th.diag(th.tensor([4.0, -1.0], dtype=th.float64))
    b = th.tensor([1.0, 0.3], dtype=th.float64)
    result = conjugate_gradient(lambda v: a @ v, b, max_iter=10)
    assert result.reason == NON_POSITIVE_CURVATURE and result.iterations == 2
    expected_first = (b @ b) / (b @ a @ b) * b
    th.testing.assert_close(result.x, expected_first)


def test_rejects_bad_max_iter():
    with pytest.raises(ValueError, match="max_iter"):
        conjugate_gradient(lambda v: v, th.ones(2), max_iter=0)
