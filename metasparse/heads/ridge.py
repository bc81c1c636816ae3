"""MetaOptNet's ridge-regression head (MetaOptNet-RR)."""

from __future__ import annotations

import torch

from metasparse.heads.base import EpisodicHead
from metasparse.solvers.diagnostics import SolverInfo

__all__ = ["RidgeHead"]


class RidgeHead(EpisodicHead):
    r"""Ridge regression onto one-hot labels, solved in closed form through the kernel.

    $W = X^\top (X X^\top + \lambda I)^{-1} Y$, MetaOptNet-RR with $\lambda = 50$.
    Differentiated by autograd through a Cholesky solve; there is no iterative solver to configure.

    Args:
        lam: Ridge weight, > 0.
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
        if not lam > 0:
            raise ValueError(f"lam must be > 0, got {lam!r}")
        self.lam = float(lam)

    def extra_repr(self) -> str:
        return f"lam={self.lam}"

    def _solve(self, support: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
        onehot = torch.nn.functional.one_hot(labels, n_way).to(support.dtype)
        n = support.shape[1]
        kernel = support @ support.transpose(1, 2)
        kernel = kernel + self.lam * torch.eye(n, dtype=support.dtype, device=support.device)
        coefficients = torch.cholesky_solve(onehot, torch.linalg.cholesky(kernel))
        weights = support.transpose(1, 2) @ coefficients
        with torch.no_grad():
            residual = (torch.linalg.vector_norm(kernel @ coefficients - onehot, dim=(1, 2))
                        / torch.linalg.vector_norm(onehot, dim=(1, 2)))
        self.last_info = SolverInfo.closed_form(weights, residual)
        return weights
