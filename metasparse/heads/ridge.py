"""MetaOptNet's ridge-regression head (MetaOptNet-RR)."""

from __future__ import annotations

import dataclasses

import torch

from metasparse.heads.base import EpisodicHead
from metasparse.heads.validation import check_number
from metasparse.solvers.diagnostics import SolverInfo, warn_if_not_converged

__all__ = ["RESIDUAL_TOL", "RidgeHead"]

RESIDUAL_TOL = 1e-6
"""Largest relative residual of the kernel system, solved in float64, reported as converged; above it
(a kernel too ill-conditioned for float64) the head warns."""


class RidgeHead(EpisodicHead):
    r"""MetaOptNet-RR: ridge regression onto the one-hot labels, solved in closed form through the kernel.

    $W = 2 X^\top (X X^\top + \lambda I)^{-1} Y$, with $\lambda = 50$ in MetaOptNet. This is
    MetaOptNet-RR's QP, $\min_z \frac12 z^\top (K + \lambda I) z + e^\top z$ with $e = -2Y$ and
    $W = X^\top z$, whose minimiser is this closed form; the factor 2 makes the logits equal to
    MetaOptNet's (a plain ridge $\min_W \|XW - Y\|^2 + \lambda\|W\|^2$ gives half of them). That QP has
    no active constraint (qpth is given a fake one), so MetaOptNet-RR's solution is exact after qpth's
    first iteration: its 3-iteration test setting gives this same closed form.
    Solved in float64 whatever the input dtype (results come back in it): the kernel of large features
    is too ill-conditioned for float32. Differentiated by autograd through a Cholesky solve; there is no
    iterative solver to configure; ``last_info.converged`` says whether the kernel system's relative
    residual is at most `RESIDUAL_TOL`.

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
        # float64 whatever the input: with features of magnitude s, the kernel's entries are ~ s^2 d and a
        # float32 kernel is off by far more than lam where s is large (1e3 and up), and so is W
        x = support.double()
        targets = 2 * torch.nn.functional.one_hot(labels, n_way).to(x.dtype)  # MetaOptNet's e = -2Y
        kernel = x @ x.transpose(1, 2)
        kernel = kernel + self.lam * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
        coefficients = torch.cholesky_solve(targets, torch.linalg.cholesky(kernel))
        weights = (x.transpose(1, 2) @ coefficients).to(support.dtype)
        with torch.no_grad():
            residual = (torch.linalg.vector_norm(kernel @ coefficients - targets, dim=(1, 2))
                        / torch.linalg.vector_norm(targets, dim=(1, 2)))
        info = SolverInfo.closed_form(weights, residual.to(support.dtype))
        self.last_info = dataclasses.replace(info, converged=residual <= RESIDUAL_TOL, tol=RESIDUAL_TOL)
        warn_if_not_converged(self.last_info, type(self).__name__, self._warned)
        return weights
