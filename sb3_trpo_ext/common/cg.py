"""Conjugate gradient for the natural-gradient step (paper Appendix C).

Solves ``A x = b`` for a symmetric positive-definite ``A`` that is only available as a
matrix-vector product (here the damped Fisher-vector product). Like SciPy's iterative
solvers it starts from ``x = 0``, stops on a *relative* residual and reports what it did.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch as th

#: Reasons :func:`conjugate_gradient` can stop for.
CONVERGED = "converged"
MAX_ITER = "max_iter"
NON_POSITIVE_CURVATURE = "non_positive_curvature"


@dataclass(frozen=True)
class CGResult:
    """What :func:`conjugate_gradient` computed.

    :param x: the approximate solution
    :param iterations: number of matrix-vector products spent on iterations
    :param residual_norm: ``||b - A x||`` of the returned ``x`` (tracked by the recurrence)
    :param reason: ``"converged"``, ``"max_iter"`` or ``"non_positive_curvature"``
    :param a_x: ``A x``, accumulated from the iterations' products (``x = sum alpha_i p_i`` so
        ``A x = sum alpha_i A p_i``): the step size ``x^T A x`` needs no further product
    """

    x: th.Tensor
    iterations: int
    residual_norm: float
    reason: str
    a_x: th.Tensor

    @property
    def converged(self) -> bool:
        return self.reason == CONVERGED


def conjugate_gradient(
    matvec: Callable[[th.Tensor], th.Tensor],
    b: th.Tensor,
    *,
    max_iter: int,
    rtol: float = 1e-10,
    atol: float = 0.0,
) -> CGResult:
    """Solve ``A x = b`` by conjugate gradients, starting from ``x = 0``.

    :param matvec: function returning ``A v`` for a vector ``v``
    :param b: right-hand side (1-D tensor)
    :param max_iter: maximum number of iterations (matrix-vector products)
    :param rtol: stop when ``||r|| <= max(rtol * ||b||, atol)``
    :param atol: absolute residual tolerance
    :return: a :class:`CGResult`. If a direction with ``p^T A p <= 0`` is met (``A`` not positive
        definite along it), the last iterate is returned with reason ``"non_positive_curvature"``.
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    x = th.zeros_like(b)
    a_x = th.zeros_like(b)
    r = b.clone()  # residual b - A x for x = 0
    p = r.clone()
    r_dot_r = th.dot(r, r)
    threshold = max(rtol * float(th.linalg.vector_norm(b)), atol)
    if float(r_dot_r.sqrt()) <= threshold:
        return CGResult(x, 0, float(r_dot_r.sqrt()), CONVERGED, a_x)

    for iteration in range(1, max_iter + 1):
        a_p = matvec(p)
        curvature = th.dot(p, a_p)
        if not curvature > 0:  # also catches NaN
            return CGResult(x, iteration, float(r_dot_r.sqrt()), NON_POSITIVE_CURVATURE, a_x)
        alpha = r_dot_r / curvature
        x = x + alpha * p
        a_x = a_x + alpha * a_p
        r = r - alpha * a_p
        new_r_dot_r = th.dot(r, r)
        residual_norm = float(new_r_dot_r.sqrt())
        if residual_norm <= threshold:
            return CGResult(x, iteration, residual_norm, CONVERGED, a_x)
        p = r + (new_r_dot_r / r_dot_r) * p
        r_dot_r = new_r_dot_r
    return CGResult(x, max_iter, residual_norm, MAX_ITER, a_x)
