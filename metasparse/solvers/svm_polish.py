"""Newton polish of a converged group-lasso SVM dual solve, down to rounding level.

Newton steps on the optimal face make the solution, and so the implicit gradient (sensitive near the
thresholds of block soft-thresholding), accurate far below ``tol``. On a small dual the polish also
finishes the solve, from 10 x ``tol`` (`first_order_tol`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from metasparse.solvers.fista import FistaResult
from metasparse.solvers.svm_dual import DualProblem
from metasparse.solvers.svm_objective import per_task, without_group_lasso
from metasparse.solvers.svm_working_set import WORKING_SET_MIN, first_order_solve

if TYPE_CHECKING:
    from metasparse.solvers.group_lasso_svm import GroupLassoSVM
    from metasparse.solvers.svm_features import SupportFeatures

__all__ = ["POLISH_FEATURE_MARGIN", "POLISH_FINISHES_FROM", "POLISH_FINISHES_TINY_FROM", "POLISH_GAP_FLOOR",
           "POLISH_SETTLED", "POLISH_STEPS", "REFINE_FACTOR", "REFINE_ROUNDS", "SMALL_DUAL", "TINY_DUAL",
           "first_order_tol", "polish", "polish_and_refine", "violators_to_polish"]

POLISH_STEPS = 8
"""Newton steps of one polish at most."""
POLISH_GAP_FLOOR = 1e-13
"""Relative gap where the polish stops."""
POLISH_FEATURE_MARGIN = 0.8
"""The polish sees the features whose norm is above this fraction of lambda1."""
POLISH_SETTLED = 1e-10
"""A polished task at most this far from optimal (relative gap) stands on the optimal face."""
REFINE_FACTOR = 1e-2
"""A task whose polish did not settle is solved this much tighter and polished again ..."""
REFINE_ROUNDS = 2
"""... at most this many times."""
SMALL_DUAL = 125
"""A dual of at most this many variables (n K; 5-way 5-shot has 125) is small: its Newton steps are cheap
next to the first-order iterations they replace ..."""
POLISH_FINISHES_FROM = 10.0
"""... so there the first-order solve stops at this many times ``tol`` and the polish finishes the solve. That
skips the last working-set round (10 x tol down to tol), and the polish settles from there in as many
steps (2 at 1 shot): 0.90-0.97x the time of a step at 1 shot and 0.94-1.08x at 5 shots (d = 64-16000,
steps alternated with those of the solve to tol, ad-hoc). On
larger duals (15 shots, d = 16000) the polish from 10 x tol missed the optimal face on 1 to 7 of 8 tasks,
which were then solved again: 1.16-1.22x."""
TINY_DUAL = 25
"""A dual of at most this many variables (5-way 1-shot) is tiny: its Newton systems have at most 20 unknowns
per task (one pivot per sample eliminated) ..."""
POLISH_FINISHES_TINY_FROM = 100.0
"""... so there the first-order solve stops at this many times ``tol`` (1e-2 at the default ``tol``, the
first working-set round's tolerance) and leaves the features that then violate their condition outside
its working set to the polish, whose working set holds them: one working-set round and one Newton step
more instead of a second round (10 FISTA iterations, a Newton step, a gap and a pass over the d features),
23-25 iterations instead of 32-33 at 1 shot. 0.80-1.01x the time of a step at d = 640-1600 and
0.85-1.05x at d = 16000 over three runs of steps alternated with those of the 10 x tol solve (ad hoc); at
5 shots (n K = 125) the same rule took 1.07-1.25x."""


def first_order_tol(solver: GroupLassoSVM, onehot: torch.Tensor) -> float | None:
    """The tolerance of the first-order solve: ``solver.tol``, or `POLISH_FINISHES_FROM` x that on a small
    dual (`SMALL_DUAL`) and `POLISH_FINISHES_TINY_FROM` x that on a tiny one (`TINY_DUAL`) with
    ``lambda1 > 0``, which the polish then finishes (`polish_and_refine`). (With
    ``lambda1 = 0`` FISTA already takes Newton steps where it stalls; a polish from 10 x tol took 1.7x the
    time of a step at 5 shots, d = 16000.)"""
    if not solver.newton or solver.tol is None or without_group_lasso(solver.lambda1):
        return solver.tol
    size = onehot.shape[1] * onehot.shape[2]
    if size <= TINY_DUAL:
        return POLISH_FINISHES_TINY_FROM * solver.tol
    return POLISH_FINISHES_FROM * solver.tol if size <= SMALL_DUAL else solver.tol


def violators_to_polish(solver: GroupLassoSVM, onehot: torch.Tensor) -> bool:
    """Whether the first-order solve leaves its last round's violators to the polish (a tiny dual,
    `TINY_DUAL`, whose solve the polish finishes)."""
    return (first_order_tol(solver, onehot) != solver.tol
            and onehot.shape[1] * onehot.shape[2] <= TINY_DUAL)


def polish_and_refine(solver: GroupLassoSVM, features: SupportFeatures, onehot: torch.Tensor,
                      result: FistaResult, full: DualProblem | None = None) -> FistaResult:
    """Newton-polish the converged tasks; where that does not settle, solve further and polish again.

    Newton steps from a point at ``tol`` settle on the optimal face (gap at rounding level) unless
    that point is too far from it: with features close to their threshold (many, for ReLU features
    at 15 shots) the face is often only found from a gap ~1e-6. Such tasks are solved further by
    FISTA to ``tol`` x 1e-2, then 1e-4, and polished again. ``result`` is the first-order solve to
    `first_order_tol`: where that is ``tol``, ``iterations`` and ``converged`` keep describing it; where
    the polish finishes the solve (a small dual), its Newton steps count as iterations, and so does the
    refinement of a task that only it took to ``tol``; a task has converged where its final gap is at
    most ``tol`` within ``max_iter`` iterations. ``full``: as in `first_order_solve`.
    """
    finishing = first_order_tol(solver, onehot) != solver.tol
    polished, steps = polish(solver, features, onehot, result, result.converged, full)
    reached = polished.residual <= solver.tol  # by the first polish
    spent = torch.zeros_like(steps)  # the refinement's iterations and steps
    tol = solver.tol
    for _ in range(REFINE_ROUNDS):
        unsettled = result.converged & (polished.residual > POLISH_SETTLED)
        if not bool(unsettled.any()):
            break
        tol *= REFINE_FACTOR
        refined = first_order_solve(solver, features, onehot, polished.solution, tol, full)
        refined, refine_steps = polish(solver, features, onehot, refined, unsettled, full)
        spent += torch.where(unsettled, refined.iterations + refine_steps, 0)
        better = unsettled & (refined.residual < polished.residual)
        polished = polished._replace(
            solution=torch.where(better[:, None, None], refined.solution, polished.solution),
            residual=torch.where(better, refined.residual, polished.residual),
            feature_norms=None if polished.feature_norms is None
            else torch.where(better[:, None], refined.feature_norms, polished.feature_norms))
    if not finishing:
        return polished._replace(iterations=result.iterations, converged=result.converged)
    # the solve at tol: the first polish's steps, and the refinement's where only it reached tol
    iterations = result.iterations + steps + torch.where(reached, 0, spent)
    converged = result.converged & (polished.residual <= solver.tol) & (iterations <= solver.max_iter)
    iterations = torch.where(converged, iterations, solver.max_iter)
    return polished._replace(iterations=iterations, converged=converged)


def polish(solver: GroupLassoSVM, features: SupportFeatures, onehot: torch.Tensor, result: FistaResult,
           tasks: torch.Tensor, full: DualProblem | None = None) -> tuple[FistaResult, torch.Tensor]:
    """Newton steps on ``tasks``, down to rounding level; kept where they lower the gap. Returns the
    result and the (B,) steps taken.

    Each step lowers D, but the primal objective at W(alpha), and so the gap, can rise on the way
    before the steps settle on the optimal face; a task whose final gap is not lower keeps its
    starting point. With ``lambda1 > 0`` the steps see only the features within a factor
    ``POLISH_FEATURE_MARGIN`` of their threshold; the final gap is that of the full problem.
    ``full``: the problem on all features, when the solve was on all of them (`first_order_solve`).
    """
    alpha, residual = result.solution, result.residual
    if full is None:
        scores = result.feature_norms
        scores = features.norms(onehot - alpha, solver.lambda1) if scores is None else scores
        size = int((scores > POLISH_FEATURE_MARGIN * per_task(solver.lambda1, scores)).sum(dim=-1).max())
        working, columns = features.select(scores, max(size, WORKING_SET_MIN))
        problem = DualProblem(solver, working, onehot)
    else:
        problem = full
    pending = tasks & (residual > POLISH_GAP_FLOOR)
    polished = residual  # the problem's gap at alpha (a task that does not move keeps its residual)
    steps = torch.zeros_like(result.iterations)
    for _ in range(POLISH_STEPS):
        if not bool(pending.any()):
            break
        moved = problem.newton_step(alpha, pending)
        pending &= (moved != alpha).flatten(1).any(dim=1)
        alpha = moved
        steps += pending
        gap = problem.gap(alpha)
        polished = torch.where(pending, gap, polished)
        pending &= gap > POLISH_GAP_FLOOR
    norms = None
    if full is None:  # the norms at the result, for its weights (`SupportFeatures.active_rows`)
        norms = features.norms(onehot - alpha, solver.lambda1)
        # where no feature outside the polish's columns is active, the full problem's gap is the polish's
        violating = (norms.scatter(1, columns, 0.0) > per_task(solver.lambda1, norms)).any(dim=-1)
        if bool(violating.any()):
            polished = torch.where(violating, features.gap(solver, onehot, alpha, norms), polished)
    better = polished < residual
    if norms is not None:
        norms = torch.where(better[:, None], norms, scores)
    return result._replace(solution=torch.where(better[:, None, None], alpha, result.solution),
                           residual=torch.where(better, polished, residual), feature_norms=norms), steps
