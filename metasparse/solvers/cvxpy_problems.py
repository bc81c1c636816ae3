"""DPP-compliant cvxpy problems for the heads, and a cvxpylayers runner that caches one layer per shape.

The group-lasso SVM is written in its primal, independently of the native dual solver: the smoothed hinge
is the inf-convolution $\\ell_\\varepsilon(s) = \\min_t \\ell_0(s - t) + \\|t\\|^2 / (2\\varepsilon)$
of the Crammer-Singer hinge $\\ell_0$.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch

from metasparse._optional import require
from metasparse.solvers.diagnostics import CVXPY_ZERO_ROW_RTOL, SolverInfo, row_sparsity

__all__ = [
    "DEFAULT_SOLVER_ARGS",
    "CvxpyLayerRunner",
    "ParametrizedProblem",
    "cvxpylayers_info",
    "group_lasso_regression_problem",
    "group_lasso_svm_problem",
    "zero_small_rows",
]

DEFAULT_SOLVER_ARGS: dict[str, object] = {
    "eps": 1e-9,
    "max_iters": 100_000,
    "mode": "lsmr",
    "n_jobs_forward": 1,
    "n_jobs_backward": 1,
}
"""cvxpylayers ``solver_args`` of the heads. Measured on group-lasso heads (docs/benchmarks.md): SCS's
default ``eps=1e-4`` never gives exact zeros and diffcp's default backward (``mode="lsqr"``) is off by
up to 10%; tight SCS with ``mode="lsmr"`` matches finite differences. One thread per pool is faster than
the default on a 2-core machine."""
# diffcp options of the derivative only; they must not reach the solver on a forward-only call
_BACKWARD_ONLY_ARGS = ("mode", "n_jobs_backward")


class ParametrizedProblem(NamedTuple):
    """A cvxpy problem with its parameters and variables, in the order a CvxpyLayer takes them."""

    problem: object
    parameters: list
    variables: list


def group_lasso_svm_problem(n: int, d: int, k: int, lambda1: float | None, lambda2: float,
                            dual_reg: float) -> ParametrizedProblem:
    """The group-lasso multiclass SVM primal with parameters ``[support (n, d), onehot (n, k)]``.

    ``lambda1=None`` makes it a third parameter, ``[support, onehot, lambda1 (nonneg scalar)]``: one
    layer then serves every ``lambda1`` (per-episode values, e.g. a fraction of each episode's
    lambda1_max). Returns the variable ``[W (d, k)]``. Requires ``lambda2 > 0``.
    """
    cp = require("cvxpy")
    support, onehot = cp.Parameter((n, d)), cp.Parameter((n, k))
    parameters = [support, onehot]
    if lambda1 is None:
        lambda1 = cp.Parameter(nonneg=True)
        parameters.append(lambda1)
    weights, scores = cp.Variable((d, k)), cp.Variable((n, k))
    eps = dual_reg / lambda2
    objective = lambda2 / 2 * cp.sum_squares(weights) + lambda1 * cp.sum(cp.norm(weights, 2, axis=1))
    if eps > 0:
        smoothing = cp.Variable((n, k))
        hinge_scores = scores - smoothing
        objective = objective + cp.sum_squares(smoothing) / (2 * eps)
    else:
        hinge_scores = scores
    # max_k (s_k + 1 - [k = y]) - s_y; multiply(onehot, variables) keeps the problem DPP
    hinge = cp.max(hinge_scores + 1 - onehot, axis=1) - cp.sum(cp.multiply(onehot, hinge_scores), axis=1)
    problem = cp.Problem(cp.Minimize(cp.sum(hinge) + objective), [scores == support @ weights])
    return ParametrizedProblem(problem, parameters, [weights])


def group_lasso_regression_problem(n: int, d: int, k: int) -> ParametrizedProblem:
    """Lasso (k = 1) or multi-output group lasso, parameters ``[features (n, d), targets (n, k), lam]``.

    Objective ``||features W - targets||^2 / (2n) + lam * sum_j ||W_j||_2``; returns ``[W (d, k)]``.
    """
    cp = require("cvxpy")
    features, targets = cp.Parameter((n, d)), cp.Parameter((n, k))
    lam = cp.Parameter(nonneg=True)
    weights = cp.Variable((d, k))
    objective = (cp.sum_squares(features @ weights - targets) / (2 * n)
                 + lam * cp.sum(cp.norm(weights, 2, axis=1)))
    return ParametrizedProblem(cp.Problem(cp.Minimize(objective)), [features, targets, lam], [weights])


class CvxpyLayerRunner:
    """Solve a batch of problems with cvxpylayers, one cached layer per problem key.

    cvxpylayers' DIFFCP backend runs on the CPU in float64; inputs are moved there and results are
    returned in the dtype and device of the first input, so gradients flow back to the caller's device.

    Args:
        build: ``key -> ParametrizedProblem``; called once per new key (shapes and constants).
        solver_args: Passed to every layer call; defaults to `DEFAULT_SOLVER_ARGS`.
    """

    def __init__(self, build: Callable[..., ParametrizedProblem],
                 solver_args: dict[str, object] | None = None) -> None:
        self.build = build
        self.solver_args = dict(DEFAULT_SOLVER_ARGS if solver_args is None else solver_args)
        self._layers: dict[tuple, object] = {}

    def _layer(self, key: tuple) -> object:
        if key not in self._layers:
            layers = require("cvxpylayers.torch")
            parametrized = self.build(*key)
            if not parametrized.problem.is_dpp():
                raise AssertionError(f"problem for {key} is not DPP")
            self._layers[key] = layers.CvxpyLayer(parametrized.problem, parameters=parametrized.parameters,
                                                  variables=parametrized.variables)
        return self._layers[key]

    def __call__(self, key: tuple, *params: torch.Tensor) -> tuple[list[torch.Tensor], bool]:
        """Solve; returns the variables and whether the solver reported an accurate solution."""
        diffcp = require("diffcp")
        like = params[0]
        cpu_params = [p.to(device="cpu", dtype=torch.float64) for p in params]
        solver_args = self.solver_args
        if not (torch.is_grad_enabled() and any(p.requires_grad for p in params)):
            # cvxpylayers then calls diffcp.solve_only_batch, which passes unknown keys on to the solver
            solver_args = {k: v for k, v in solver_args.items() if k not in _BACKWARD_ONLY_ARGS}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            try:
                outputs = self._layer(key)(*cpu_params, solver_args=solver_args)
            except diffcp.SolverError as error:
                raise RuntimeError(f"cvxpylayers failed on problem {key}: {error}; try other solver_args "
                                   "(e.g. a larger max_iters) or solver='native'") from error
        accurate = not any("naccurate" in str(w.message) for w in caught)
        for w in caught:
            if "naccurate" not in str(w.message):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return [out.to(device=like.device, dtype=like.dtype) for out in outputs], accurate



def zero_small_rows(weights: torch.Tensor, all_zero: torch.Tensor,
                    rtol: float = CVXPY_ZERO_ROW_RTOL) -> torch.Tensor:
    """Set to exactly zero the rows of a cvxpylayers solution that are zero up to SCS's accuracy.

    SCS solutions are never exactly sparse. A row counts as zero when its norm is at most ``rtol`` times
    the largest row norm of its task, and every row of a task in ``all_zero`` does (its penalty is at or
    above lambda_max, where W = 0 exactly, though SCS returns rows of ~1e-11 whose relative sizes are
    noise). Zeroed rows get zero gradients, as in the exact solution map.

    Args:
        weights: (B, d, K) solution, differentiable.
        all_zero: (B,) bool, tasks whose exact solution is W = 0.
        rtol: Relative threshold.

    Returns:
        ``weights`` with those rows multiplied by 0 (the mask is constant).

    Example:
        >>> w = torch.tensor([[[1.0], [1e-9]], [[1e-11], [2e-11]]])
        >>> zero_small_rows(w, torch.tensor([False, True])).flatten().tolist()
        [1.0, 0.0, 0.0, 0.0]
    """
    with torch.no_grad():
        norms = torch.linalg.vector_norm(weights, dim=-1)
        keep = (norms > rtol * norms.amax(dim=-1, keepdim=True)) & ~all_zero[:, None]
    return weights * keep[..., None].to(weights.dtype)


def cvxpylayers_info(weights: torch.Tensor, residual: torch.Tensor, accurate: bool, tol: float,
                     certified: bool = True) -> SolverInfo:
    """Diagnostics of a cvxpylayers solve whose small rows went through `zero_small_rows`.

    SCS reports neither iterations (0 here) nor a per-task status: a task is ``converged`` when SCS raised
    no "inaccurate" warning and its ``residual``, recomputed from the returned weights, is at most
    ``tol``; sparsity counts the exact zeros. ``certified=False`` says the residual is only an upper bound
    that need not vanish at the optimum (the unsmoothed hinge, whose dual point at the optimum is not a
    function of W): it is reported but not checked.
    """
    batch, device = weights.shape[0], weights.device
    active, sparsity = row_sparsity(weights.detach())
    converged = ((residual <= tol) | (not certified)).to(device) & accurate
    return SolverInfo(torch.zeros(batch, dtype=torch.long, device=device), converged, residual.to(device),
                      active, sparsity, tol=tol, max_iter=0, solver="cvxpylayers")
