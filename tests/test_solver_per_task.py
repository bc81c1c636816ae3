"""One group-lasso weight per task in one batched solve (what GroupLassoSVMHead(lambda1_ratio=...) uses)."""

from __future__ import annotations

import pytest
import torch

from metasparse.heads import GroupLassoSVMHead
from metasparse.solvers import GroupLassoSVM, svm_lambda1_max
from metasparse.tasks import random_episodes


@pytest.mark.parametrize("dim", [16, 700])  # the full problem, and a working set of features
def test_per_task_lambda1_equals_one_solve_per_task(dim):
    support, labels, query, _ = random_episodes(4, 5, 3, 2, dim, seed=dim, dtype=torch.float64)
    onehot = torch.nn.functional.one_hot(labels, 5).double()
    lambda1 = svm_lambda1_max(support, onehot, 10.0, 1.0) * torch.tensor([0.05, 0.2, 0.6, 1.5])
    solver = GroupLassoSVM(lambda2=10.0, dual_reg=1.0, tol=1e-8)

    x = support.clone().requires_grad_(True)
    batched, info = solver.for_tasks(lambda1).solve(x, onehot)
    (query @ batched).square().sum().backward()
    for task in range(4):
        xt = support[task:task + 1].clone().requires_grad_(True)
        single, _ = GroupLassoSVM(float(lambda1[task]), 10.0, 1.0, tol=1e-8).solve(xt, onehot[task:task + 1])
        (query[task:task + 1] @ single).square().sum().backward()
        assert torch.allclose(batched[task], single[0], rtol=1e-6, atol=1e-9), task
        assert torch.allclose(x.grad[task], xt.grad[0], rtol=1e-5, atol=1e-8), task
    assert bool(info.converged.all())
    assert float(info.sparsity[0]) < float(info.sparsity[2]) < 1 == float(info.sparsity[3])  # 1.5: W = 0
    assert solver.lambda1 == 0.1  # the solver itself is unchanged


def test_ratio_head_makes_one_batched_solve_that_matches_the_absolute_heads():
    support, labels, query, _ = random_episodes(3, 5, 2, 3, 32, seed=4, dtype=torch.float64)
    ratio = GroupLassoSVMHead(lambda1_ratio=0.4, tol=1e-9)
    logits = ratio(query, support, labels, 5)
    maxima = ratio.lambda1_max(support, labels, 5)
    for task in range(3):
        absolute = GroupLassoSVMHead(lambda1=0.4 * float(maxima[task]), tol=1e-9)
        expected = absolute(query[task], support[task], labels[task], 5)
        assert torch.allclose(logits[task], expected, rtol=1e-6, atol=1e-9)


def test_per_task_lambda1_is_checked():
    with pytest.raises(ValueError, match="lambda1 per task"):
        GroupLassoSVM().for_tasks(torch.tensor([0.1, -1.0]))
    with pytest.raises(ValueError, match="lambda1 per task"):
        GroupLassoSVM().for_tasks(torch.tensor([[0.1]]))
