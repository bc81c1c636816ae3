r"""Group-lasso multiclass SVM: batched dual solver with implicit differentiation.

For support features $X \in \mathbb{R}^{n \times d}$ and one-hot labels $Y$, the primal is

$$
\min_W \sum_i \ell_\varepsilon(W^\top x_i; y_i) + \frac{\lambda_2}{2}\|W\|_F^2
+ \lambda_1 \sum_j \|W_{j,:}\|_2, \qquad \varepsilon = \mathrm{dual\_reg} / \lambda_2,
$$

with $\ell_\varepsilon(s; y) = \max_{a \in \Delta_K} \langle a - e_y, s\rangle + 1 - a_y -
\frac{\varepsilon}{2}\|a - e_y\|^2$ (the Crammer-Singer hinge when $\varepsilon = 0$). Its dual is

$$
\min_{\alpha_i \in \Delta_K} D(\alpha) = \frac{1}{2\lambda_2}\|\mathrm{BST}(X^\top(Y - \alpha),
\lambda_1)\|_F^2 + \frac{\mathrm{dual\_reg}}{2\lambda_2}\|\alpha - Y\|_F^2 + \langle Y, \alpha\rangle,
$$

$W = \mathrm{BST}(X^\top(Y - \alpha^\star), \lambda_1) / \lambda_2$ and $P^\star = n - D^\star$.
The dual has $nK$ variables whatever $d$ is; it is solved by FISTA with projections onto
the simplex and stopped on the relative duality gap. Gradients come from the implicit function
theorem on the dual's optimality conditions restricted to the face of the simplices that holds
$\alpha^\star$, with a Hessian that involves only the active features (the non-zero rows of W).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch.autograd.function import once_differentiable

from metasparse.solvers.diagnostics import SolverInfo, row_sparsity
from metasparse.solvers.fista import FistaResult, fista
from metasparse.solvers.linear_solve import solve_spd_with_group_sums
from metasparse.solvers.prox import block_soft_threshold, project_simplex

__all__ = [
    "GroupLassoSVM",
    "check_svm_parameters",
    "svm_dual_objective",
    "svm_dual_point",
    "svm_lambda1_max",
    "svm_primal_objective",
    "svm_primal_weights",
    "svm_relative_gap",
]


# Smallest working set of features (below it the full problem is solved directly) and the tolerance of
# its first round; the fractions of the Newton step tried (far from the optimum the full step
# overshoots); the Newton steps of the polish, the gap where it stops, and the features it sees (those
# whose norm is above this fraction of lambda1).
WORKING_SET_MIN = 64
WORKING_SET_FIRST_TOL = 1e-2
NEWTON_STEP_FRACTIONS = (1.0, 0.5, 0.25, 1 / 8, 1 / 32, 1 / 128)
POLISH_STEPS = 8
POLISH_GAP_FLOOR = 1e-13
POLISH_FEATURE_MARGIN = 0.8
# A polished task at most this far from optimal (relative gap) stands on the optimal face; one further
# away is solved REFINE_FACTOR times tighter and polished again, at most REFINE_ROUNDS times.
POLISH_SETTLED = 1e-10
REFINE_FACTOR = 1e-2
REFINE_ROUNDS = 2


def svm_primal_weights(support: torch.Tensor, onehot: torch.Tensor, alpha: torch.Tensor,
                       lambda1: float, lambda2: float) -> torch.Tensor:
    r"""Primal weights from dual variables: $W = \mathrm{BST}(X^\top(Y-\alpha), \lambda_1)/\lambda_2$.

    Args:
        support: (B, n, d) support features.
        onehot: (B, n, K) one-hot labels.
        alpha: (B, n, K) dual variables, rows on the simplex.
        lambda1: Group-lasso weight.
        lambda2: Ridge weight.

    Returns:
        (B, d, K) weights, differentiable in all tensor inputs.
    """
    return block_soft_threshold(support.transpose(1, 2) @ (onehot - alpha), lambda1) / lambda2


def svm_dual_point(scores: torch.Tensor, onehot: torch.Tensor, eps: float) -> torch.Tensor:
    r"""The maximiser $a^\star$ in $\ell_\varepsilon(s; y)$, row by row.

    With $c = s + 1 - e_y$: $a^\star = \Pi_\Delta(e_y + c / \varepsilon)$ for
    $\varepsilon > 0$, and the one-hot of $\arg\max_k c_k$ for $\varepsilon = 0$.
    At the optimum it equals $\alpha^\star$, so it turns any W into a dual point.
    """
    margins = scores + 1 - onehot
    if eps > 0:
        return project_simplex(onehot + margins / eps)
    return torch.nn.functional.one_hot(margins.argmax(dim=-1), onehot.shape[-1]).to(scores.dtype)


def _smoothed_hinge(scores: torch.Tensor, onehot: torch.Tensor, eps: float) -> torch.Tensor:
    """(B,) sum over samples of the smoothed Crammer-Singer hinge of ``scores`` (B, n, K)."""
    margins = scores + 1 - onehot
    a = svm_dual_point(scores, onehot, eps)
    true_scores = (scores * onehot).sum(dim=-1)
    loss = (a * margins).sum(dim=-1) - true_scores - eps / 2 * ((a - onehot) ** 2).sum(dim=-1)
    return loss.sum(dim=-1)


def _penalty(weights: torch.Tensor, lambda1: float, lambda2: float) -> torch.Tensor:
    ridge = lambda2 / 2 * (weights**2).sum(dim=(1, 2))
    return ridge + lambda1 * torch.linalg.vector_norm(weights, dim=-1).sum(dim=-1)


def svm_primal_objective(weights: torch.Tensor, support: torch.Tensor, onehot: torch.Tensor,
                         lambda1: float, lambda2: float, dual_reg: float) -> torch.Tensor:
    """(B,) primal objective P(W) of the group-lasso SVM (module docstring)."""
    scores = support @ weights
    return _smoothed_hinge(scores, onehot, dual_reg / lambda2) + _penalty(weights, lambda1, lambda2)


def svm_dual_objective(alpha: torch.Tensor, support: torch.Tensor, onehot: torch.Tensor,
                       lambda1: float, lambda2: float, dual_reg: float) -> torch.Tensor:
    """(B,) dual objective D(alpha) of the group-lasso SVM (module docstring)."""
    weights = svm_primal_weights(support, onehot, alpha, lambda1, lambda2)
    return _dual_from_weights(weights, alpha, onehot, lambda2, dual_reg)


def _dual_from_weights(weights: torch.Tensor, alpha: torch.Tensor, onehot: torch.Tensor, lambda2: float,
                       dual_reg: float) -> torch.Tensor:
    """D(alpha) given ``weights = W(alpha)``: ||BST(.)||^2 = lambda2^2 ||W||^2."""
    return _dual_from_kernel(lambda2**2 * (weights**2).sum(dim=(1, 2)), alpha, onehot, lambda2, dual_reg)


def _dual_from_kernel(kernel: torch.Tensor, alpha: torch.Tensor, onehot: torch.Tensor, lambda2: float,
                      dual_reg: float) -> torch.Tensor:
    """D(alpha) given ``kernel = ||BST(X^T (Y - alpha), lambda1)||^2``; sums over the samples (dim 1) and
    classes (last dim) of ``alpha`` and ``onehot``, so stacked points (B, n, F, K) give (B, F)."""
    return (kernel / (2 * lambda2) + dual_reg / (2 * lambda2) * ((alpha - onehot) ** 2).sum(dim=(1, -1))
            + (onehot * alpha).sum(dim=(1, -1)))


def svm_relative_gap(weights: torch.Tensor, alpha: torch.Tensor, support: torch.Tensor,
                     onehot: torch.Tensor, lambda1: float, lambda2: float, dual_reg: float) -> torch.Tensor:
    """(B,) relative duality gap ``(P(W) - (n - D(alpha))) / P(W)``, zero exactly at the optimum."""
    primal = svm_primal_objective(weights, support, onehot, lambda1, lambda2, dual_reg)
    dual = svm_dual_objective(alpha, support, onehot, lambda1, lambda2, dual_reg)
    return _relative_gap(primal, dual, onehot)


def _relative_gap(primal: torch.Tensor, dual: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """(P - (n - D)) / P: strong duality reads P* = n - D*."""
    return (primal + dual - onehot.shape[1]) / primal


def svm_lambda1_max(support: torch.Tensor, onehot: torch.Tensor, lambda2: float,
                    dual_reg: float) -> torch.Tensor:
    r"""(B,) smallest $\lambda_1$ at which the group-lasso SVM's weights are all zero, no gradient.

    With $W = 0$ the dual reduces to $\frac{\mathrm{dual\_reg}}{2\lambda_2}\|\alpha - Y\|^2 +
    \langle Y, \alpha\rangle$, minimised by $\alpha^0_i = \Pi_\Delta((1 - \lambda_2 /
    \mathrm{dual\_reg})\, e_{y_i})$, and $W = 0$ is optimal iff every row of
    $X^\top(Y - \alpha^0)$ has norm at most $\lambda_1$. Requires ``dual_reg > 0``.

    Example:
        >>> X = torch.randn(1, 10, 8); Y = torch.eye(5).repeat(1, 2, 1)
        >>> lam = svm_lambda1_max(X, Y, lambda2=10.0, dual_reg=1.0)
        >>> bool((GroupLassoSVM(float(lam) * 1.01, 10.0, 1.0).solve(X, Y)[0] == 0).all())
        True
    """
    with torch.no_grad():
        alpha = project_simplex((1 - lambda2 / dual_reg) * onehot)
        correlation = support.transpose(1, 2) @ (onehot - alpha)
        return torch.linalg.vector_norm(correlation, dim=-1).amax(dim=-1)


def check_svm_parameters(lambda1: float, lambda2: float, dual_reg: float, native: bool) -> None:
    """Raise ``ValueError`` naming the parameter unless ``lambda1 >= 0``, ``lambda2 > 0`` and
    ``dual_reg > 0`` (native solver) or ``dual_reg >= 0`` (cvxpylayers)."""
    if not lambda1 >= 0:
        raise ValueError(f"lambda1 must be >= 0, got {lambda1!r}")
    if not lambda2 > 0:
        raise ValueError(f"lambda2 must be > 0, got {lambda2!r}")
    if native and not dual_reg > 0:
        raise ValueError(f"dual_reg must be > 0 for the native solver, got {dual_reg!r}; "
                         "use solver='cvxpylayers' for the unsmoothed hinge (dual_reg=0)")
    if not dual_reg >= 0:
        raise ValueError(f"dual_reg must be >= 0, got {dual_reg!r}")


@dataclass(eq=False)
class GroupLassoSVM:
    """Batched native solver of the group-lasso multiclass SVM, differentiable in the features.

    Attributes:
        lambda1: Group-lasso weight (0: MetaOptNet's SVM).
        lambda2: Ridge weight (``1 / C`` in MetaOptNet).
        dual_reg: Smoothing of the hinge; must be > 0 here (it makes the dual strongly convex).
        max_iter: FISTA iteration cap.
        tol: Stop a task when its relative duality gap is at most ``tol``; ``None`` runs exactly
            ``max_iter`` iterations (MetaOptNet's early stopping) and reports ``converged=False``.
        check_every: Iterations between two duality-gap evaluations.
        newton: Use projected Newton steps on the current face of the simplices, kept where they
            lower the dual objective: with ``lambda1 = 0`` whenever FISTA stalls (its gap fell by less
            than a fifth over ``check_every`` iterations), and as a final polish of every converged solve
            that feeds a gradient (`solve` with support that requires grad, and `solve_dual`). With
            ``lambda1 = 0`` the dual is a QP whose conditioning is that of the kernel,
            bad for large backbone features (ReLU, d = 16000, 15 shots: there FISTA alone did not
            reach tol=1e-4 in 60 iterations, with Newton steps it did in 40-50; see the tests), and a
            Newton step on the right face solves it; the polish makes the solution, and so the implicit
            gradient, accurate far below ``tol``.

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
        if self.tol is not None and not self.tol > 0:
            raise ValueError(f"tol must be > 0 or None (fixed iterations), got {self.tol!r}")

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
        kernel has entries ~1e4 (ReLU features, d = 16000) is too noisy to get below a gap of ~1e-2.

        Args:
            support: (B, n, d) support features.
            onehot: (B, n, K) one-hot labels.
            init: Optional (B, n, K) warm start; uniform ``1/K`` by default, as in the paper's code.
        """
        alpha, info = self._solve_dual(support, onehot, init)
        return alpha.to(support.dtype), info

    def _solve_dual(self, support: torch.Tensor, onehot: torch.Tensor, init: torch.Tensor | None,
                    polish: bool = True) -> tuple[torch.Tensor, SolverInfo]:
        """As `solve_dual`, with the solution in float64; ``polish=False`` skips the Newton polish."""
        dtype = support.dtype
        with torch.no_grad():
            support, onehot = support.detach().double(), onehot.double()
            uniform = torch.full_like(onehot, 1.0 / onehot.shape[-1])
            alpha = uniform if init is None else init.detach().double()
            result = self._first_order(support, onehot, alpha, self.tol)
            if polish and self.newton and self.tol is not None:
                result = self._polish_and_refine(support, onehot, result)
            weights = svm_primal_weights(support, onehot, result.solution, self.lambda1, self.lambda2)
            active, sparsity = row_sparsity(weights)
        info = SolverInfo(result.iterations, result.converged, result.residual.to(dtype), active,
                          sparsity.to(dtype), self.tol, self.max_iter, "native")
        return result.solution, info

    def _first_order(self, support: torch.Tensor, onehot: torch.Tensor, alpha: torch.Tensor,
                     tol: float | None) -> FistaResult:
        """FISTA from ``alpha`` to ``tol``, on a working set of features where that pays."""
        if self.lambda1 == 0 or tol is None or support.shape[-1] <= WORKING_SET_MIN:
            return self._fista(_DualProblem(self, support, onehot), alpha, self.max_iter, tol)
        return self._fista_on_working_set(support, onehot, alpha, tol)

    def _polish_and_refine(self, support: torch.Tensor, onehot: torch.Tensor,
                           result: FistaResult) -> FistaResult:
        """Newton-polish the converged tasks; where that does not settle, solve further and polish again.

        Newton steps from a point at ``tol`` settle on the optimal face (gap at rounding level) unless
        that point is too far from it: with features close to their threshold (many, for ReLU features
        at 15 shots) the face is often only found from a gap ~1e-6. Such tasks are solved further by
        FISTA to ``tol`` x 1e-2, then 1e-4, and polished again; ``iterations`` and ``converged`` keep
        describing the solve at ``tol``.
        """
        polished = self._polish(support, onehot, result, result.converged)
        tol = self.tol
        for _ in range(REFINE_ROUNDS):
            unsettled = result.converged & (polished.residual > POLISH_SETTLED)
            if not bool(unsettled.any()):
                break
            tol *= REFINE_FACTOR
            refined = self._first_order(support, onehot, polished.solution, tol)
            refined = self._polish(support, onehot, refined, unsettled)
            better = unsettled & (refined.residual < polished.residual)
            polished = polished._replace(
                solution=torch.where(better[:, None, None], refined.solution, polished.solution),
                residual=torch.where(better, refined.residual, polished.residual))
        return polished

    def _polish(self, support: torch.Tensor, onehot: torch.Tensor, result: FistaResult,
                tasks: torch.Tensor) -> FistaResult:
        """Newton steps on ``tasks``, down to rounding level; kept where they lower the gap.

        Each step lowers D, but the primal objective at W(alpha), and so the gap, can rise on the way
        before the steps settle on the optimal face; a task whose final gap is not lower keeps its
        starting point. With ``lambda1 > 0`` the steps see only the features within a factor
        ``POLISH_FEATURE_MARGIN`` of their threshold; the final gap is that of the full problem.
        """
        alpha, residual = result.solution, result.residual
        features = support
        if self.lambda1 > 0 and support.shape[-1] > WORKING_SET_MIN:
            scores = _feature_norms(support, onehot, alpha)
            size = int((scores > POLISH_FEATURE_MARGIN * self.lambda1).sum(dim=-1).max())
            features, _ = _working_set(support, scores, max(size, WORKING_SET_MIN))
        problem = _DualProblem(self, features, onehot)
        pending = tasks & (residual > POLISH_GAP_FLOOR)
        for _ in range(POLISH_STEPS):
            if not bool(pending.any()):
                break
            moved = problem.newton_step(alpha, pending)
            pending &= (moved != alpha).flatten(1).any(dim=1)
            alpha = moved
            pending &= problem.gap(alpha) > POLISH_GAP_FLOOR
        polished = _gap(self, support, onehot, alpha)
        better = polished < residual
        return result._replace(solution=torch.where(better[:, None, None], alpha, result.solution),
                               residual=torch.where(better, polished, residual))

    def _fista_on_working_set(self, support: torch.Tensor, onehot: torch.Tensor,
                              alpha: torch.Tensor, tol: float) -> FistaResult:
        """FISTA on the features with the largest scores, in rounds: each round starts from the last
        solution, doubles the working set while features outside it violate their optimality condition,
        and tightens its tolerance from ``WORKING_SET_FIRST_TOL`` by 10x down to ``tol`` (early rounds
        only have to find the active features)."""
        batch, _, d = support.shape
        iterations = torch.zeros(batch, dtype=torch.long, device=support.device)
        scores = _feature_norms(support, onehot, alpha)
        size, round_tol = WORKING_SET_MIN, max(tol, WORKING_SET_FIRST_TOL)
        while True:
            working, columns = _working_set(support, scores, size)
            result = self._fista(_DualProblem(self, working, onehot), alpha,
                                 max(1, self.max_iter - int(iterations.max())), round_tol)
            iterations = iterations + result.iterations
            alpha = result.solution
            scores = _feature_norms(support, onehot, alpha)
            outside = scores.scatter(1, columns, 0.0) > self.lambda1
            if int(iterations.max()) >= self.max_iter or (round_tol == tol and not bool(outside.any())):
                break
            if bool(outside.any()):
                size, round_tol = min(d, 2 * size), max(tol, round_tol / 10)
            else:
                round_tol = tol
        # without violators the full problem's gap equals the working set's (up to rounding)
        violating = outside.any(dim=-1)
        residual = torch.where(violating, _gap(self, support, onehot, alpha), result.residual)
        converged = result.converged & ~violating
        return FistaResult(alpha, torch.where(converged, iterations, self.max_iter), converged, residual)

    def _fista(self, problem: _DualProblem, init: torch.Tensor, max_iter: int,
               tol: float | None) -> FistaResult:
        refine = problem.newton_step if self.newton and self.lambda1 == 0 else None
        return fista(init, problem.gradient, lambda alpha, _: project_simplex(alpha), 1 / problem.lipschitz,
                     problem.gap, max_iter, tol, self.check_every, refine=refine)

    def solve(self, support: torch.Tensor, onehot: torch.Tensor,
              init: torch.Tensor | None = None) -> tuple[torch.Tensor, SolverInfo]:
        """Primal weights (B, d, K), differentiable in ``support``, and the solve's diagnostics.

        The Newton polish (see ``newton``) runs only when ``support`` requires a gradient: the implicit
        gradient needs the optimal face, the weights alone only ``tol``.
        """
        exact, info = self._solve_dual(support, onehot, init, polish=support.requires_grad)
        alpha = exact.to(support.dtype)
        if support.requires_grad:
            alpha = _ImplicitDualSolution.apply(support, alpha, onehot, self, exact)
        return svm_primal_weights(support, onehot, alpha, self.lambda1, self.lambda2), info


def _gap(s: GroupLassoSVM, support: torch.Tensor, onehot: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """`svm_relative_gap` at (W(alpha), alpha) for solver ``s``, computing W(alpha) once."""
    weights = svm_primal_weights(support, onehot, alpha, s.lambda1, s.lambda2)
    primal = svm_primal_objective(weights, support, onehot, s.lambda1, s.lambda2, s.dual_reg)
    return _relative_gap(primal, _dual_from_weights(weights, alpha, onehot, s.lambda2, s.dual_reg), onehot)


def _working_set(support: torch.Tensor, scores: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (B, n, size) columns of ``support`` with the largest ``scores`` (B, d), and their indices."""
    batch, n, _ = support.shape
    columns = scores.topk(size, dim=-1).indices
    return support.gather(2, columns[:, None, :].expand(batch, n, size)), columns


def _active_features(support: torch.Tensor, norms: torch.Tensor,
                     lambda1: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`_working_set` of the features whose ``norms`` exceed ``lambda1``, as wide as the task with the
    most (at least 1); in tasks with fewer, the widest inactive features fill in."""
    return _working_set(support, norms, max(1, int((norms > lambda1).sum(dim=-1).max())))


def _feature_norms(support: torch.Tensor, onehot: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """(B, d) norms of the rows of X^T (Y - alpha): feature j is active iff its norm exceeds lambda1."""
    return torch.linalg.vector_norm(support.transpose(1, 2) @ (onehot - alpha), dim=-1)


class _DualProblem:
    """The dual of one batch on given feature columns: gradient, gap and a safeguarded Newton step.

    `gradient` and `dual` also take several points per task, stacked as (B, n, F, K): the Newton step
    evaluates all its candidate step lengths in one pass.
    """

    def __init__(self, solver: GroupLassoSVM, support: torch.Tensor, onehot: torch.Tensor) -> None:
        self.solver, self.support, self.onehot = solver, support, onehot
        self.support_t = support.transpose(1, 2).contiguous()
        self.gram = support @ self.support_t
        self.lipschitz = (torch.linalg.eigvalsh(self.gram)[..., -1] + solver.dual_reg) / solver.lambda2
        # grad D = (dual_reg alpha - K(alpha)) / lambda2 + (1 - dual_reg / lambda2) Y, with
        # K(alpha) = X BST(X^T Y - X^T alpha): the constant parts once, two fused ops per gradient
        self.smoothing = solver.dual_reg / solver.lambda2
        self.offset = (1 - self.smoothing) * onehot
        if solver.lambda1 == 0:  # BST is the identity: K(alpha) = G Y - G alpha with the n x n Gram
            self.offset = self.offset - self.gram @ onehot / solver.lambda2
        else:
            self.correlation_y = self.support_t @ onehot

    def _stacked(self, tensor: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """(B, r, K) ``tensor`` repeated for each point of (B, n, F, K) ``alpha``, as (B, r, F * K)."""
        return tensor if alpha.ndim == 3 else tensor.repeat(1, 1, alpha.shape[2])

    def _shrunk_correlation(self, alpha: torch.Tensor) -> torch.Tensor:
        """``BST(X^T (Y - alpha), lambda1)`` = lambda2 W(alpha), (B, d, K) or (B, d, F, K)."""
        flat = alpha.reshape(*alpha.shape[:2], -1)
        correlation = torch.baddbmm(self._stacked(self.correlation_y, alpha), self.support_t, flat, alpha=-1)
        shape = (alpha.shape[0], self.support.shape[-1], *alpha.shape[2:])
        return block_soft_threshold(correlation.reshape(shape), self.solver.lambda1)

    def gradient(self, alpha: torch.Tensor) -> torch.Tensor:
        s = self.solver
        flat = alpha.reshape(*alpha.shape[:2], -1)
        base = torch.add(self._stacked(self.offset, alpha), flat, alpha=self.smoothing)
        if s.lambda1 == 0:
            return torch.baddbmm(base, self.gram, flat, alpha=1 / s.lambda2).reshape(alpha.shape)
        shrunk = self._shrunk_correlation(alpha).reshape(flat.shape[0], -1, flat.shape[-1])
        return torch.baddbmm(base, self.support, shrunk, alpha=-1 / s.lambda2).reshape(alpha.shape)

    def dual(self, alpha: torch.Tensor) -> torch.Tensor:
        """D(alpha): (B,) for (B, n, K) ``alpha``, (B, F) for (B, n, F, K)."""
        s = self.solver
        onehot = self.onehot if alpha.ndim == 3 else self.onehot[:, :, None]
        if s.lambda1 == 0:  # ||X^T (Y - alpha)||^2 through the Gram matrix
            residual = (onehot - alpha).reshape(*alpha.shape[:2], -1)
            kernel = (residual * (self.gram @ residual)).reshape(alpha.shape).sum(dim=(1, -1))
        else:
            kernel = (self._shrunk_correlation(alpha) ** 2).sum(dim=(1, -1))
        return _dual_from_kernel(kernel, alpha, onehot, s.lambda2, s.dual_reg)

    def gap(self, alpha: torch.Tensor) -> torch.Tensor:
        return _gap(self.solver, self.support, self.onehot, alpha)

    def newton_step(self, alpha: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        """For ``tasks`` (B,) bool: a projected Newton step on the face of alpha, backtracked, kept where
        it does not raise the dual objective."""
        grad = self.gradient(alpha)
        on_face = alpha > 0
        multiplier = (grad * on_face).sum(-1, keepdim=True) / on_face.sum(-1, keepdim=True)
        free = on_face | (grad < multiplier)  # zeros whose KKT condition fails may enter
        face = _face(free)
        correlation = None if self.solver.lambda1 == 0 else self.support_t @ (self.onehot - alpha)
        hessian = _dual_hessian(self.support, correlation, self.solver, face, self.gram)
        step = _solve_on_face(hessian, face, -grad)
        fractions = torch.tensor(NEWTON_STEP_FRACTIONS, dtype=alpha.dtype, device=alpha.device)
        candidates = project_simplex(alpha[:, :, None] + fractions[:, None] * step[:, :, None])
        # a projected-gradient step zeroes entries left barely positive, so the face of the result
        # (which the implicit backward uses) is the face of the optimum
        step_size = 1 / self.lipschitz[:, None, None, None]
        candidates = project_simplex(candidates - step_size * self.gradient(candidates))
        # accept the largest fraction that does not increase D beyond rounding: near the optimum the
        # full step is exact, and values that agree to 1e-16 must not reject it
        current = self.dual(alpha)
        slack = 8 * torch.finfo(alpha.dtype).eps * current.abs()
        accept = (self.dual(candidates) <= (current + slack)[:, None]) & tasks[:, None]
        first = accept.to(torch.int8).argmax(dim=1)
        chosen = candidates[torch.arange(alpha.shape[0], device=alpha.device), :, first]
        return torch.where(accept.any(dim=1)[:, None, None], chosen, alpha)


class _ImplicitDualSolution(torch.autograd.Function):
    """Identity on alpha* whose backward is the implicit derivative of alpha* in the features, taken at
    ``exact``, the float64 solution of the solver."""

    @staticmethod
    def forward(ctx, support, alpha, onehot, solver, exact):
        ctx.save_for_backward(support, exact, onehot)
        ctx.solver = solver
        return alpha.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_alpha):
        support, alpha, onehot = ctx.saved_tensors
        grad_support = _dual_vjp(support, alpha, onehot, ctx.solver, grad_alpha)
        return grad_support, None, None, None, None


class _Face(NamedTuple):
    """The dual entries that may move, gathered per task: entries of rows with at least two free entries
    (a row with one cannot move under its sum constraint), padded to the batch's largest count."""

    entries: torch.Tensor  # (B, m) flat indices i * K + k into (B, n, K)
    samples: torch.Tensor  # (B, m) row i of each entry (padding included)
    classes: torch.Tensor  # (B, m) class k of each entry (padding included)
    groups: torch.Tensor  # (B, m) row i of each entry, -1 on padding


def _face(free: torch.Tensor) -> _Face:
    """`_Face` of the (B, n, K) bool ``free``."""
    batch, n, k = free.shape
    movable = (free & (free.sum(dim=-1, keepdim=True) >= 2)).reshape(batch, n * k)
    width = max(1, int(movable.sum(dim=1).max()))
    entries = torch.argsort((~movable).to(torch.int8), dim=1, stable=True)[:, :width]
    samples = entries // k
    return _Face(entries, samples, entries % k, torch.where(movable.gather(1, entries), samples, -1))


def _solve_on_face(hessian: torch.Tensor, face: _Face, rhs: torch.Tensor) -> torch.Tensor:
    """(B, n, K) solution of the face's KKT system (`solve_spd_with_group_sums`), zero off the face."""
    batch, n, k = rhs.shape
    flat = rhs.reshape(batch, n * k)
    solution = solve_spd_with_group_sums(hessian, face.groups, flat.gather(1, face.entries), n)
    return torch.zeros_like(flat).scatter(1, face.entries, solution).reshape(rhs.shape)


def _dual_hessian(support: torch.Tensor, v: torch.Tensor | None, solver: GroupLassoSVM, face: _Face,
                  gram: torch.Tensor | None = None) -> torch.Tensor:
    r"""(B, m, m) Hessian of D at $V = X^\top(Y - \alpha)$ on the entries of ``face``, through the active
    features only. With ``lambda1 = 0`` it does not depend on V (pass ``None``) and is built from
    ``gram``, $X X^\top$, when given.

    The Jacobian of BST on an active row is $(1 - t_j) I + t_j \hat v_j \hat v_j^\top$ with
    $t_j = \lambda_1 / \|v_j\|$, and zero on inactive rows; so the Hessian is
    $(X_A \mathrm{diag}(1 - t) X_A^\top \otimes I + Z Z^\top + \mathrm{dual\_reg}\, I) / \lambda_2$
    with $Z_{(i,k), j} = X_{ij} \sqrt{t_j} \hat v_{jk}$, entries indexed by $(i, k)$.
    """
    batch, n, _ = support.shape
    rows, classes = face.samples, face.classes
    m = rows.shape[1]
    same_class = classes[:, :, None] == classes[:, None, :]

    def kron_identity_on_face(gram: torch.Tensor) -> torch.Tensor:
        picked = gram.gather(1, rows[:, :, None].expand(batch, m, n))
        return picked.gather(2, rows[:, None, :].expand(batch, m, m)) * same_class

    if solver.lambda1 == 0:
        hessian = kron_identity_on_face(support @ support.transpose(1, 2) if gram is None else gram)
    else:
        norms = torch.linalg.vector_norm(v, dim=-1)
        support_active, columns = _active_features(support, norms, solver.lambda1)
        width = columns.shape[1]
        norms_active = norms.gather(1, columns)
        is_active = norms_active > solver.lambda1
        norms_active = norms_active.clamp_min(torch.finfo(v.dtype).tiny)
        ratio = torch.where(is_active, solver.lambda1 / norms_active, 0.0)
        shrink = torch.where(is_active, 1 - ratio, 0.0)
        shrunk_gram = (support_active * shrink[:, None, :]) @ support_active.transpose(1, 2)
        hessian = kron_identity_on_face(shrunk_gram)
        directions = v.gather(1, columns[..., None].expand(-1, -1, v.shape[-1])) / norms_active[..., None]
        scaled_directions = (ratio.sqrt()[:, :, None] * directions).transpose(1, 2)  # (B, K, width)
        z = (support_active.gather(1, rows[:, :, None].expand(batch, m, width))
             * scaled_directions.gather(1, classes[:, :, None].expand(batch, m, width)))
        hessian = torch.baddbmm(hessian, z, z.transpose(1, 2))
    eye = torch.eye(m, dtype=support.dtype, device=support.device)
    return (hessian + solver.dual_reg * eye) / solver.lambda2


def _dual_vjp(support: torch.Tensor, alpha: torch.Tensor, onehot: torch.Tensor, solver: GroupLassoSVM,
              grad_alpha: torch.Tensor) -> torch.Tensor:
    r"""Vector-Jacobian product of $\alpha^\star(X)$ by the implicit function theorem.

    On the face of the simplices that holds $\alpha^\star$ (support S, one multiplier per row),
    solve the KKT system $[H_S\ E; E^\top\ 0][u; \mu] = [\bar\alpha_S; 0]$, then
    $\bar X = -\partial_X \langle \nabla_\alpha D(\alpha^\star, X), u\rangle$. Computed in float64.
    """
    x, a, y = support.double(), alpha.double(), onehot.double()
    residual = y - a
    correlation = None if solver.lambda1 == 0 else x.transpose(1, 2) @ residual
    face = _face(a > 0)
    u = _solve_on_face(_dual_hessian(x, correlation, solver, face), face, grad_alpha.double())
    if solver.lambda1 > 0:  # an inactive feature's column gets no gradient: differentiate the active ones
        norms = torch.linalg.vector_norm(correlation, dim=-1)
        x, columns = _active_features(x, norms, solver.lambda1)
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        kernel_term = x @ block_soft_threshold(x.transpose(1, 2) @ residual, solver.lambda1)
        (grad_support,) = torch.autograd.grad(kernel_term, x, grad_outputs=u / solver.lambda2)
    if solver.lambda1 > 0:
        grad_support = torch.zeros_like(support, dtype=grad_support.dtype).scatter(
            2, columns[:, None, :].expand_as(grad_support), grad_support)
    return grad_support.to(support.dtype)
