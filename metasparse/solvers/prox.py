"""Proximal operators and projections: tiny pure functions on batched tensors."""

from __future__ import annotations

import functools

import torch

__all__ = ["block_soft_threshold", "project_simplex", "soft_threshold"]


def soft_threshold(x: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    r"""Elementwise soft-thresholding, the prox of $t\|\cdot\|_1$.

    $$\mathrm{ST}(x, t) = \mathrm{sign}(x)\max(|x| - t, 0)$$

    Args:
        x: Any tensor.
        threshold: Non-negative scalar, or a tensor broadcastable to ``x``.

    Returns:
        A tensor like ``x`` with exact zeros where ``|x| <= threshold``.

    Example:
        >>> soft_threshold(torch.tensor([-2.0, 0.5, 3.0]), 1.0)
        tensor([-1.,  0.,  2.])
    """
    return torch.sign(x) * torch.clamp(x.abs() - threshold, min=0)


def block_soft_threshold(v: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    r"""Row-wise block soft-thresholding, the prox of $t\sum_j\|V_{j,:}\|_2$.

    $$\mathrm{BST}(V, t)_j = \max\left(0, 1 - \frac{t}{\|V_j\|_2}\right) V_j$$

    Rows are the groups (the features, across classes). A zero row stays zero, with a zero gradient.

    Args:
        v: (..., d, K) tensor; each of the d rows is a group of K entries.
        threshold: Non-negative scalar, or a tensor broadcastable to (..., d, 1).

    Returns:
        A tensor like ``v`` whose rows with ``||V_j|| <= threshold`` are exactly zero.

    Example:
        >>> block_soft_threshold(torch.tensor([[3.0, 4.0], [0.3, 0.4]]), 1.0)
        tensor([[2.4000, 3.2000],
                [0.0000, 0.0000]])
    """
    norms = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    # max(||v|| - t, 0) / ||v||; the clamp keeps zero rows finite (0 / tiny)
    shrink = (norms - threshold).clamp_min_(0) / norms.clamp_min(torch.finfo(v.dtype).tiny)
    return shrink * v


def project_simplex(v: torch.Tensor) -> torch.Tensor:
    r"""Euclidean projection of each row onto the probability simplex.

    $$\Pi_\Delta(v) = \arg\min_{a \ge 0,\ \sum_k a_k = 1} \|a - v\|_2 = \max(v - \tau, 0)$$

    with $\tau = \max_k \frac{1}{k}\left(\sum_{j \le k} v_{(j)} - 1\right)$ over the entries sorted in
    decreasing order (Held, Wolfe and Crowder, 1974; Duchi et al., 2008): every partial sum satisfies
    $\sum_{j \le k} (v_{(j)} - \tau) \le 1$, with equality on the support of the projection.

    Args:
        v: (..., K) tensor; the last dimension is projected.

    Returns:
        A tensor like ``v`` whose rows are non-negative and sum to one.

    Example:
        >>> project_simplex(torch.tensor([[0.5, 0.5, 1.0], [2.0, 0.0, 0.0]]))
        tensor([[0.1667, 0.1667, 0.6667],
                [1.0000, 0.0000, 0.0000]])
    """
    ranks, minus_inverse_ranks = _ranks(v.shape[-1], v.dtype, v.device)
    # topk of all K entries returns them sorted, and costs less than torch.sort at small K; (S_k - 1) / k
    # as S_k / k - 1 / k in one fused operation
    partial_sums = v.topk(v.shape[-1], dim=-1).values.cumsum(dim=-1)
    tau = torch.addcdiv(minus_inverse_ranks, partial_sums, ranks).amax(dim=-1, keepdim=True)
    return (v - tau).clamp_min_(0)


@functools.lru_cache(maxsize=32)
def _ranks(k: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``[1, 2, ..., k]`` and ``-1 / [1, 2, ..., k]``, built once per size, dtype and device (the
    projection runs every iteration); outside inference mode, so that projections with autograd can use
    them too."""
    with torch.inference_mode(False):
        ranks = torch.arange(1, k + 1, device=device, dtype=dtype)
        return ranks, -1 / ranks
