"""Shared test utilities: random episodes and a high-accuracy cvxpy reference solve."""

from __future__ import annotations

import numpy as np
import torch

from metasparse.solvers.cvxpy_problems import group_lasso_regression_problem, group_lasso_svm_problem

CLARABEL_TIGHT = {"tol_gap_abs": 1e-9, "tol_gap_rel": 1e-9, "tol_feas": 1e-9}


def episode(batch: int, n_way: int, n_shot: int, d: int, seed: int = 0,
            dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Support features with class structure (class mean + noise) and labels in shuffled order."""
    generator = torch.Generator().manual_seed(seed)
    means = torch.randn(batch, n_way, d, generator=generator, dtype=dtype)
    labels = torch.stack([torch.randperm(n_way * n_shot, generator=generator) % n_way for _ in range(batch)])
    support = means.gather(1, labels[..., None].expand(batch, n_way * n_shot, d))
    support = support + 0.8 * torch.randn(batch, n_way * n_shot, d, generator=generator, dtype=dtype)
    return support, labels


def reference_svm_weights(support: torch.Tensor, labels: torch.Tensor, n_way: int, lambda1: float,
                          lambda2: float, dual_reg: float) -> np.ndarray:
    """(B, d, K) primal solutions by Clarabel at 1e-9, one task at a time."""
    import cvxpy as cp

    batch, n, d = support.shape
    onehot = torch.nn.functional.one_hot(labels, n_way).double()
    out = []
    for b in range(batch):
        problem, (x, y), (w,) = group_lasso_svm_problem(n, d, n_way, lambda1, lambda2, dual_reg)
        x.value, y.value = support[b].double().numpy(), onehot[b].numpy()
        problem.solve(solver=cp.CLARABEL, **CLARABEL_TIGHT)
        out.append(w.value)
    return np.stack(out)


def reference_regression_weights(features: torch.Tensor, targets: torch.Tensor,
                                 lam: torch.Tensor) -> np.ndarray:
    """(B, d, K) lasso / group-lasso solutions by Clarabel at 1e-9, one task at a time."""
    import cvxpy as cp

    batch, n, d = features.shape
    out = []
    for b in range(batch):
        problem, (x, y, lam_param), (w,) = group_lasso_regression_problem(n, d, targets.shape[-1])
        x.value, y.value, lam_param.value = (features[b].double().numpy(), targets[b].double().numpy(),
                                             float(lam[b]))
        problem.solve(solver=cp.CLARABEL, **CLARABEL_TIGHT)
        out.append(w.value)
    return np.stack(out)


def relative_error(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a, b = np.asarray(torch.as_tensor(a).detach()), np.asarray(torch.as_tensor(b).detach())
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def directional_fd(loss, inputs: tuple[torch.Tensor, ...], directions: tuple[torch.Tensor, ...],
                   h: float = 1e-6) -> float:
    """Central finite difference of ``loss(*inputs)`` along ``directions`` (float64)."""
    with torch.no_grad():
        plus = loss(*(x + h * d for x, d in zip(inputs, directions, strict=True)))
        minus = loss(*(x - h * d for x, d in zip(inputs, directions, strict=True)))
        return float((plus - minus) / (2 * h))
