"""Conjugate gradient against a direct solve."""

import numpy as np
import pytest
import torch as th
from hypothesis import given, settings
from hypothesis import strategies as st

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


# ------------------------------------------------------------------------------- property-based checks
@st.composite
def spd_systems(draw, max_log10_condition):
    """A random SPD system ``(A, b, lambda_min, condition)`` in float64: random size, random eigenvectors, a
    random spectrum spanning exactly ``condition`` (log-uniform in between), a random overall scale."""
    n = draw(st.integers(1, 40), label="n")
    condition = 10 ** draw(st.floats(0, max_log10_condition), label="log10_condition")
    scale = 10 ** draw(st.floats(-3, 3), label="log10_scale")
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed"))
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eigenvalues = np.geomspace(1.0, condition, n) ** rng.uniform(0, 1, n)  # in [1, condition]
    eigenvalues[[0, -1]] = 1.0, condition
    a = scale * (q * eigenvalues) @ q.T
    a = (a + a.T) / 2  # exactly symmetric
    b = rng.standard_normal(n) * 10 ** rng.uniform(-3, 3)
    return th.from_numpy(a), th.from_numpy(b), scale * min(eigenvalues), condition


def _relative_error(x, exact):
    return float(th.linalg.vector_norm(x - exact) / th.linalg.vector_norm(exact))


@settings(max_examples=60, deadline=None)
@given(spd_systems(max_log10_condition=1))
def test_n_iterations_solve_an_n_dimensional_system(system):
    """Finite termination: in exact arithmetic CG solves an n x n SPD system in n iterations. In float64 that
    holds to ~1e-11 for well-conditioned systems (ill-conditioned ones lose it to rounding: see below)."""
    a, b, _, _ = system
    n = b.numel()
    calls = []

    def matvec(v):
        calls.append(v)
        return a @ v

    # rtol=1e-15, not 0: once converged (e.g. in one step for A = c I) further steps would shrink the residual
    # to an underflowing curvature p^T A p = 0, a legitimate non_positive_curvature stop
    result = conjugate_gradient(matvec, b, max_iter=n, rtol=1e-15)
    assert result.reason in (MAX_ITER, CONVERGED)
    assert result.iterations <= n and len(calls) == result.iterations
    assert _relative_error(result.x, th.linalg.solve(a, b)) <= 1e-8


@settings(max_examples=60, deadline=None)
@given(spd_systems(max_log10_condition=6), st.floats(-10, -3))
def test_converges_to_the_direct_solve_at_any_conditioning(system, log10_rtol):
    """Up to condition 1e6 CG reaches the requested relative residual (rounding delays it past n iterations:
    at most ~5n measured), the reported residual meets the tolerance and bounds the true one, and the error
    against ``torch.linalg.solve`` is within ``||r|| / lambda_min``."""
    a, b, lambda_min, condition = system
    n, rtol = b.numel(), 10**log10_rtol
    result = conjugate_gradient(lambda v: a @ v, b, max_iter=20 * n + 20, rtol=rtol)
    b_norm = float(th.linalg.vector_norm(b))
    assert result.reason == CONVERGED and result.converged
    assert result.residual_norm <= rtol * b_norm
    true_residual = float(th.linalg.vector_norm(b - a @ result.x))
    rounding = 1e-13 * condition * b_norm  # the true residual's float64 floor, about eps * ||A|| * ||x||
    assert true_residual <= rtol * b_norm + rounding
    exact = th.linalg.solve(a, b)
    assert float(th.linalg.vector_norm(result.x - exact)) <= (
        (rtol * b_norm + rounding) / lambda_min + 1e-12 * condition * float(th.linalg.vector_norm(exact))
    )


@pytest.mark.parametrize("max_iter", [1, 3, 30])
def test_a_x_is_the_product_of_the_returned_iterate(max_iter):
    """``a_x`` (what the step size x^T A x uses) equals ``A x`` of the returned x, without an extra product."""
    a, b = _spd(30, 5, condition=1e3)
    a_t, b_t = th.from_numpy(a), th.from_numpy(b)
    calls = []

    def matvec(v):
        calls.append(1)
        return a_t @ v

    result = conjugate_gradient(matvec, b_t, max_iter=max_iter, rtol=1e-12)
    assert len(calls) == result.iterations  # a_x costs no product of its own
    np.testing.assert_allclose(result.a_x.numpy(), a @ result.x.numpy(), rtol=1e-9, atol=1e-11)
    x = result.x.numpy()
    np.testing.assert_allclose(float(result.x @ result.a_x), x @ a @ x, rtol=1e-10)
    # after an early stop on non-positive curvature, a_x still belongs to the returned iterate
    indefinite = th.from_numpy(np.diag([1.0, 2.0, -1.0]))
    stopped = conjugate_gradient(lambda v: indefinite @ v, th.tensor([1.0, 1.0, 1.0], dtype=th.float64), max_iter=5)
    np.testing.assert_allclose(stopped.a_x.numpy(), (indefinite @ stopped.x).numpy(), atol=1e-12)
