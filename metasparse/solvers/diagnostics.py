"""Per-task solver diagnostics and the warning raised when a solve did not converge."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

__all__ = ["CVXPY_ZERO_ROW_RTOL", "ConvergenceWarning", "SolverInfo", "row_sparsity", "warn_if_not_converged"]

CVXPY_ZERO_ROW_RTOL = 1e-6
"""SCS solutions are never exactly sparse: a row of W counts as zero below this fraction of the largest."""


class ConvergenceWarning(UserWarning):
    """A solver stopped at ``max_iter`` before reaching ``tol`` on some tasks."""


@dataclass
class SolverInfo:
    r"""What one batched solve did, task by task.

    Attributes:
        iterations: (B,) iterations each task ran (where it first met ``tol``, else ``max_iter``).
        converged: (B,) whether each task met ``tol``. Always False in fixed-iteration mode.
        residual: (B,) how far the returned solution is from optimal, in the solver's own scale: for the
            group-lasso SVM the relative duality gap (P - D) / P; for the lasso the duality gap over
            $\|y\|^2 / (2n)$; for ridge the relative residual of its linear system; 0 for ProtoNet.
        active: (B,) number of feature rows of the weights that are not zero.
        sparsity: (B,) fraction of feature rows of the weights that are zero.
        tol: The tolerance asked for; ``None`` in fixed-iteration (early-stopped) mode.
        max_iter: The iteration cap.
        solver: Which backend produced the solution (``"native"``, ``"cvxpylayers"``, ``"closed_form"``).
    """

    iterations: torch.Tensor
    converged: torch.Tensor
    residual: torch.Tensor
    active: torch.Tensor
    sparsity: torch.Tensor
    tol: float | None
    max_iter: int
    solver: str

    @classmethod
    def closed_form(cls, weights: torch.Tensor, residual: torch.Tensor | None = None) -> SolverInfo:
        """Diagnostics of a direct solve (one step, converged) with exact-zero sparsity of ``weights``."""
        batch, device = weights.shape[0], weights.device
        ones = torch.ones(batch, dtype=torch.long, device=device)
        if residual is None:
            residual = torch.zeros(batch, dtype=weights.dtype, device=device)
        active, sparsity = row_sparsity(weights.detach())
        return cls(ones, ones.bool(), residual, active, sparsity, tol=0.0, max_iter=1, solver="closed_form")

    @classmethod
    def from_cvxpylayers(cls, weights: torch.Tensor, residual: torch.Tensor, accurate: bool) -> SolverInfo:
        """Diagnostics of a cvxpylayers solve: SCS reports neither iterations (0 here) nor per-task status,
        so ``converged`` is whether no "inaccurate" warning was raised; ``residual`` is recomputed."""
        batch, device = weights.shape[0], weights.device
        active, sparsity = row_sparsity(weights.detach(), rtol=CVXPY_ZERO_ROW_RTOL)
        return cls(torch.zeros(batch, dtype=torch.long, device=device),
                   torch.full((batch,), accurate, device=device), residual, active, sparsity, tol=0.0,
                   max_iter=0, solver="cvxpylayers")

    @property
    def fixed_iterations(self) -> bool:
        """True in early-stopped mode (``tol=None``): a fixed number of iterations was run."""
        return self.tol is None

    def summary(self) -> str:
        """One line: convergence, iterations, residual and sparsity over the batch."""
        done = int(self.converged.sum())
        mode = "fixed iterations" if self.fixed_iterations else f"{done}/{self.converged.numel()} converged"
        return (f"{self.solver}: {mode}, iterations max {int(self.iterations.max())}, "
                f"residual max {float(self.residual.max()):.2e}, "
                f"sparsity mean {float(self.sparsity.float().mean()):.3f}")


def row_sparsity(weights: torch.Tensor, rtol: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Count the feature rows of ``weights`` that are zero.

    Args:
        weights: (B, d, K) weights; row j is feature j across the K outputs.
        rtol: A row counts as zero when its norm is at most ``rtol`` times the largest row norm of its
            task. 0 counts exact zeros (native solvers); interior-point or SCS solutions need a small
            positive value because they are never exactly sparse.

    Returns:
        ``(active, sparsity)``: (B,) counts of non-zero rows and (B,) fractions of zero rows.
    """
    norms = torch.linalg.vector_norm(weights, dim=-1)
    threshold = rtol * norms.amax(dim=-1, keepdim=True)
    active = (norms > threshold).sum(dim=-1)
    return active, 1 - active.to(weights.dtype) / weights.shape[-2]


def warn_if_not_converged(info: SolverInfo, where: str) -> None:
    """Warn with diagnostics when some task of ``info`` missed its tolerance (not in fixed mode)."""
    if info.fixed_iterations or bool(info.converged.all()):
        return
    if info.solver == "cvxpylayers":
        warnings.warn(f"{where}: SCS reported an inaccurate solution (worst relative duality gap "
                      f"{float(info.residual.max()):.2e}); raise solver_args['max_iters'] or loosen "
                      f"solver_args['eps']", ConvergenceWarning, stacklevel=3)
        return
    missed = int((~info.converged).sum())
    warnings.warn(
        f"{where}: {missed}/{info.converged.numel()} tasks did not reach tol={info.tol:g} in "
        f"max_iter={info.max_iter} iterations (worst relative duality gap "
        f"{float(info.residual.max()):.2e}); the solution is approximate. Raise max_iter or tol, "
        f"or pass tol=None to run a fixed number of iterations on purpose.",
        ConvergenceWarning, stacklevel=3)
