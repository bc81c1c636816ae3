"""The face Newton system of the group-lasso SVM dual against the dense KKT system of its autograd Hessian."""

import numpy as np
import pytest
import torch

from metasparse.solvers import GroupLassoSVM, svm_lambda1_max
from metasparse.solvers.svm_face import face_of, reduced_dual_hessian, solve_on_face
from metasparse.solvers.svm_objective import feature_correlation, svm_dual_objective


def dense_kkt_solution(hessian: np.ndarray, free: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """u solving [H_SS E; E^T 0][u_S; mu] = [r_S; 0] on the entries S of rows with two or more free
    entries (E: one column per such row), zero elsewhere; flat (n K) arrays."""
    n, k = free.shape
    movable = free & (free.sum(axis=1, keepdims=True) >= 2)
    entries = np.flatnonzero(movable)
    rows = np.unique(entries // k)
    e = (entries[:, None] // k == rows[None]).astype(float)
    kkt = np.block([[hessian[np.ix_(entries, entries)], e], [e.T, np.zeros((rows.size, rows.size))]])
    solution = np.linalg.solve(kkt, np.concatenate([rhs[entries], np.zeros(rows.size)]))
    u = np.zeros(n * k)
    u[entries] = solution[: entries.size]
    return u


@pytest.mark.parametrize("ratio", [0.0, 0.4])
def test_face_solve_matches_the_kkt_system_of_the_autograd_hessian(ratio: float):
    generator = torch.Generator().manual_seed(3)
    batch, n, k, d = 3, 8, 4, 6
    x = torch.randn(batch, n, d, generator=generator, dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.arange(n) % k, k).double().expand(batch, n, k)
    lambda2, dual_reg = 2.0, 0.5
    lambda1 = ratio * float(svm_lambda1_max(x, y, lambda2, dual_reg).min())
    solver = GroupLassoSVM(lambda1, lambda2, dual_reg)
    # a point with zeros (free entries 1 to K per row), so that faces differ in size between tasks
    alpha = torch.rand(batch, n, k, generator=generator, dtype=torch.float64)
    alpha = alpha * (torch.rand(batch, n, k, generator=generator) < 0.6)
    alpha[:, :, 0] += 0.1
    alpha = alpha / alpha.sum(-1, keepdim=True)
    rhs = torch.randn(batch, n, k, generator=generator, dtype=torch.float64)
    face = face_of(alpha > 0)
    assert bool((face.unknown == 0).any())  # faces differ in size: some tasks have padding
    v = None if ratio == 0 else feature_correlation(x, y - alpha)
    u = solve_on_face(reduced_dual_hessian(x, v, solver, face), face, rhs)
    for b in range(batch):
        def dual(flat: torch.Tensor, b: int = b) -> torch.Tensor:
            return svm_dual_objective(flat.reshape(1, n, k), x[b:b + 1], y[b:b + 1], lambda1, lambda2,
                                      dual_reg)[0]
        hessian = torch.autograd.functional.hessian(dual, alpha[b].flatten()).numpy()
        expected = dense_kkt_solution(hessian, (alpha[b] > 0).numpy(), rhs[b].flatten().numpy())
        np.testing.assert_allclose(u[b].flatten().numpy(), expected, atol=1e-10, rtol=1e-9)
    if ratio == 0:  # the Gram matrix given: the same system
        u_gram = solve_on_face(reduced_dual_hessian(x, None, solver, face, x @ x.mT), face, rhs)
        torch.testing.assert_close(u_gram, u, atol=1e-12, rtol=0)
