"""The lasso regression head: the inner problem of the paper's 3D Shapes study."""

from __future__ import annotations

import torch
from torch import nn

from metasparse.heads.base import empty_info
from metasparse.heads.group_lasso_svm import SOLVERS
from metasparse.heads.validation import (
    check_choice,
    check_max_iter,
    check_number,
    check_query,
    check_regression_support,
    check_tol,
    compute_dtype,
)
from metasparse.solvers.cvxpy_problems import (
    CvxpyLayerRunner,
    cvxpylayers_info,
    group_lasso_regression_problem,
    zero_small_rows,
)
from metasparse.solvers.diagnostics import SolverInfo, warn_if_not_converged
from metasparse.solvers.lasso import GroupLasso, group_lasso_lambda_max, group_lasso_relative_gap
from metasparse.solvers.narrow_product import narrow_matmul

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

    Dtypes and devices follow `metasparse.heads.EpisodicHead`: features, targets and query share one dtype
    and device; half precision is computed in float32 and returned in the input dtype; a batch of B = 0
    tasks gives empty results.

    Args:
        lambda_ratio: $\lambda / \lambda_{\max}$, > 0 and finite.
        solver: ``"native"`` (batched FISTA, implicit gradients on the support) or ``"cvxpylayers"``.
        max_iter: Native solver iteration cap, a positive int.
        tol: Duality gap relative to $\|y\|^2/(2n)$ a task must reach to count as converged, > 0 (the
            native solver stops there; cvxpylayers' solutions are checked against it); ``None`` (native
            only): fixed iterations.
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
        try:
            self.lambda_ratio = check_number(lambda_ratio, "lambda_ratio", minimum=0.0, strict=True)
        except ValueError as error:
            raise ValueError(f"{error} (use a ridge for no sparsity)") from None
        self.solver = check_choice(solver, "solver", SOLVERS)
        self.max_iter, self.tol = check_max_iter(max_iter), check_tol(tol)
        if solver_args is not None and not isinstance(solver_args, dict):
            raise ValueError(f"solver_args must be a dict or None, got {type(solver_args).__name__}")
        if solver == "native":
            self.native = GroupLasso(self.max_iter, self.tol)
        elif self.tol is None:
            raise ValueError("tol=None (a fixed number of iterations) needs solver='native'; cvxpylayers "
                             "solves to SCS's accuracy and checks the result against a tol > 0")
        else:
            self.cvxpylayers = CvxpyLayerRunner(group_lasso_regression_problem, solver_args)
        self.last_info: SolverInfo | None = None
        self._fitted: tuple[torch.Tensor, str, torch.dtype] | None = None
        self._warned: set[tuple] = set()

    def extra_repr(self) -> str:
        return f"lambda_ratio={self.lambda_ratio}, solver={self.solver!r}"

    def _solve(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B, d, K) weights in the compute dtype; sets `last_info`."""
        dtype = compute_dtype(features.dtype)
        features, targets = features.to(dtype), targets.to(dtype)
        if features.shape[0] == 0:
            self.last_info = empty_info(features, self.tol, self.max_iter, self.solver)
            return features.transpose(1, 2) @ targets
        lam = self.lambda_ratio * group_lasso_lambda_max(features, targets)
        if self.solver == "native":
            weights, info = self.native.solve(features, targets, lam)
        else:
            _, n, d = features.shape
            (weights,), accurate = self.cvxpylayers((n, d, targets.shape[-1]), features, targets, lam)
            all_zero = lam >= group_lasso_lambda_max(features, targets)
            weights = zero_small_rows(weights, all_zero)
            with torch.no_grad():
                residual = group_lasso_relative_gap(weights.detach().double(), features.detach().double(),
                                                    targets.detach().double(), lam.double())
                residual = residual.masked_fill(all_zero, 0.0)  # W = 0 is then exactly optimal
            info = cvxpylayers_info(weights, residual.to(features.dtype), accurate, self.tol)
        self.last_info = info
        warn_if_not_converged(info, type(self).__name__, self._warned)
        return weights

    def solve(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Weights per task: (B, n, d), (B, n) -> (B, d); (B, n, K) targets -> (B, d, K); unbatched too."""
        features, targets, layout = check_regression_support(features, targets)
        return _OUTPUT_SHAPES[layout](self._solve(features, targets).to(features.dtype))

    def fit_(self, support: torch.Tensor, support_targets: torch.Tensor) -> LassoHead:
        """Fit and keep the weights for later ``head(query)`` calls."""
        features, targets, layout = check_regression_support(support, support_targets)
        self._fitted = (self._solve(features, targets), layout, features.dtype)
        return self

    def forward(self, query: torch.Tensor, support: torch.Tensor | None = None,
                support_targets: torch.Tensor | None = None) -> torch.Tensor:
        """Predictions for the query: (B, m) (or (B, m, K) for multi-output targets; unbatched too)."""
        if support is None:
            if self._fitted is None:
                raise ValueError("support and support_targets are required unless fit_() was called first")
            weights, layout, dtype = self._fitted
        else:
            if support_targets is None:
                raise ValueError("support_targets is required together with support")
            features, targets, layout = check_regression_support(support, support_targets)
            weights = None
        reference = features if weights is None else torch.empty(
            weights.shape[0], 0, weights.shape[1], dtype=dtype, device=weights.device)
        query = check_query(query, reference, unbatched=layout in ("single", "multi"))
        if weights is None:  # solved after the query's checks: a bad query fails at once
            weights = self._solve(features, targets)
        return _OUTPUT_SHAPES[layout](narrow_matmul(query.to(weights.dtype), weights).to(query.dtype))
