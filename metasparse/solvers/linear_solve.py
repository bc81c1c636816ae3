"""Batched symmetric positive definite solves, by Cholesky.

Everything metasparse solves is symmetric positive definite, or reduces to it (the KKT systems of the
simplex faces, once their constraints are eliminated: `metasparse.solvers.svm_face`), so it never
calls ``torch.linalg.solve``: besides being twice as fast here, Cholesky avoids a defect of the CPU
build of torch 2.14.1 we ship with, whose batched LU (``getrf``) hangs with "Intel oneMKL ERROR:
Parameter 6 was incorrect on entry to DLASWP" for matrices larger than about 130 with two threads.
"""

from __future__ import annotations

import torch

__all__ = ["PSEUDO_INVERSE_RCOND", "solve_spd", "solve_symmetric_pseudo_inverse"]

PSEUDO_INVERSE_RCOND = 1e-9
"""Eigenvalues below this fraction of the largest count as zero in `solve_symmetric_pseudo_inverse`."""


def solve_spd(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve ``matrix @ x = rhs`` for a batch of symmetric positive definite ``matrix``.

    Args:
        matrix: (B, m, m) symmetric positive definite.
        rhs: (B, m) or (B, m, r).

    Returns:
        ``x`` shaped like ``rhs``.

    Example:
        >>> a = torch.tensor([[[4.0, 1.0], [1.0, 3.0]]]); b = torch.tensor([[1.0, 2.0]])
        >>> torch.allclose(a @ solve_spd(a, b)[..., None], b[..., None])
        True
    """
    vector = rhs.ndim == matrix.ndim - 1
    solution = torch.cholesky_solve(rhs[..., None] if vector else rhs, torch.linalg.cholesky(matrix))
    return solution[..., 0] if vector else solution


def solve_symmetric_pseudo_inverse(matrix: torch.Tensor, rhs: torch.Tensor,
                                   rcond: float = PSEUDO_INVERSE_RCOND) -> torch.Tensor:
    """``pinv(matrix) @ rhs`` for a batch of symmetric positive semi-definite ``matrix``, by eigh.

    The inverse where ``matrix`` is well conditioned; eigenvalues below ``rcond`` times the largest are
    dropped, so a singular system gets its minimum-norm least-squares solution instead of 1/rounding.

    Args:
        matrix: (B, m, m) symmetric positive semi-definite.
        rhs: (B, m).
        rcond: Relative eigenvalue cutoff.

    Returns:
        (B, m).

    Example:
        >>> a = torch.tensor([[[1.0, 1.0], [1.0, 1.0]]], dtype=torch.float64)
        >>> x = solve_symmetric_pseudo_inverse(a, torch.tensor([[2.0, 2.0]], dtype=torch.float64))
        >>> torch.allclose(x, torch.tensor([[1.0, 1.0]], dtype=torch.float64))
        True
    """
    values, vectors = torch.linalg.eigh(matrix)
    keep = values > rcond * values.amax(dim=-1, keepdim=True).clamp_min(torch.finfo(values.dtype).tiny)
    inverse = torch.where(keep, 1 / values.where(keep, 1.0), 0.0)
    return (vectors @ (inverse * (vectors.transpose(1, 2) @ rhs[..., None])[..., 0])[..., None])[..., 0]
