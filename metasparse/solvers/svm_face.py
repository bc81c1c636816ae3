r"""Faces of a product of simplices and the group-lasso SVM dual's Newton system on them.

The dual variable $\alpha$ (B, n, K) has one simplex per row. On the face that holds a point (the
entries that may move), Newton steps and the implicit backward both solve a KKT system
$[H\ E; E^\top\ 0][u; \mu] = [r; 0]$ with one multiplier per row. This module builds the face and
solves that system with the row-sum constraints eliminated: in each row the last free entry (its
pivot) is minus the sum of the others, $u = T z$, and $T^\top H T z = T^\top r$ is solved by one
Cholesky factorisation. The reduced matrix $T^\top H T$ is built directly from the active features,
never from H: since a pivot sits in the row of the entries it eliminates, every term keeps the
Kronecker structure of the Hessian (`reduced_dual_hessian`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from metasparse.solvers.linear_solve import solve_spd
from metasparse.solvers.svm_objective import (
    Lambda1,
    SVMParameters,
    feature_columns,
    per_task,
    without_group_lasso,
)

__all__ = ["Face", "active_features", "face_of", "reduced_dual_hessian", "select_features",
           "solve_on_face"]


class Face(NamedTuple):
    """The reduced system's unknowns, gathered per task and padded to the batch's largest count. The
    entries that may move are those of rows with at least two free entries (a row with one cannot move
    under its sum constraint); the last of each such row is its pivot, which the sum constraint
    eliminates, and the others are the unknowns. Pivots are not in the system, so its size is the
    number of unknowns (padding aside), not the number of movable entries."""

    entries: torch.Tensor  # (B, m) flat indices i * K + k into (B, n, K), distinct, padding last
    samples: torch.Tensor  # (B, m) row i of each entry (padding included)
    pivot_entries: torch.Tensor  # (B, m) flat index of the pivot of each unknown's row (any on padding)
    unknown: torch.Tensor  # (B, m) int8: 1 for an unknown, 0 for padding
    eliminated: torch.Tensor  # (B, m, K) int8 rows e_a = 1_{k_a} - 1_{pivot(a)} of T^T, zero on padding


def face_of(free: torch.Tensor) -> Face:
    """`Face` of the (B, n, K) bool ``free``.

    Example:
        >>> face = face_of(torch.tensor([[[True, True], [True, False]]]))
        >>> face.entries, face.pivot_entries, face.unknown
        (tensor([[0]]), tensor([[1]]), tensor([[1]], dtype=torch.int8))
    """
    batch, n, k = free.shape
    one_based, differences = _class_tables(k, free.device)
    movable = free & (free.sum(dim=-1, keepdim=True) >= 2)
    # the pivot of a row is its last movable entry (the largest class among them); 1-based, 0 for none
    pivots = (movable * one_based).amax(dim=-1)  # (B, n)
    unknowns = (movable & (one_based != pivots[..., None])).reshape(batch, n * k)
    width = max(1, int(unknowns.sum(dim=1).max()))
    unknown, entries = unknowns.to(torch.int8).topk(width, dim=1)  # the unknowns first, then padding
    samples, classes = entries // k, entries % k
    pivot_classes = pivots.gather(1, samples).sub_(1).clamp_min_(0)  # 0 on padding, which is masked
    eliminated = differences[classes, pivot_classes] * unknown[..., None]
    return Face(entries, samples, entries + (pivot_classes - classes), unknown, eliminated)


@functools.lru_cache(maxsize=8)
def _class_tables(k: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``[1, ..., k]`` and the (k, k, k) int8 table of ``1_c - 1_p`` (the rows of T^T), built once
    per K and device; outside inference mode, so that any caller can use them."""
    with torch.inference_mode(False):
        eye = torch.eye(k, dtype=torch.int8, device=device)
        return torch.arange(1, k + 1, device=device), eye[:, None, :] - eye[None, :, :]


def select_features(support: torch.Tensor, scores: torch.Tensor,
                    size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (B, n, size) columns of ``support`` with the largest ``scores`` (B, d), and their indices."""
    columns = scores.topk(size, dim=-1, sorted=False).indices  # the set, not its order: 15-40% faster
    return feature_columns(support, columns), columns


def active_features(support: torch.Tensor, norms: torch.Tensor,
                    lambda1: Lambda1) -> tuple[torch.Tensor, torch.Tensor]:
    """`select_features` of the features whose ``norms`` exceed ``lambda1``, as wide as the task with the
    most (at least 1); in tasks with fewer, the widest inactive features fill in."""
    active = norms > per_task(lambda1, norms)
    return select_features(support, norms, max(1, int(active.sum(dim=-1).max())))


def reduced_dual_hessian(support: torch.Tensor | None, v: torch.Tensor | None, parameters: SVMParameters,
                         face: Face, gram: torch.Tensor | None = None) -> torch.Tensor:
    r"""(B, m, m) $T^\top H T$: the Hessian of D at $V = X^\top(Y - \alpha)$ on ``face`` with each row's
    sum constraint eliminated, through the active features only; identity on the padding (the entries
    that are not unknowns). With ``lambda1 = 0`` it does not depend on V (pass ``None``) and is built
    from ``gram``, $X X^\top$, when given.

    The Jacobian of BST on an active row is $(1 - t_j) I + t_j \hat v_j \hat v_j^\top$ with
    $t_j = \lambda_1 / \|v_j\|$, and zero on inactive rows; so
    $\lambda_2 H = G \otimes I + Z Z^\top$ with $G = X_A \mathrm{diag}(1 - t) X_A^\top +
    \mathrm{dual\_reg}\, I$ and $Z_{(i,k), j} = X_{ij} \sqrt{t_j} \hat v_{jk}$, entries indexed by
    $(i, k)$. An unknown $a = (i, k)$ whose row's pivot is $(i, p)$ has the $T^\top$-row $e_a = 1_k - 1_p$
    in class space, within its own sample; so $\lambda_2 (T^\top H T)_{ab} = G_{i_a i_b} \langle e_a,
    e_b\rangle + (Z' Z'^\top)_{ab}$ with $Z'_{a j} = X_{i_a j} \sqrt{t_j} \langle \hat v_j, e_a\rangle$:
    one gather of the n x n matrix G and one product, never the m x m Hessian itself. ``support`` may be
    ``None`` where ``gram`` is given and ``lambda1 = 0``.
    """
    rows, lambda1, lambda2 = face.samples, parameters.lambda1, parameters.lambda2
    batch = rows.shape[0]
    tasks = torch.arange(batch, device=rows.device)
    eliminated = face.eliminated.to(support.dtype if gram is None else gram.dtype)
    # lambda2 T^T H T first (the form above), divided by lambda2 at the end
    if without_group_lasso(lambda1):
        kernel, z = (support @ support.transpose(1, 2) if gram is None else gram.clone()), None
    else:
        norms = v.square().sum(dim=-1).sqrt()  # v may be a transpose: vector_norm is slow across strides
        support_active, columns = active_features(support, norms, lambda1)
        inverse_norms = norms.gather(1, columns).clamp_min_(torch.finfo(v.dtype).tiny).reciprocal_()
        ratio = inverse_norms * per_task(lambda1, inverse_norms)  # t_j
        shrink = torch.rsub(ratio, 1).clamp_min_(0)  # 1 - t_j on the active rows (t_j < 1), 0 on the others
        # sqrt(t_j) v_hat_j = sqrt(t_j) / ||v_j|| v_j on the active rows, 0 on the others
        along = torch.where(shrink > 0, ratio.sqrt_().mul_(inverse_norms), 0.0)
        kernel = (support_active * shrink[:, None, :]) @ support_active.transpose(1, 2)
        scaled_directions = v.gather(1, columns[..., None].expand(-1, -1, v.shape[-1])) * along[..., None]
        # the rows of the unknowns' samples: indexing copies whole rows, 2-4x faster than gather here
        support_rows = support_active[tasks[:, None], rows]
        z = support_rows * (eliminated @ scaled_directions.transpose(1, 2))  # (B, m, width)
    kernel.diagonal(dim1=1, dim2=2).add_(parameters.dual_reg)
    m = rows.shape[1]
    reduced = kernel.gather(1, rows[:, :, None].expand(batch, m, kernel.shape[-1]))
    reduced = reduced.gather(2, rows[:, None, :].expand(batch, m, m))
    reduced.mul_(eliminated @ eliminated.transpose(1, 2))
    if z is not None:
        reduced.baddbmm_(z, z.transpose(1, 2))
    reduced.diagonal(dim1=1, dim2=2).add_(1 - face.unknown, alpha=lambda2)  # identity on the padding
    return reduced.div_(lambda2)


def solve_on_face(reduced_hessian: torch.Tensor, face: Face, rhs: torch.Tensor) -> torch.Tensor:
    r"""(B, n, K) solution u of the face's KKT system $[H\ E; E^\top\ 0][u; \mu] = [r; 0]$, zero off the
    face (its entries sum to zero in each row), from ``reduced_hessian`` $T^\top H T$
    (`reduced_dual_hessian`) and ``rhs`` r (B, n, K)."""
    flat = rhs.reshape(rhs.shape[0], -1)
    # T^T r: <e_a, r_i> = r at the unknown minus r at its pivot; 0 on the padding
    z = solve_spd(reduced_hessian, (flat.gather(1, face.entries) - flat.gather(1, face.pivot_entries))
                  .mul_(face.unknown))
    # u = T z: an unknown is its z, a pivot minus the sum of its row's unknowns
    u = torch.zeros_like(flat).scatter_(1, face.entries, z)
    return u.scatter_add_(1, face.pivot_entries, z.neg_()).reshape(rhs.shape)
