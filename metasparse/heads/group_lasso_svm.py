"""The group-lasso multiclass SVM head (the paper's few-shot head) and MetaOptNet's SVM head."""

from __future__ import annotations

import dataclasses
import operator

import torch

from metasparse.heads.base import EpisodicHead, empty_info
from metasparse.heads.validation import (
    check_choice,
    check_classification_support,
    check_max_iter,
    check_number,
    check_tol,
    compute_dtype,
)
from metasparse.solvers.cvxpy_problems import (
    CvxpyLayerRunner,
    cvxpylayers_info,
    group_lasso_svm_problem,
    zero_small_rows,
)
from metasparse.solvers.diagnostics import SolverInfo, row_sparsity, warn_if_not_converged
from metasparse.solvers.group_lasso_svm import (
    GroupLassoSVM,
    svm_dual_point,
    svm_lambda1_max,
    svm_relative_gap,
)
from metasparse.solvers.svm_objective import NonzeroRows, scores_through_nonzero_rows

__all__ = ["SOLVERS", "GroupLassoSVMHead", "SVMHead"]

SOLVERS = ("native", "cvxpylayers")
"""The backends a head can be built with."""

DEFAULT_LAMBDA1 = 0.1
"""``lambda1`` of a `GroupLassoSVMHead` given neither ``lambda1`` nor ``lambda1_ratio``."""

METAOPTNET_TEST_TOL = 1e-2
"""``tol`` of `SVMHead.metaoptnet_test`, this head's counterpart of MetaOptNet's test setting (qpth stopped
after 3 interior-point iterations). Measured on 16 episodes each of 5-way 1-shot (d = 64), 5-shot (d = 64,
ReLU d = 640 and 1600) and 15-shot (ReLU d = 640), C = 0.1, float64 (docs/heads.md): MetaOptNet's
3-iteration logits are 13% to 93% off the QP's solution (relative norm) and this tolerance's 1e-8 or
less, in 10 to 60 iterations; the predicted classes of both agreed with the exact solution's on every
query. ``tol=None, max_iter=3`` is not that setting: 3 FISTA steps gave logits 0.5x to 140x off."""


class GroupLassoSVMHead(EpisodicHead):
    r"""MetaOptNet-style head whose base learner is a group-lasso multiclass SVM.

    Fits, per episode, $\min_W \sum_i \ell_\varepsilon(W^\top x_i; y_i) +
    \frac{\lambda_2}{2}\|W\|_F^2 + \lambda_1 \sum_j \|W_{j,:}\|_2$ with
    $\varepsilon = \mathrm{dual\_reg}/\lambda_2$ (see `metasparse.solvers.group_lasso_svm`),
    so each task uses few features; logits are ``scale * query @ W``. With ``lambda1=0``,
    ``lambda2=1/C`` and ``dual_reg=1`` this is exactly MetaOptNet-SVM.

    Args:
        lambda1: Group-lasso weight (rows of W = features, across classes), absolute, >= 0; 0.1 unless
            ``lambda1_ratio`` is given.
        lambda2: Ridge weight, > 0.
        dual_reg: Smoothing of the hinge, > 0 for the native solver (MetaOptNet's ``+1.0 * I``).
        solver: ``"native"`` (batched FISTA on the dual, implicit gradients, any device and dtype) or
            ``"cvxpylayers"`` (the primal through a CvxpyLayer on the CPU in float64; exact reference).
        max_iter: Native solver iteration cap, a positive int.
        tol: Relative duality gap a task must reach to count as converged, > 0. The native solver stops
            there; cvxpylayers' solutions are checked against it. ``None`` (native only) runs exactly
            ``max_iter`` iterations (early stopping), differentiates at that point and reports
            ``converged=False``.
        learn_scale: Learnable logit scale, as in MetaOptNet.
        scale: Initial logit scale, finite.
        solver_args: cvxpylayers ``solver_args``; defaults to
            `metasparse.solvers.cvxpy_problems.DEFAULT_SOLVER_ARGS` (tight SCS, ``mode="lsmr"``).
        lambda1_ratio: Instead of ``lambda1``: per episode, ``lambda1 = lambda1_ratio * lambda1_max`` of
            that episode (`lambda1_max`, taken without gradient), so the sparsity does not depend on the
            scale of the features; >= 0, and 1 or more gives W = 0. Not together with ``lambda1``.

    All hyper-parameters are checked here: a non-finite or out-of-range value raises ``ValueError``
    naming it. Each setting that misses ``tol`` is warned about once (`ConvergenceWarning`); every
    call's diagnostics are in `last_info`.

    Example:
        >>> head = GroupLassoSVMHead(lambda1=0.1, lambda2=10.0)
        >>> support, labels = torch.randn(8, 25, 64), torch.arange(5).repeat(5).expand(8, 25)
        >>> logits = head(torch.randn(8, 75, 64), support, labels, n_way=5)
        >>> logits.shape, head.last_info.sparsity.shape
        (torch.Size([8, 75, 5]), torch.Size([8]))
        >>> relative = GroupLassoSVMHead(lambda1_ratio=1.0)
        >>> bool((relative.solve(support, labels, n_way=5) == 0).all())
        True
    """

    def __init__(self, lambda1: float | None = None, lambda2: float = 10.0, dual_reg: float = 1.0,
                 solver: str = "native", max_iter: int = 1000, tol: float | None = 1e-4,
                 learn_scale: bool = True, scale: float = 1.0,
                 solver_args: dict[str, object] | None = None, lambda1_ratio: float | None = None) -> None:
        super().__init__(learn_scale=learn_scale, scale=scale)
        self.solver = check_choice(solver, "solver", SOLVERS)
        native = solver == "native"
        if lambda1 is not None and lambda1_ratio is not None:
            raise ValueError(f"pass lambda1 (absolute) or lambda1_ratio (a fraction of each episode's "
                             f"lambda1_max), not both; got lambda1={lambda1!r} and "
                             f"lambda1_ratio={lambda1_ratio!r}")
        self.lambda1_ratio = None if lambda1_ratio is None else check_number(lambda1_ratio, "lambda1_ratio",
                                                                             minimum=0.0)
        self.lambda1 = None if lambda1_ratio is not None else check_number(
            DEFAULT_LAMBDA1 if lambda1 is None else lambda1, "lambda1", minimum=0.0)
        self.lambda2 = check_number(lambda2, "lambda2", minimum=0.0, strict=True)
        if native and isinstance(dual_reg, int | float) and dual_reg == 0:
            raise ValueError("dual_reg must be > 0 for the native solver, got 0; use solver='cvxpylayers' "
                             "for the unsmoothed hinge (dual_reg=0)")
        self.dual_reg = check_number(dual_reg, "dual_reg", minimum=0.0, strict=native)
        self.max_iter = check_max_iter(max_iter)
        self.tol = check_tol(tol)
        if not native and self.tol is None:
            raise ValueError("tol=None (a fixed number of iterations) needs solver='native'; cvxpylayers "
                             "solves to SCS's accuracy and checks the result against a tol > 0")
        if solver_args is not None and not isinstance(solver_args, dict):
            raise ValueError(f"solver_args must be a dict or None, got {type(solver_args).__name__}")
        if native:
            self.native = GroupLassoSVM(lambda1=self.lambda1 or 0.0, lambda2=self.lambda2,
                                        dual_reg=self.dual_reg, max_iter=self.max_iter, tol=self.tol)
        else:
            self.cvxpylayers = CvxpyLayerRunner(group_lasso_svm_problem, solver_args)
        self._warned: set[tuple] = set()

    def extra_repr(self) -> str:
        penalty = (f"lambda1={self.lambda1}" if self.lambda1_ratio is None
                   else f"lambda1_ratio={self.lambda1_ratio}")
        return f"{penalty}, lambda2={self.lambda2}, dual_reg={self.dual_reg}, solver={self.solver!r}"

    def lambda1_max(self, support: torch.Tensor, support_labels: torch.Tensor, n_way: int) -> torch.Tensor:
        """Per episode, the smallest ``lambda1`` at which this head's weights are all zero.

        See `metasparse.solvers.svm_lambda1_max`; ``lambda1_ratio`` is a fraction of it.

        Returns:
            (B,) tensor, or a 0-d tensor for an unbatched episode.
        """
        support, labels, unbatched = check_classification_support(support, support_labels, n_way)
        support = support.to(compute_dtype(support.dtype))
        values = self._lambda1_max(support, self._onehot(support, labels, operator.index(n_way)))
        return values[0] if unbatched else values

    def _scores(self, query: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        # group-lasso weights at backbone size have tens of nonzero rows: the product through them skips
        # two passes over the (B, m, d) query (forward and backward)
        return scores_through_nonzero_rows(query, weights)

    def _lambda1_max(self, support: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        return svm_lambda1_max(support, onehot, self.lambda2, self.dual_reg or 1e-12)

    @staticmethod
    def _onehot(support: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
        return torch.nn.functional.one_hot(labels, n_way).to(support.dtype)

    def _empty_info(self, support: torch.Tensor) -> SolverInfo:
        return empty_info(support, self.tol, self.max_iter if self.solver == "native" else 0, self.solver)

    def _solve(self, support: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
        return self._fit_weights(support, labels, n_way).dense()

    def _fit_scores(self, query: torch.Tensor, support: torch.Tensor, labels: torch.Tensor,
                    n_way: int) -> torch.Tensor:
        # through the nonzero rows the solver found: no (B, d, K) weights to form and differentiate
        if support.shape[0] == 0:
            return super()._fit_scores(query, support, labels, n_way)
        weights = self._fit_weights(support.to(compute_dtype(support.dtype)), labels, n_way)
        return weights.scores(query.to(weights.rows.dtype))

    def _fit_weights(self, support: torch.Tensor, labels: torch.Tensor, n_way: int) -> NonzeroRows:
        """`_solve`'s weights as their nonzero rows, for B >= 1 episodes in the compute dtype; sets
        `last_info` and warns where a setting missed ``tol``."""
        onehot = self._onehot(support, labels, n_way)
        if self.lambda1_ratio is None and (self.lambda1 == 0 or self.solver == "native"):
            # no threshold to compute: the SVM, or the native solver, which answers the tasks at or above
            # lambda1_max itself (zero weights that do not depend on the features, 0 iterations)
            lambda1 = support.new_full((support.shape[0],), self.lambda1)
            all_zero = None if self.solver == "native" else torch.zeros_like(lambda1, dtype=torch.bool)
        else:
            lambda1_max = self._lambda1_max(support, onehot)
            lambda1 = (torch.full_like(lambda1_max, self.lambda1) if self.lambda1_ratio is None
                       else self.lambda1_ratio * lambda1_max)
            # at or above lambda1_max, W = 0 exactly (this lambda1_max needs dual_reg > 0)
            all_zero = (lambda1 >= lambda1_max) & (self.dual_reg > 0)
        if self.solver == "native":
            solver = self.native if self.lambda1_ratio is None else self.native.for_tasks(lambda1)
            weights, info = solver.solve_nonzero_rows(support, onehot)  # one batched solve, lambda1 per task
        else:
            dense, info = self._solve_cvxpylayers(support, onehot, lambda1, all_zero)
            weights = NonzeroRows(dense, None, support.shape[-1])
        if self.dual_reg > 0:
            # zeros with zero gradients, whatever rounding left in the solution
            if all_zero is not None and bool(all_zero.any()):
                weights = weights._replace(rows=weights.rows * (~all_zero)[:, None, None].to(support.dtype))
            active = row_sparsity(weights.rows.detach())[0]
            info = dataclasses.replace(info, active=active, sparsity=1 - active.to(info.sparsity.dtype)
                                       / support.shape[-1])
        self.last_info = info
        warn_if_not_converged(info, type(self).__name__, self._warned)
        return weights

    def _solve_cvxpylayers(self, support: torch.Tensor, onehot: torch.Tensor, lambda1: torch.Tensor,
                           all_zero: torch.Tensor) -> tuple[torch.Tensor, SolverInfo]:
        _, n, d = support.shape
        key = (n, d, onehot.shape[-1], None, self.lambda2, self.dual_reg)
        (weights,), accurate = self.cvxpylayers(key, support, onehot, lambda1)
        weights = zero_small_rows(weights, all_zero)
        with torch.no_grad():
            w, x = weights.detach().double(), support.detach().double()
            y, lam = onehot.double(), lambda1.double()
            alpha = svm_dual_point(x @ w, y, self.dual_reg / self.lambda2)
            residual = svm_relative_gap(w, alpha, x, y, lam, self.lambda2, self.dual_reg)
            residual = residual.masked_fill(all_zero, 0.0).to(support.dtype)
        return weights, cvxpylayers_info(weights, residual, accurate, self.tol, certified=self.dual_reg > 0)


class SVMHead(GroupLassoSVMHead):
    """MetaOptNet-SVM: the Crammer-Singer SVM head, i.e. `GroupLassoSVMHead` with ``lambda1=0``.

    Args:
        C: Inverse regularisation (MetaOptNet's ``C_reg=0.1``); ``lambda2 = 1 / C``.
        dual_reg: MetaOptNet's ``+1.0 * I`` on the QP's kernel.
        solver: ``"native"`` or ``"cvxpylayers"``, as in `GroupLassoSVMHead`.
        max_iter: Native solver iteration cap.
        tol: Relative duality gap, as in `GroupLassoSVMHead`; ``None``: a fixed number of FISTA
            iterations. MetaOptNet stops its QP solver after 3 interior-point iterations at test time:
            `metaoptnet_test` is this head's counterpart of that setting.
        learn_scale: Learnable logit scale.
        scale: Initial logit scale.
        solver_args: cvxpylayers ``solver_args``.

    Example:
        >>> head = SVMHead(C=0.1)
        >>> head.lambda1, head.lambda2
        (0.0, 10.0)
    """

    def __init__(self, C: float = 0.1, dual_reg: float = 1.0, solver: str = "native", max_iter: int = 1000,
                 tol: float | None = 1e-4, learn_scale: bool = True, scale: float = 1.0,
                 solver_args: dict[str, object] | None = None) -> None:
        C = check_number(C, "C", minimum=0.0, strict=True)
        super().__init__(0.0, 1.0 / C, dual_reg, solver, max_iter, tol, learn_scale, scale, solver_args)
        self.C = C

    @classmethod
    def metaoptnet_test(cls, C: float = 0.1, **kwargs: object) -> SVMHead:
        """The head for reproducing MetaOptNet's test setting (qpth stopped after 3 iterations).

        That setting is early stopping of an interior-point method; its counterpart here is early
        stopping on the duality gap, ``tol=METAOPTNET_TEST_TOL`` (see there for what it was measured to
        give), not a fixed number of FISTA iterations.

        Args:
            C: Inverse regularisation, as in `SVMHead`.
            **kwargs: Other `SVMHead` arguments, except ``tol``.

        Example:
            >>> SVMHead.metaoptnet_test().tol
            0.01
        """
        if "tol" in kwargs:
            raise ValueError("metaoptnet_test sets tol itself; use SVMHead(tol=...) for another tolerance")
        return cls(C=C, tol=METAOPTNET_TEST_TOL, **kwargs)
