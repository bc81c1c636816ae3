"""Batched symmetric positive definite solves, by Cholesky.

Everything metasparse solves is symmetric positive definite, or reduces to it (the KKT systems of the
simplex faces, by a Schur complement), so it never calls ``torch.linalg.solve``: besides being twice
as fast here, Cholesky avoids a defect of the CPU build of torch 2.14.1 we ship with, whose batched LU
(``getrf``) hangs with "Intel oneMKL ERROR: Parameter 6 was incorrect on entry to DLASWP" for
matrices larger than about 130 with two threads.
"""

from __future__ import annotations

import torch

__all__ = ["PSEUDO_INVERSE_RCOND", "solve_spd", "solve_spd_with_group_sums", "solve_symmetric_pseudo_inverse"]

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


def solve_spd_with_group_sums(matrix: torch.Tensor, groups: torch.Tensor, rhs: torch.Tensor,
                              n_groups: int) -> torch.Tensor:
    r"""Solve $H u = r$ for u whose entries sum to zero within each group.

    This is the KKT system $[H\ E; E^\top\ 0][u; \mu] = [r; 0]$ of a face of a product of simplices,
    $E_{a g} = 1$ iff entry a is in group g (a row of the simplex variable). It is solved by
    eliminating the constraint: in each group the last entry is minus the sum of the others, and the
    reduced system $Z^\top H Z z = Z^\top r$ on the other entries takes one Cholesky factorisation.

    Args:
        matrix: (B, m, m) symmetric positive definite H on the entries that may move.
        groups: (B, m) long, the group of each entry in ``[0, n_groups)``, or -1 for padding: a padding
            entry is pinned to zero (its rows of ``matrix`` are ignored).
        rhs: (B, m).
        n_groups: Number of groups (entries' groups are below it).

    Returns:
        (B, m) solution, zero on padding.

    Example:
        >>> h = torch.eye(3)[None] * 2; groups = torch.tensor([[0, 0, -1]])
        >>> solve_spd_with_group_sums(h, groups, torch.tensor([[1.0, 0.0, 5.0]]), 1)
        tensor([[ 0.2500, -0.2500,  0.0000]])
    """
    batch, m = groups.shape
    dtype, device = matrix.dtype, matrix.device
    positions = torch.arange(m, device=device).expand(batch, m)
    valid = groups >= 0
    # the constraint is eliminated: the last entry of each group (its pivot) is minus the sum of the others,
    # u = Z z, and Z^T H Z z = Z^T r is solved by one Cholesky factorisation on the other entries
    last = torch.full((batch, n_groups + 1), -1, dtype=torch.long, device=device)
    last = last.scatter_reduce(1, groups + 1, positions, reduce="amax")[:, 1:]
    pivot = torch.where(valid, last.gather(1, groups.clamp_min(0)), positions)
    free = valid & (pivot != positions)

    def rows(tensor: torch.Tensor) -> torch.Tensor:  # tensor[b, pivot[b, a], :]
        return tensor.gather(1, pivot[:, :, None].expand(batch, m, tensor.shape[-1]))

    h_pivot_columns = matrix.gather(2, pivot[:, None, :].expand(batch, m, m))
    reduced = matrix - h_pivot_columns - rows(matrix) + rows(h_pivot_columns)
    both_free = free[:, :, None] & free[:, None, :]
    eye = torch.eye(m, dtype=dtype, device=device)
    reduced = torch.where(both_free, reduced, eye)
    reduced_rhs = torch.where(free, rhs - rhs.gather(1, pivot), 0.0)
    z = solve_spd(reduced, reduced_rhs)
    pivot_values = torch.zeros_like(z).scatter_add(1, pivot, -z)
    return torch.where(free, z, torch.where(valid, pivot_values, 0.0))


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
