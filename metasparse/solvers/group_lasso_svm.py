r"""Group-lasso multiclass SVM: the batched native solver (driver) with implicit differentiation.

The problem, its dual and the duality gap are in `metasparse.solvers.svm_objective`. The dual has
$nK$ variables whatever $d$ is; it is solved by FISTA with projections onto the simplex and projected
Newton steps on the faces of the simplices, on a working set of features
(`metasparse.solvers.svm_working_set`), stopped on the relative duality gap and polished by Newton
steps on the optimal face (`metasparse.solvers.svm_polish`); float32 features are read at full width in
float32 only (`metasparse.solvers.svm_features`). Gradients come from
the implicit function theorem on the dual's optimality conditions restricted to that face
(`metasparse.solvers.svm_implicit`), with a Hessian that involves only the active features
(`metasparse.solvers.svm_face`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from metasparse.solvers.diagnostics import SolverInfo
from metasparse.solvers.fista import FistaResult
from metasparse.solvers.svm_dual import DualProblem
from metasparse.solvers.svm_features import SupportFeatures
from metasparse.solvers.svm_implicit import dual_residual_with_implicit_gradient
from metasparse.solvers.svm_objective import (
    NonzeroRows,
    check_svm_parameters,
    dual_from_weights,
    feature_columns,
    per_task,
    relative_gap,
    svm_dual_objective,
    svm_dual_point,
    svm_lambda1_max,
    svm_primal_objective,
    svm_primal_weights,
    svm_relative_gap,
    svm_zero_solution,
    weights_from_dual_residual,
)
from metasparse.solvers.svm_polish import (
    POLISH_SETTLED,
    first_order_tol,
    polish_and_refine,
    violators_to_polish,
)
from metasparse.solvers.svm_working_set import first_order_solve, solved_on_all_features

__all__ = [
    "GroupLassoSVM",
    "check_svm_parameters",
    "relative_gap",
    "svm_dual_objective",
    "svm_dual_point",
    "svm_lambda1_max",
    "svm_primal_objective",
    "svm_primal_weights",
    "svm_relative_gap",
]


@dataclass(eq=False)
class GroupLassoSVM:
    """Batched native solver of the group-lasso multiclass SVM, differentiable in the features.

    Attributes:
        lambda1: Group-lasso weight (0: MetaOptNet's SVM).
        lambda2: Ridge weight (``1 / C`` in MetaOptNet).
        dual_reg: Smoothing of the hinge; must be > 0 here (it makes the dual strongly convex).
        max_iter: Iteration cap (FISTA iterations, and Newton steps where they replace them).
        tol: Stop a task when its relative duality gap is at most ``tol``; ``None`` runs exactly
            ``max_iter`` iterations (MetaOptNet's early stopping) and reports ``converged=False``.
        check_every: Iterations between two duality-gap evaluations.
        newton: Use projected Newton steps on the current face of the simplices, kept where they
            lower the dual objective: with ``lambda1 = 0`` whenever FISTA stalls (its gap fell by less
            than a fifth over ``check_every`` iterations); with ``lambda1 > 0`` from a gap of 1e-2 in the
            first round of the working set and of 0.3 in the later ones, which start near the optimal
            face (`metasparse.solvers.svm_working_set`); and
            as a final polish of every converged solve. The dual's conditioning is that of the kernel,
            bad for large backbone features (ReLU, d = 16000, 15 shots: five eigenvalues of the Gram
            matrix, one per class mean, sit 20-60x above the rest): FISTA alone needed 850 iterations
            at 0.3 lambda1_max and missed ``max_iter=1000`` at 0.1 on 5 of 8 tasks; with the Newton
            steps every task converges in 190-410 (`tests/test_solver_convergence.py`). The polish
            makes the solution, and so the implicit gradient, accurate far below ``tol``, with and
            without a gradient. Each Newton step counts as one iteration.

    Example:
        >>> solver = GroupLassoSVM(lambda1=0.1, lambda2=10.0, dual_reg=1.0)
        >>> X = torch.randn(2, 10, 8); Y = torch.eye(5).repeat(2, 2, 1)
        >>> W, info = solver.solve(X, Y)
        >>> W.shape, bool(info.converged.all())
        (torch.Size([2, 8, 5]), True)
    """

    lambda1: float = 0.1
    lambda2: float = 10.0
    dual_reg: float = 1.0
    max_iter: int = 1000
    tol: float | None = 1e-4
    check_every: int = 10
    newton: bool = True

    def __post_init__(self) -> None:
        check_svm_parameters(self.lambda1, self.lambda2, self.dual_reg, native=True)
        if not (isinstance(self.max_iter, int) and self.max_iter >= 1):
            raise ValueError(f"max_iter must be a positive int, got {self.max_iter!r}")
        if self.tol is not None and not 0 < self.tol < float("inf"):
            raise ValueError(f"tol must be finite and > 0, or None (fixed iterations), got {self.tol!r}")

    def for_tasks(self, lambda1: torch.Tensor) -> GroupLassoSVM:
        """This solver with one group-lasso weight per task, for a batch of ``len(lambda1)`` tasks.

        One batched solve of tasks whose ``lambda1`` differ (e.g. a fraction of each task's
        ``svm_lambda1_max``, as ``GroupLassoSVMHead(lambda1_ratio=...)`` sets it), instead of one solve
        per task. No gradient flows through ``lambda1``.

        Args:
            lambda1: (B,) finite values >= 0.

        Example:
            >>> X = torch.randn(2, 10, 8); Y = torch.eye(5).repeat(2, 2, 1)
            >>> per_task = GroupLassoSVM().for_tasks(torch.tensor([0.0, 1e3]))
            >>> W, info = per_task.solve(X, Y)
            >>> bool((W[0] != 0).any()), bool((W[1] == 0).all())
            (True, True)
        """
        lambda1 = torch.as_tensor(lambda1).detach()
        if lambda1.dim() != 1 or not bool((torch.isfinite(lambda1) & (lambda1 >= 0)).all()):
            raise ValueError(f"lambda1 per task must be a (B,) tensor of finite values >= 0, got {lambda1!r}")
        solver = copy.copy(self)
        solver.lambda1 = lambda1
        return solver

    def _of_tasks(self, tasks: torch.Tensor) -> GroupLassoSVM:
        """This solver for the sub-batch ``tasks`` (indices): per-task weights follow their tasks."""
        return self if not isinstance(self.lambda1, torch.Tensor) else self.for_tasks(self.lambda1[tasks])

    def solve_dual(self, support: torch.Tensor, onehot: torch.Tensor,
                   init: torch.Tensor | None = None) -> tuple[torch.Tensor, SolverInfo]:
        """Dual variables (B, n, K) in the dtype of ``support``, without gradient, and diagnostics.

        With ``lambda1 > 0`` (and a tolerance), the dual is solved on a working set of features that
        grows until no feature outside it violates its optimality condition: only the active features
        shape the problem, and both the cost and the conditioning of an iteration follow them, not d.
        A converged solve ends with Newton steps on the optimal face, which make the solution (and so
        the implicit gradient, sensitive near the thresholds of BST) accurate far below ``tol``. The dual
        is always solved in float64: it has only nK variables, the products with the d features are
        few (the Gram matrix once, or the working set), and in float32 the gradient of a dual whose
        kernel has entries ~1e4 (ReLU features, d = 16000) is too noisy to get below a gap of ~1e-2. On a
        working set only its columns are converted to float64; the norms that screen all d features
        are computed in the features' dtype, exact near ``lambda1`` (`SupportFeatures`).
        Tasks whose solution is known in closed form (``lambda1 >= lambda1_max``, which includes all-zero
        features, and one class) are answered at once with 0 iterations.

        Args:
            support: (B, n, d) support features.
            onehot: (B, n, K) one-hot labels.
            init: Optional (B, n, K) warm start; uniform ``1/K`` by default, as in the paper's code.
        """
        alpha, info, _, _ = self._solve_dual(self._features(support), onehot.double(), init)
        info.residual, info.sparsity = info.residual.to(support.dtype), info.sparsity.to(support.dtype)
        return alpha.to(support.dtype), info

    def _features(self, support: torch.Tensor) -> SupportFeatures:
        """``support`` without gradient, as the solve reads it: in its own dtype on a working set; in
        float64 (one copy, shared by the solve, the polish and the diagnostics) on all features."""
        support = support.detach()
        on_all_features = solved_on_all_features(self, support, self.tol)
        return SupportFeatures(support.double() if on_all_features else support)

    def _solve_dual(self, features: SupportFeatures, y: torch.Tensor, init: torch.Tensor | None
                    ) -> tuple[torch.Tensor, SolverInfo, torch.Tensor, torch.Tensor | None]:
        """As `solve_dual` on ``features`` (`_features`) and float64 ``y``, with the solution and
        diagnostics in float64, and the weights W(alpha) in float64 on their nonzero rows
        (`SupportFeatures.active_rows`: the rows and their columns, ``None`` for all d)."""
        # inference mode: at the small sizes of few-shot episodes a solve is thousands of tiny operations,
        # and it skips their autograd bookkeeping (10-15% of a solve); the results are cloned out of it
        with torch.inference_mode():
            batch, device = y.shape[0], y.device
            zero = svm_zero_solution(y, self.lambda2, self.dual_reg)
            norms = features.norms(y - zero, self.lambda1)
            closed_form = (norms <= per_task(self.lambda1, norms)).all(dim=-1)
            alpha = zero.clone()
            iterations = torch.zeros(batch, dtype=torch.long, device=device)
            converged = closed_form & (self.tol is not None)
            residual = torch.zeros(batch, dtype=y.dtype, device=device)
            if bool(closed_form.any()):
                tasks = (~closed_form).nonzero()[:, 0]
                x_open, y_open, solver = features[tasks], y[tasks], self._of_tasks(tasks)
            else:  # every task: no copy of the features
                tasks, x_open, y_open, solver = slice(None), features, y, self
            if not bool(closed_form.all()):
                start = (torch.full_like(y_open, 1.0 / y.shape[-1]) if init is None
                         else init.detach().double()[tasks])
                result = solver._iterative_solve(x_open, y_open, start, norms[tasks])
                alpha[tasks], iterations[tasks] = result.solution, result.iterations
                converged[tasks], residual[tasks] = result.converged, result.residual
                if result.feature_norms is None:
                    norms = None
                else:  # the norms at the solution: no pass over all features for its weights
                    norms[tasks] = result.feature_norms
            rows, columns = features.active_rows(self, y, alpha, norms)
            active = rows.abs().amax(dim=-1).gt_(0).sum(dim=-1)
        alpha, rows, columns, iterations, converged, residual, active = (
            None if tensor is None else tensor.clone()
            for tensor in (alpha, rows, columns, iterations, converged, residual, active))
        sparsity = 1 - active.to(y.dtype) / features.shape[-1]
        trusted = converged & (closed_form | (residual <= POLISH_SETTLED) | (not self.newton))
        info = SolverInfo(iterations, converged, residual, active, sparsity, self.tol, self.max_iter,
                          "native", gradient_trusted=trusted)
        return alpha, info, rows, columns

    def _iterative_solve(self, features: SupportFeatures, onehot: torch.Tensor, alpha: torch.Tensor,
                         scores: torch.Tensor) -> FistaResult:
        """First-order solve to ``tol`` (on a working set where that pays, the first one picked by
        ``scores``), then the Newton polish; on a small dual, to 10 x tol (100 x tol on a tiny one, whose
        last working-set round leaves its violators to the polish), the polish finishing it
        (`metasparse.solvers.svm_polish.first_order_tol`)."""
        # solved on all features: one problem, so one Gram matrix, for the solve and the polish (float64
        # features, unless these tasks' lambda1 are all 0 while the batch's were not)
        full = (DualProblem(self, features.support.double(), onehot)
                if solved_on_all_features(self, features, self.tol) else None)
        tol = first_order_tol(self, onehot)
        result = first_order_solve(self, features, onehot, alpha, tol, full, scores,
                                   violators_to_polish(self, onehot))
        if self.newton and self.tol is not None:
            result = polish_and_refine(self, features, onehot, result, full)
        return result

    def _rows_with_implicit_gradient(self, support: torch.Tensor, onehot: torch.Tensor, exact: torch.Tensor,
                                     columns: torch.Tensor | None) -> torch.Tensor:
        """The rows of W(alpha*) at ``columns`` (B, width, K), all d rows where ``columns`` is None, in the
        dtype of ``support``, differentiable in it (implicit gradient through alpha*, at the float64
        ``exact``). With ``lambda1 > 0`` only the columns of the features active at the float64 solution
        are read: the other features get no gradient and zero rows, so the forward and backward passes
        over all d features reduce to one gather and one scatter."""
        active = support if columns is None else feature_columns(support, columns)
        dual_residual = dual_residual_with_implicit_gradient(active, onehot, exact, self)
        return weights_from_dual_residual(active, dual_residual, self.lambda1, self.lambda2)

    def solve(self, support: torch.Tensor, onehot: torch.Tensor,
              init: torch.Tensor | None = None) -> tuple[torch.Tensor, SolverInfo]:
        """Primal weights (B, d, K) in the dtype of ``support``, differentiable in it, and diagnostics.

        The same solution with and without a gradient. ``info.residual`` is the relative gap of the
        returned weights (in their dtype) against the float64 dual solution, and ``info.converged`` holds
        only where that meets ``tol``: a float32 answer reported converged is converged in float32.
        """
        weights, info = self.solve_nonzero_rows(support, onehot, init)
        return weights.dense(), info

    def solve_nonzero_rows(self, support: torch.Tensor, onehot: torch.Tensor,
                           init: torch.Tensor | None = None) -> tuple[NonzeroRows, SolverInfo]:
        """As `solve`, with the weights held as their nonzero rows (`NonzeroRows`): with lambda1 > 0 at
        backbone size, tens of rows of d, and ``NonzeroRows.scores`` scores a query through them, with no
        (B, d, K) weights to fill, search for their nonzero rows and differentiate through."""
        features, y = self._features(support), onehot.double()
        exact, info, exact_rows, columns = self._solve_dual(features, y, init)
        rows = self._rows_with_implicit_gradient(support, onehot, exact, columns)
        if support.dtype != torch.float64:
            with torch.no_grad():
                primal = features.primal_objective(self, rows.detach().double(), y, columns)
                dual = dual_from_weights(exact_rows, exact, y, self.lambda2, self.dual_reg)
                info.residual = torch.maximum(info.residual, relative_gap(primal, dual, y))
                if self.tol is not None:
                    info.converged &= info.residual <= self.tol
                    info.gradient_trusted &= info.converged
        info.residual = info.residual.to(support.dtype)
        info.sparsity = info.sparsity.to(support.dtype)
        return NonzeroRows(rows, columns, support.shape[-1]), info
