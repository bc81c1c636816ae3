"""The lasso regression head: the inner problem of the paper's 3D Shapes study."""

from __future__ import annotations

import torch
from torch import nn

from metasparse.heads.group_lasso_svm import SOLVERS
from metasparse.heads.validation import check_query, check_regression_support
from metasparse.solvers.cvxpy_problems import CvxpyLayerRunner, group_lasso_regression_problem
from metasparse.solvers.diagnostics import SolverInfo, warn_if_not_converged
from metasparse.solvers.lasso import GroupLasso, group_lasso_lambda_max, group_lasso_relative_gap

__all__ = ["LassoHead"]

# (B, rows, K) weights or predictions back to the caller's layout (see check_regression_support)
_OUTPUT_SHAPES = {"single": lambda t: t[0, :, 0], "batch": lambda t: t[..., 0],
                  "multi": lambda t: t[0], "batch_multi": lambda t: t}


class LassoHead(nn.Module):
    r"""Lasso regression fitted per task, differentiable in features and targets.

    Solves $\min_w \frac{1}{2n}\|\Phi w - y\|^2 + \lambda\|w\|_1$ with
    $\lambda = \mathrm{lambda\_ratio} \cdot \|\Phi^\top y\|_\infty / n$ (the ratio to
    $\lambda_{\max}$, taken without gradient, as in the paper's code). Multi-output targets (n, K)
    use the group lasso $\lambda \sum_j \|W_j\|_2$ with
    $\lambda_{\max} = \max_j \|\Phi_j^\top Y\|_2 / n$.
    No intercept. A ratio of 1 or more gives the all-zero solution and zero gradients.

    Args:
        lambda_ratio: $\lambda / \lambda_{\max}$, > 0.
        solver: ``"native"`` (batched FISTA, implicit gradients on the support) or ``"cvxpylayers"``.
        max_iter: Native solver iteration cap.
        tol: Native solver duality gap relative to $\|y\|^2/(2n)$; ``None``: fixed iterations.
        solver_args: cvxpylayers ``solver_args`` (defaults: tight SCS, ``mode="lsmr"``).

    Example:
        >>> reg = LassoHead(lambda_ratio=0.3)
        >>> features = torch.randn(8, 50, 6); targets = features[..., 0] - 2 * features[..., 3]
        >>> w = reg.solve(features, targets)
        >>> w.shape, reg(torch.randn(8, 10, 6), features, targets).shape
        (torch.Size([8, 6]), torch.Size([8, 10]))
    """

    def __init__(self, lambda_ratio: float = 0.3, solver: str = "native", max_iter: int = 1000,
                 tol: float | None = 1e-6, solver_args: dict[str, object] | None = None) -> None:
        super().__init__()
        if not lambda_ratio > 0:
            raise ValueError(f"lambda_ratio must be > 0 (use a ridge for no sparsity), got {lambda_ratio!r}")
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        self.lambda_ratio = float(lambda_ratio)
        self.solver = solver
        if solver == "native":
            self.native = GroupLasso(max_iter, tol)
        else:
            self.cvxpylayers = CvxpyLayerRunner(group_lasso_regression_problem, solver_args)
        self.last_info: SolverInfo | None = None
        self._fitted: tuple[torch.Tensor, str] | None = None

    def extra_repr(self) -> str:
        return f"lambda_ratio={self.lambda_ratio}, solver={self.solver!r}"

    def _solve(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        lam = self.lambda_ratio * group_lasso_lambda_max(features, targets)
        if self.solver == "native":
            weights, info = self.native.solve(features, targets, lam)
        else:
            _, n, d = features.shape
            (weights,), accurate = self.cvxpylayers((n, d, targets.shape[-1]), features, targets, lam)
            with torch.no_grad():
                residual = group_lasso_relative_gap(weights.detach(), features.detach(),
                                                    targets.detach(), lam)
            info = SolverInfo.from_cvxpylayers(weights, residual, accurate)
        self.last_info = info
        warn_if_not_converged(info, type(self).__name__)
        return weights

    def solve(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Weights per task: (B, n, d), (B, n) -> (B, d); (B, n, K) targets -> (B, d, K); unbatched too."""
        features, targets, layout = check_regression_support(features, targets)
        return _OUTPUT_SHAPES[layout](self._solve(features, targets))

    def fit_(self, support: torch.Tensor, support_targets: torch.Tensor) -> LassoHead:
        """Fit and keep the weights for later ``head(query)`` calls."""
        features, targets, layout = check_regression_support(support, support_targets)
        self._fitted = (self._solve(features, targets), layout)
        return self

    def forward(self, query: torch.Tensor, support: torch.Tensor | None = None,
                support_targets: torch.Tensor | None = None) -> torch.Tensor:
        """Predictions for the query: (B, m) (or (B, m, K) for multi-output targets; unbatched too)."""
        if support is None:
            if self._fitted is None:
                raise ValueError("support and support_targets are required unless fit_() was called first")
            weights, layout = self._fitted
        else:
            if support_targets is None:
                raise ValueError("support_targets is required together with support")
            features, targets, layout = check_regression_support(support, support_targets)
            weights = self._solve(features, targets)
        reference = torch.empty(weights.shape[0], 0, weights.shape[1], device=weights.device)
        query = check_query(query, reference, unbatched=layout in ("single", "multi"))
        return _OUTPUT_SHAPES[layout](query @ weights)
