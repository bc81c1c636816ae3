r"""Faces of a product of simplices and the group-lasso SVM dual's Hessian on them.

The dual variable $\alpha$ (B, n, K) has one simplex per row. On the face that holds a point (the
entries that may move), Newton steps and the implicit backward both solve a KKT system
$[H\ E; E^\top\ 0][u; \mu] = [r; 0]$ with one multiplier per row; this module builds the face, the
Hessian on it (through the active features only) and solves that system.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from metasparse.solvers.linear_solve import solve_spd_with_group_sums
from metasparse.solvers.svm_objective import Lambda1, SVMParameters, per_task, without_group_lasso

__all__ = ["Face", "active_features", "dual_hessian", "face_of", "feature_norms", "select_features",
           "solve_on_face"]


class Face(NamedTuple):
    """The dual entries that may move, gathered per task: entries of rows with at least two free entries
    (a row with one cannot move under its sum constraint), padded to the batch's largest count."""

    entries: torch.Tensor  # (B, m) flat indices i * K + k into (B, n, K)
    samples: torch.Tensor  # (B, m) row i of each entry (padding included)
    classes: torch.Tensor  # (B, m) class k of each entry (padding included)
    groups: torch.Tensor  # (B, m) row i of each entry, -1 on padding


def face_of(free: torch.Tensor) -> Face:
    """`Face` of the (B, n, K) bool ``free``.

    Example:
        >>> face_of(torch.tensor([[[True, True], [True, False]]])).groups
        tensor([[0, 0]])
    """
    batch, n, k = free.shape
    movable = (free & (free.sum(dim=-1, keepdim=True) >= 2)).reshape(batch, n * k)
    width = max(1, int(movable.sum(dim=1).max()))
    entries = torch.argsort((~movable).to(torch.int8), dim=1, stable=True)[:, :width]
    samples = entries // k
    return Face(entries, samples, entries % k, torch.where(movable.gather(1, entries), samples, -1))


def solve_on_face(hessian: torch.Tensor, face: Face, rhs: torch.Tensor) -> torch.Tensor:
    """(B, n, K) solution of the face's KKT system (`solve_spd_with_group_sums`), zero off the face."""
    batch, n, k = rhs.shape
    flat = rhs.reshape(batch, n * k)
    solution = solve_spd_with_group_sums(hessian, face.groups, flat.gather(1, face.entries), n)
    return torch.zeros_like(flat).scatter(1, face.entries, solution).reshape(rhs.shape)


def feature_norms(support: torch.Tensor, dual_residual: torch.Tensor) -> torch.Tensor:
    """(B, d) norms of the rows of X^T (Y - alpha) from ``dual_residual = Y - alpha``: feature j is
    active iff its norm exceeds lambda1."""
    # as (Y - alpha)^T X, (B, K, d): with K = 5 and d = 16000 the product X^T (Y - alpha), which reads X
    # transposed, takes 2-3x longer; and the sum over K of squares beats a strided vector_norm
    return (dual_residual.transpose(1, 2) @ support).square().sum(dim=1).sqrt()


def select_features(support: torch.Tensor, scores: torch.Tensor,
                    size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (B, n, size) columns of ``support`` with the largest ``scores`` (B, d), and their indices."""
    batch, n, _ = support.shape
    columns = scores.topk(size, dim=-1).indices
    return support.gather(2, columns[:, None, :].expand(batch, n, size)), columns


def active_features(support: torch.Tensor, norms: torch.Tensor,
                    lambda1: Lambda1) -> tuple[torch.Tensor, torch.Tensor]:
    """`select_features` of the features whose ``norms`` exceed ``lambda1``, as wide as the task with the
    most (at least 1); in tasks with fewer, the widest inactive features fill in."""
    active = norms > per_task(lambda1, norms)
    return select_features(support, norms, max(1, int(active.sum(dim=-1).max())))


def dual_hessian(support: torch.Tensor, v: torch.Tensor | None, parameters: SVMParameters, face: Face,
                 gram: torch.Tensor | None = None) -> torch.Tensor:
    r"""(B, m, m) Hessian of D at $V = X^\top(Y - \alpha)$ on the entries of ``face``, through the active
    features only. With ``lambda1 = 0`` it does not depend on V (pass ``None``) and is built from
    ``gram``, $X X^\top$, when given.

    The Jacobian of BST on an active row is $(1 - t_j) I + t_j \hat v_j \hat v_j^\top$ with
    $t_j = \lambda_1 / \|v_j\|$, and zero on inactive rows; so the Hessian is
    $(X_A \mathrm{diag}(1 - t) X_A^\top \otimes I + Z Z^\top + \mathrm{dual\_reg}\, I) / \lambda_2$
    with $Z_{(i,k), j} = X_{ij} \sqrt{t_j} \hat v_{jk}$, entries indexed by $(i, k)$.
    """
    batch, n, _ = support.shape
    rows, classes = face.samples, face.classes
    m = rows.shape[1]
    same_class = classes[:, :, None] == classes[:, None, :]
    lambda1 = parameters.lambda1

    def kron_identity_on_face(gram: torch.Tensor) -> torch.Tensor:
        picked = gram.gather(1, rows[:, :, None].expand(batch, m, n))
        return picked.gather(2, rows[:, None, :].expand(batch, m, m)) * same_class

    if without_group_lasso(lambda1):
        hessian = kron_identity_on_face(support @ support.transpose(1, 2) if gram is None else gram)
    else:
        norms = torch.linalg.vector_norm(v, dim=-1)
        support_active, columns = active_features(support, norms, lambda1)
        width = columns.shape[1]
        norms_active = norms.gather(1, columns)
        threshold = per_task(lambda1, norms_active)
        is_active = norms_active > threshold
        norms_active = norms_active.clamp_min(torch.finfo(v.dtype).tiny)
        ratio = torch.where(is_active, threshold / norms_active, 0.0)
        shrink = torch.where(is_active, 1 - ratio, 0.0)
        shrunk_gram = (support_active * shrink[:, None, :]) @ support_active.transpose(1, 2)
        hessian = kron_identity_on_face(shrunk_gram)
        directions = v.gather(1, columns[..., None].expand(-1, -1, v.shape[-1])) / norms_active[..., None]
        scaled_directions = (ratio.sqrt()[:, :, None] * directions).transpose(1, 2)  # (B, K, width)
        z = (support_active.gather(1, rows[:, :, None].expand(batch, m, width))
             * scaled_directions.gather(1, classes[:, :, None].expand(batch, m, width)))
        hessian = torch.baddbmm(hessian, z, z.transpose(1, 2))
    eye = torch.eye(m, dtype=support.dtype, device=support.device)
    return (hessian + parameters.dual_reg * eye) / parameters.lambda2
