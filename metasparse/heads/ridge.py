"""MetaOptNet's ridge-regression head (MetaOptNet-RR)."""

from __future__ import annotations

import torch

from metasparse.heads.base import EpisodicHead
from metasparse.heads.validation import check_number
from metasparse.solvers.diagnostics import SolverInfo

__all__ = ["RidgeHead"]


class RidgeHead(EpisodicHead):
    r"""MetaOptNet-RR: ridge regression onto the one-hot labels, solved in closed form through the kernel.

    $W = 2 X^\top (X X^\top + \lambda I)^{-1} Y$, with $\lambda = 50$ in MetaOptNet. This is
    MetaOptNet-RR's QP, $\min_z \frac12 z^\top (K + \lambda I) z + e^\top z$ with $e = -2Y$ and
    $W = X^\top z$, whose minimiser is this closed form; the factor 2 makes the logits equal to
    MetaOptNet's (a plain ridge $\min_W \|XW - Y\|^2 + \lambda\|W\|^2$ gives half of them). That QP has
    no active constraint (qpth is given a fake one), so MetaOptNet-RR's solution is exact after qpth's
    first iteration: its 3-iteration test setting gives this same closed form.
    Differentiated by autograd through a Cholesky solve; there is no iterative solver to configure.

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

    def extra_repr(self) -> str:
        return f"lam={self.lam}"

    def _solve(self, support: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
        targets = 2 * torch.nn.functional.one_hot(labels, n_way).to(support.dtype)  # MetaOptNet's e = -2Y
        n = support.shape[1]
        kernel = support @ support.transpose(1, 2)
        kernel = kernel + self.lam * torch.eye(n, dtype=support.dtype, device=support.device)
        coefficients = torch.cholesky_solve(targets, torch.linalg.cholesky(kernel))
        weights = support.transpose(1, 2) @ coefficients
        with torch.no_grad():
            residual = (torch.linalg.vector_norm(kernel @ coefficients - targets, dim=(1, 2))
                        / torch.linalg.vector_norm(targets, dim=(1, 2)))
        self.last_info = SolverInfo.closed_form(weights, residual)
        return weights
