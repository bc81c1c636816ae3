"""First-order solve of the group-lasso SVM dual, on a working set of features where that pays.

With ``lambda1 > 0`` only the active features shape the dual, so it is solved on the features with the
largest correlations, in rounds that grow the set while a feature outside violates its optimality
condition (its norm of X_j^T (Y - alpha) above lambda1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from metasparse.solvers.fista import FistaResult, fista
from metasparse.solvers.prox import project_simplex
from metasparse.solvers.svm_dual import DualProblem
from metasparse.solvers.svm_face import feature_norms, select_features
from metasparse.solvers.svm_objective import gap_of

if TYPE_CHECKING:
    from metasparse.solvers.group_lasso_svm import GroupLassoSVM

__all__ = ["WORKING_SET_FIRST_TOL", "WORKING_SET_MIN", "first_order_solve", "fista_on"]

WORKING_SET_MIN = 64
"""Smallest working set of features; below it the full problem is solved directly."""
WORKING_SET_FIRST_TOL = 1e-2
"""Tolerance of the first round (early rounds only have to find the active features)."""


def first_order_solve(solver: GroupLassoSVM, support: torch.Tensor, onehot: torch.Tensor,
                      alpha: torch.Tensor, tol: float | None) -> FistaResult:
    """FISTA from ``alpha`` to ``tol``, on a working set of features where that pays."""
    if solver.lambda1 == 0 or tol is None or support.shape[-1] <= WORKING_SET_MIN:
        return fista_on(solver, DualProblem(solver, support, onehot), alpha, solver.max_iter, tol)
    return _fista_on_working_set(solver, support, onehot, alpha, tol)


def fista_on(solver: GroupLassoSVM, problem: DualProblem, init: torch.Tensor, max_iter: int,
             tol: float | None) -> FistaResult:
    """`fista` on ``problem`` from ``init``, with Newton steps where it stalls (``lambda1 = 0``)."""
    refine = problem.newton_step if solver.newton and solver.lambda1 == 0 else None
    return fista(init, problem.gradient, lambda alpha, _: project_simplex(alpha), 1 / problem.lipschitz,
                 problem.gap, max_iter, tol, solver.check_every, refine=refine)


def _fista_on_working_set(solver: GroupLassoSVM, support: torch.Tensor, onehot: torch.Tensor,
                          alpha: torch.Tensor, tol: float) -> FistaResult:
    """FISTA on the features with the largest scores, in rounds: each round starts from the last
    solution, doubles the working set while features outside it violate their optimality condition,
    and tightens its tolerance from ``WORKING_SET_FIRST_TOL`` by 10x down to ``tol``."""
    batch, _, d = support.shape
    iterations = torch.zeros(batch, dtype=torch.long, device=support.device)
    scores = feature_norms(support, onehot - alpha)
    size, round_tol = WORKING_SET_MIN, max(tol, WORKING_SET_FIRST_TOL)
    while True:
        working, columns = select_features(support, scores, size)
        result = fista_on(solver, DualProblem(solver, working, onehot), alpha,
                          max(1, solver.max_iter - int(iterations.max())), round_tol)
        iterations = iterations + result.iterations
        alpha = result.solution
        scores = feature_norms(support, onehot - alpha)
        outside = scores.scatter(1, columns, 0.0) > solver.lambda1
        if int(iterations.max()) >= solver.max_iter or (round_tol == tol and not bool(outside.any())):
            break
        if bool(outside.any()):
            size, round_tol = min(d, 2 * size), max(tol, round_tol / 10)
        else:
            round_tol = tol
    # without violators the full problem's gap equals the working set's (up to rounding)
    violating = outside.any(dim=-1)
    residual = torch.where(violating, gap_of(solver, support, onehot, alpha), result.residual)
    converged = result.converged & ~violating
    return FistaResult(alpha, torch.where(converged, iterations, solver.max_iter), converged, residual)
