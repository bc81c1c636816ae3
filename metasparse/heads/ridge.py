"""MetaOptNet's ridge-regression head (MetaOptNet-RR)."""

from __future__ import annotations

import dataclasses

import torch

from metasparse.heads.base import EpisodicHead
from metasparse.heads.validation import check_number
from metasparse.solvers.diagnostics import SolverInfo, warn_if_not_converged
from metasparse.solvers.svm_objective import feature_correlation

__all__ = ["RidgeHead", "residual_tol"]


def residual_tol(dtype: torch.dtype) -> float:
    """Largest relative residual of the ridge's linear system reported as converged in ``dtype``: the
    square root of its machine epsilon (3e-4 in float32, 1.5e-8 in float64); above it the system was too
    ill-conditioned for that precision and the head warns.

    Example:
        >>> residual_tol(torch.float64) < 1e-7 < residual_tol(torch.float32)
        True
    """
    return torch.finfo(dtype).eps ** 0.5


class RidgeHead(EpisodicHead):
    r"""MetaOptNet-RR: ridge regression onto the one-hot labels, solved in closed form through the kernel.

    $W = 2 X^\top (X X^\top + \lambda I)^{-1} Y$, with $\lambda = 50$ in MetaOptNet. This is
    MetaOptNet-RR's QP, $\min_z \frac12 z^\top (K + \lambda I) z + e^\top z$ with $e = -2Y$ and
    $W = X^\top z$, whose minimiser is this closed form; the factor 2 makes the logits equal to
    MetaOptNet's (a plain ridge $\min_W \|XW - Y\|^2 + \lambda\|W\|^2$ gives half of them). That QP has
    no active constraint (qpth is given a fake one), so MetaOptNet-RR's solution is exact after qpth's
    first iteration: its 3-iteration test setting gives this same closed form.
    Solved through the smaller of the two equal systems: the n x n kernel one above when n <= d, else
    $W = 2 (X^\top X + \lambda I)^{-1} X^\top Y$ (with more samples than features the kernel is
    singular and only $\lambda$ keeps it invertible, too badly conditioned for float32 once the features
    are large). Differentiated by autograd through a Cholesky solve; there is no iterative solver to
    configure; ``last_info.converged`` says whether the system's relative residual is at most
    `residual_tol` of the dtype.

    Args:
        lam: Ridge weight, a finite number > 0.
        learn_scale: Learnable logit scale, as in MetaOptNet.
        scale: Initial logit scale.

    Example:
        >>> head = RidgeHead(lam=50.0)
        >>> support, labels = torch.randn(25, 64), torch.arange(5).repeat(5)
        >>> head(torch.randn(75, 64), support, labels, n_way=5).shape
        torch.Size([75, 5])
    """

    def __init__(self, lam: float = 50.0, learn_scale: bool = True, scale: float = 1.0) -> None:
        super().__init__(learn_scale=learn_scale, scale=scale)
        self.lam = check_number(lam, "lam", minimum=0.0, strict=True)
        self._warned: set[tuple] = set()

    def extra_repr(self) -> str:
        return f"lam={self.lam}"

    def _solve(self, support: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
        targets = 2 * torch.nn.functional.one_hot(labels, n_way).to(support.dtype)  # MetaOptNet's e = -2Y
        n, d = support.shape[1:]
        support_t = support.transpose(1, 2)
        # the smaller of the two equal forms: with more samples than features the n x n kernel is
        # singular (only lam keeps it invertible, badly conditioned for large features), X^T X is not
        if n <= d:
            system, rhs = support @ support_t, targets
        else:
            system, rhs = support_t @ support, support_t @ targets
        system = system + self.lam * torch.eye(system.shape[-1], dtype=support.dtype, device=support.device)
        solution = torch.cholesky_solve(rhs, torch.linalg.cholesky(system))
        weights = feature_correlation(support, solution) if n <= d else solution  # X^T solution
        with torch.no_grad():
            residual = (torch.linalg.vector_norm(system @ solution - rhs, dim=(1, 2))
                        / torch.linalg.vector_norm(rhs, dim=(1, 2)).clamp_min(torch.finfo(rhs.dtype).tiny))
        tol = residual_tol(support.dtype)
        info = SolverInfo.closed_form(weights, residual)
        self.last_info = dataclasses.replace(info, converged=residual <= tol, tol=tol)
        warn_if_not_converged(self.last_info, type(self).__name__, self._warned)
        return weights
