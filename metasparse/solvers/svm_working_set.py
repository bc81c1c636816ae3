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
from metasparse.solvers.svm_objective import per_task, without_group_lasso

if TYPE_CHECKING:
    from metasparse.solvers.group_lasso_svm import GroupLassoSVM
    from metasparse.solvers.svm_features import SupportFeatures

__all__ = ["NEWTON_FROM", "NEWTON_FROM_WARM", "NEWTON_STEPS", "WORKING_SET_FIRST_TOL", "WORKING_SET_GROWTH",
           "WORKING_SET_MIN", "first_order_solve", "fista_on", "newton_on", "solved_on_all_features"]

WORKING_SET_MIN = 64
"""Smallest working set of features; below it the full problem is solved directly."""
WORKING_SET_FIRST_TOL = 1e-2
"""Tolerance of the first round (early rounds only have to find the active features)."""
WORKING_SET_GROWTH = 1.5
"""A new round's working set holds at least this many times the most active or violating features."""
NEWTON_FROM = 1e-2
"""With lambda1 > 0, FISTA runs to this relative gap and Newton steps on the face take over ..."""
NEWTON_STEPS = 20
"""... at most this many in a row (then FISTA again)."""
NEWTON_FROM_WARM = 0.3
"""In the rounds after the first, which start from the last round's solution, Newton steps take over from
this gap: there the features just added put the gap back near 1, but the face is nearly found, and
FISTA, slowed by the kernel's conditioning, needed about 220 iterations back to 1e-2 at 0.1 x
lambda1_max with 15 shots; Newton steps from 0.3 reach that round's 1e-3 in 9-17."""


def solved_on_all_features(solver: GroupLassoSVM, support: torch.Tensor | SupportFeatures,
                           tol: float | None) -> bool:
    """Whether the dual is solved on all of ``support``'s features, not on a working set."""
    return without_group_lasso(solver.lambda1) or tol is None or support.shape[-1] <= WORKING_SET_MIN


def first_order_solve(solver: GroupLassoSVM, features: SupportFeatures, onehot: torch.Tensor,
                      alpha: torch.Tensor, tol: float | None, full: DualProblem | None = None,
                      scores: torch.Tensor | None = None, violators_to_polish: bool = False) -> FistaResult:
    """FISTA from ``alpha`` to ``tol``, on a working set of ``features`` where that pays; ``full`` is the
    problem on all of them when the caller has built it (its Gram matrix is then reused).
    ``scores`` (B, d) pick the first working set (default: the feature norms at ``alpha``); a
    working-set solve returns the feature norms at its solution (``FistaResult.feature_norms``).
    ``violators_to_polish``: the round at ``tol`` is the last even where features outside its working set
    violate their condition; its tasks count as converged, their residual is the full problem's gap, and
    the Newton polish, whose working set holds those features, finishes them (a tiny dual,
    `metasparse.solvers.svm_polish.TINY_DUAL`)."""
    if solved_on_all_features(solver, features, tol):
        problem = full if full is not None else DualProblem(solver, features.support.double(), onehot)
        return fista_on(solver, problem, alpha, solver.max_iter, tol)
    return _fista_on_working_set(solver, features, onehot, alpha, tol, scores, violators_to_polish)


def fista_on(solver: GroupLassoSVM, problem: DualProblem, init: torch.Tensor, max_iter: int,
             tol: float | None, newton_from: float = NEWTON_FROM) -> FistaResult:
    """`fista` on ``problem`` from ``init``, with Newton steps where it stalls (``lambda1 = 0``); with
    ``lambda1 > 0``, FISTA to ``newton_from``, then Newton steps (`newton_on`), then FISTA again for the
    tasks they left above ``tol``."""
    refine = problem.newton_step if solver.newton and problem.quadratic else None
    loose = tol if tol is None or refine is not None or not solver.newton else max(tol, newton_from)
    result = fista(init, problem.gradient, lambda alpha, _: project_simplex(alpha), 1 / problem.lipschitz,
                   problem.gap, max_iter, loose, solver.check_every, refine, problem.gradient_step)
    if loose == tol:
        return result
    result = newton_on(problem, result, max_iter, tol)
    if bool(result.converged.all()) or int(result.iterations.max()) >= max_iter:
        return result
    rest = fista(result.solution, problem.gradient, lambda alpha, _: project_simplex(alpha),
                 1 / problem.lipschitz, problem.gap, max_iter - int(result.iterations.max()), tol,
                 solver.check_every, gradient_step=problem.gradient_step)
    done = result.converged
    return FistaResult(torch.where(done[:, None, None], result.solution, rest.solution),
                       torch.where(done, result.iterations, result.iterations + rest.iterations),
                       done | rest.converged, torch.where(done, result.residual, rest.residual))


def newton_on(problem: DualProblem, result: FistaResult, max_iter: int, tol: float) -> FistaResult:
    """Newton steps (`DualProblem.newton_step`, one iteration each) from ``result`` down to ``tol``, at
    most ``NEWTON_STEPS``; a task stops when its step is rejected (it would raise the dual objective)."""
    alpha, residual = result.solution, result.residual
    iterations = result.iterations.clone()
    pending = residual > tol
    for _ in range(NEWTON_STEPS):
        pending &= iterations < max_iter
        if not bool(pending.any()):
            break
        moved = problem.newton_step(alpha, pending)
        pending &= (moved != alpha).flatten(1).any(dim=1)
        alpha = moved
        residual = torch.where(pending, problem.gap(alpha), residual)
        iterations = iterations + pending
        pending &= residual > tol
    return FistaResult(alpha, iterations, residual <= tol, residual)


def _fista_on_working_set(solver: GroupLassoSVM, features: SupportFeatures, onehot: torch.Tensor,
                          alpha: torch.Tensor, tol: float, scores: torch.Tensor | None,
                          violators_to_polish: bool) -> FistaResult:
    """FISTA on the features with the largest scores, in rounds: each round starts from the last
    solution, doubles the working set while features outside it violate their optimality condition,
    and tightens its tolerance from ``WORKING_SET_FIRST_TOL`` by 10x down to ``tol``; Newton steps take
    over from ``NEWTON_FROM`` in the first round and from ``NEWTON_FROM_WARM`` in the others. A round
    without violators keeps its working set, and its problem, for the next: that set still holds every
    feature above its threshold. ``violators_to_polish``: as in `first_order_solve`."""
    batch, _, d = features.shape
    iterations = torch.zeros(batch, dtype=torch.long, device=onehot.device)
    scores = features.norms(onehot - alpha, solver.lambda1) if scores is None else scores
    threshold = per_task(solver.lambda1, scores)
    size, round_tol, newton_from = WORKING_SET_MIN, max(tol, WORKING_SET_FIRST_TOL), NEWTON_FROM
    problem = None
    while True:
        if problem is None:
            working, columns = features.select(scores, size)
            problem = DualProblem(solver, working, onehot)
        result = fista_on(solver, problem, alpha, max(1, solver.max_iter - int(iterations.max())), round_tol,
                          newton_from)
        iterations = iterations + result.iterations
        alpha, newton_from = result.solution, NEWTON_FROM_WARM
        scores = features.norms(onehot - alpha, solver.lambda1)
        outside = scores.scatter(1, columns, 0.0) > threshold
        last = round_tol == tol and (violators_to_polish or not bool(outside.any()))
        if int(iterations.max()) >= solver.max_iter or last:
            break
        if bool(outside.any()):
            # at least doubled, and enough for every active or violating feature with room to spare: a
            # task far from its optimum (hundreds of violators) then needs no extra rounds
            needed = int(WORKING_SET_GROWTH * int((scores > threshold).sum(dim=-1).max()))
            size, round_tol, problem = min(d, max(2 * size, needed)), max(tol, round_tol / 10), None
        else:
            round_tol = tol
    # without violators the full problem's gap equals the working set's (up to rounding)
    violating = outside.any(dim=-1)
    residual = result.residual
    if bool(violating.any()):
        residual = torch.where(violating, features.gap(solver, onehot, alpha, scores), residual)
    converged = result.converged & (~violating | violators_to_polish)
    iterations = torch.where(converged, iterations, solver.max_iter)
    return FistaResult(alpha, iterations, converged, residual, scores)
