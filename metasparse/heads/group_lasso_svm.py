"""The group-lasso multiclass SVM head (the paper's few-shot head) and MetaOptNet's SVM head."""

from __future__ import annotations

import torch

from metasparse.heads.base import EpisodicHead
from metasparse.heads.validation import check_classification_support
from metasparse.solvers.cvxpy_problems import CvxpyLayerRunner, group_lasso_svm_problem
from metasparse.solvers.diagnostics import SolverInfo, warn_if_not_converged
from metasparse.solvers.group_lasso_svm import (
    GroupLassoSVM,
    check_svm_parameters,
    svm_dual_point,
    svm_lambda1_max,
    svm_relative_gap,
)

__all__ = ["SOLVERS", "GroupLassoSVMHead", "SVMHead"]

SOLVERS = ("native", "cvxpylayers")
"""The backends a head can be built with."""


class GroupLassoSVMHead(EpisodicHead):
    r"""MetaOptNet-style head whose base learner is a group-lasso multiclass SVM.

    Fits, per episode, $\min_W \sum_i \ell_\varepsilon(W^\top x_i; y_i) +
    \frac{\lambda_2}{2}\|W\|_F^2 + \lambda_1 \sum_j \|W_{j,:}\|_2$ with
    $\varepsilon = \mathrm{dual\_reg}/\lambda_2$ (see `metasparse.solvers.group_lasso_svm`),
    so each task uses few features; logits are ``scale * query @ W``. With ``lambda1=0``,
    ``lambda2=1/C`` and ``dual_reg=1`` this is exactly MetaOptNet-SVM.

    Args:
        lambda1: Group-lasso weight (rows of W = features, across classes).
        lambda2: Ridge weight, > 0.
        dual_reg: Smoothing of the hinge, > 0 for the native solver (MetaOptNet's ``+1.0 * I``).
        solver: ``"native"`` (batched FISTA on the dual, implicit gradients, any device and dtype) or
            ``"cvxpylayers"`` (the primal through a CvxpyLayer on the CPU in float64; exact reference).
        max_iter: Native solver iteration cap.
        tol: Native solver relative duality gap; ``None`` runs exactly ``max_iter`` iterations
            (MetaOptNet's early stopping), differentiates at that point and reports ``converged=False``.
        learn_scale: Learnable logit scale, as in MetaOptNet.
        scale: Initial logit scale.
        solver_args: cvxpylayers ``solver_args``; defaults to
            `metasparse.solvers.cvxpy_problems.DEFAULT_SOLVER_ARGS` (tight SCS, ``mode="lsmr"``).

    Example:
        >>> head = GroupLassoSVMHead(lambda1=0.1, lambda2=10.0)
        >>> support, labels = torch.randn(8, 25, 64), torch.arange(5).repeat(5).expand(8, 25)
        >>> logits = head(torch.randn(8, 75, 64), support, labels, n_way=5)
        >>> logits.shape, head.last_info.sparsity.shape
        (torch.Size([8, 75, 5]), torch.Size([8]))
    """

    def __init__(self, lambda1: float = 0.1, lambda2: float = 10.0, dual_reg: float = 1.0,
                 solver: str = "native", max_iter: int = 1000, tol: float | None = 1e-4,
                 learn_scale: bool = True, scale: float = 1.0,
                 solver_args: dict[str, object] | None = None) -> None:
        super().__init__(learn_scale=learn_scale, scale=scale)
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        self.solver = solver
        check_svm_parameters(lambda1, lambda2, dual_reg, native=solver == "native")
        if solver == "native":
            self.native = GroupLassoSVM(lambda1, lambda2, dual_reg, max_iter, tol)
        else:
            self.cvxpylayers = CvxpyLayerRunner(group_lasso_svm_problem, solver_args)
        self.lambda1, self.lambda2, self.dual_reg = float(lambda1), float(lambda2), float(dual_reg)

    def extra_repr(self) -> str:
        return (f"lambda1={self.lambda1}, lambda2={self.lambda2}, dual_reg={self.dual_reg}, "
                f"solver={self.solver!r}")

    def lambda1_max(self, support: torch.Tensor, support_labels: torch.Tensor, n_way: int) -> torch.Tensor:
        """Per episode, the smallest ``lambda1`` at which this head's weights are all zero.

        See `metasparse.solvers.svm_lambda1_max`; useful to set ``lambda1`` as a fraction of it.

        Returns:
            (B,) tensor, or a 0-d tensor for an unbatched episode.
        """
        support, labels, unbatched = check_classification_support(support, support_labels, n_way)
        onehot = torch.nn.functional.one_hot(labels, n_way).to(support.dtype)
        values = svm_lambda1_max(support, onehot, self.lambda2, self.dual_reg or 1e-12)
        return values[0] if unbatched else values

    def _solve(self, support: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
        onehot = torch.nn.functional.one_hot(labels, n_way).to(support.dtype)
        if self.solver == "native":
            weights, info = self.native.solve(support, onehot)
        else:
            weights, info = self._solve_cvxpylayers(support, onehot)
        self.last_info = info
        warn_if_not_converged(info, type(self).__name__)
        return weights

    def _solve_cvxpylayers(self, support: torch.Tensor,
                           onehot: torch.Tensor) -> tuple[torch.Tensor, SolverInfo]:
        _, n, d = support.shape
        key = (n, d, onehot.shape[-1], self.lambda1, self.lambda2, self.dual_reg)
        (weights,), accurate = self.cvxpylayers(key, support, onehot)
        with torch.no_grad():
            w, x = weights.detach(), support.detach()
            alpha = svm_dual_point(x @ w, onehot, self.dual_reg / self.lambda2)
            residual = svm_relative_gap(w, alpha, x, onehot, self.lambda1, self.lambda2, self.dual_reg)
        return weights, SolverInfo.from_cvxpylayers(weights, residual, accurate)


class SVMHead(GroupLassoSVMHead):
    """MetaOptNet-SVM: the Crammer-Singer SVM head, i.e. `GroupLassoSVMHead` with ``lambda1=0``.

    Args:
        C: Inverse regularisation (MetaOptNet's ``C_reg=0.1``); ``lambda2 = 1 / C``.
        dual_reg: MetaOptNet's ``+1.0 * I`` on the QP's kernel.
        solver: ``"native"`` or ``"cvxpylayers"``, as in `GroupLassoSVMHead`.
        max_iter: Native solver iteration cap.
        tol: Native solver relative duality gap; ``None``: fixed iterations (MetaOptNet runs 3 QP
            iterations at test time).
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
        if not C > 0:
            raise ValueError(f"C must be > 0, got {C!r}")
        super().__init__(0.0, 1.0 / C, dual_reg, solver, max_iter, tol, learn_scale, scale, solver_args)
