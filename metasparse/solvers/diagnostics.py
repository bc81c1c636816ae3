"""Per-task solver diagnostics and the warning raised when a solve did not converge."""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["CVXPY_ZERO_ROW_RTOL", "ConvergenceWarning", "SolverInfo", "row_sparsity", "warn_if_not_converged"]

CVXPY_ZERO_ROW_RTOL = 1e-6
"""SCS solutions are never exactly sparse: a row of W counts as zero below this fraction of the largest."""


class ConvergenceWarning(UserWarning):
    """A solver stopped at ``max_iter`` before reaching ``tol`` on some tasks.

    Example:
        Turn it into an error in a run that must not go on with approximate solutions:

        >>> import warnings
        >>> warnings.simplefilter("error", ConvergenceWarning)  # doctest: +SKIP
    """


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
        gradient_trusted: (B,) whether the gradient through each task's solution is that of the exact
            solution map: the solve converged and, for the group-lasso SVM, its Newton polish settled on
            the optimal face; for the lasso, the active features are no more than the samples (a unique
            solution). Where False the gradient is finite and of the right order but approximate
            (``None``: the backend does not say).

    Example:
        >>> from metasparse.heads import GroupLassoSVMHead
        >>> head = GroupLassoSVMHead(lambda1_ratio=0.5)
        >>> _ = head.solve(torch.randn(2, 10, 16), torch.arange(5).repeat(2).expand(2, 10), 5)
        >>> info = head.last_info
        >>> bool(info.converged.all()), info.sparsity.shape, info.solver
        (True, torch.Size([2]), 'native')
    """

    iterations: torch.Tensor
    converged: torch.Tensor
    residual: torch.Tensor
    active: torch.Tensor
    sparsity: torch.Tensor
    tol: float | None
    max_iter: int
    solver: str
    gradient_trusted: torch.Tensor | None = None

    @classmethod
    def closed_form(cls, weights: torch.Tensor, residual: torch.Tensor | None = None) -> SolverInfo:
        """Diagnostics of a direct solve (one step, converged) with exact-zero sparsity of ``weights``."""
        batch, device = weights.shape[0], weights.device
        ones = torch.ones(batch, dtype=torch.long, device=device)
        if residual is None:
            residual = torch.zeros(batch, dtype=weights.dtype, device=device)
        active, sparsity = row_sparsity(weights.detach())
        return cls(ones, ones.bool(), residual, active, sparsity, tol=0.0, max_iter=1, solver="closed_form",
                   gradient_trusted=ones.bool())

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
        if self.converged.numel() == 0:
            return f"{self.solver}: no tasks (an empty batch)"
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

    Example:
        >>> weights = torch.zeros(1, 4, 3); weights[0, 2] = 1.0
        >>> row_sparsity(weights)
        (tensor([1]), tensor([0.7500]))
    """
    norms = torch.linalg.vector_norm(weights, dim=-1)
    threshold = rtol * norms.amax(dim=-1, keepdim=True)
    active = (norms > threshold).sum(dim=-1)
    return active, 1 - active.to(weights.dtype) / weights.shape[-2]


def warn_if_not_converged(info: SolverInfo, where: str, warned: set[tuple] | None = None) -> bool:
    """Warn with diagnostics when some task of ``info`` missed its tolerance (not in fixed mode).

    Args:
        info: The solve's diagnostics.
        where: Who solved (a head's class name), to start the message.
        warned: The settings already warned about, e.g. a set kept by a head: a setting (solver, tol,
            max_iter) is warned about once, later misses are silent (their counts stay in each call's
            ``info``); ``None`` warns every time.

    Returns:
        Whether a warning was emitted. It is attributed to the first caller outside metasparse's heads
        and solvers and torch's ``nn.Module`` machinery: the user's line.
    """
    if info.fixed_iterations or bool(info.converged.all()):
        return False
    setting = (where, info.solver, info.tol, info.max_iter)
    if warned is not None:
        if setting in warned:
            return False
        warned.add(setting)
    missed = f"{int((~info.converged).sum())}/{info.converged.numel()} tasks"
    once = "" if warned is None else " Warned once per head and setting; each call's counts are in last_info."
    if info.solver == "cvxpylayers":
        message = (f"{where}: {missed} not solved to tol={info.tol:g}: SCS reported an inaccurate solution "
                   f"or the recomputed relative duality gap is above tol (worst "
                   f"{float(info.residual.max()):.2e}); raise solver_args['max_iters'] or loosen "
                   f"solver_args['eps'].")
    else:
        message = (f"{where}: {missed} did not reach tol={info.tol:g} in max_iter={info.max_iter} "
                   f"iterations (worst relative duality gap {float(info.residual.max()):.2e}); the solution "
                   f"is approximate. Raise max_iter or tol, or pass tol=None to run a fixed number of "
                   f"iterations on purpose.")
    warnings.warn(message + once, ConvergenceWarning, stacklevel=_caller_stacklevel())
    return True


# Frames that stand between a user's call and the warning: heads, solvers, nn.Module.__call__
_INTERNAL_DIRECTORIES = tuple(str(Path(path).resolve()) + os.sep for path in (
    Path(__file__).parent, Path(__file__).parents[1] / "heads", Path(torch.nn.modules.__file__).parent))


def _caller_stacklevel() -> int:
    """The ``stacklevel`` of `warnings.warn`, called from the function that calls this, that names the
    first frame outside `_INTERNAL_DIRECTORIES`."""
    frame, level = sys._getframe(2), 2  # the caller of warnings.warn is level 1
    while frame is not None and os.path.realpath(frame.f_code.co_filename).startswith(_INTERNAL_DIRECTORIES):
        frame, level = frame.f_back, level + 1
    return level
