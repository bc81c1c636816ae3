"""Proximal operators against their closed forms and defining optimality conditions."""

import pytest
import torch

from metasparse.solvers.prox import block_soft_threshold, project_simplex, soft_threshold


def test_soft_threshold_matches_closed_form():
    x = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0], dtype=torch.float64)
    expected = torch.tensor([-2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(soft_threshold(x, 1.0), expected)


def test_block_soft_threshold_is_the_prox_of_the_group_norm():
    torch.manual_seed(0)
    v = torch.randn(2, 30, 4, dtype=torch.float64)
    t = 1.5
    out = block_soft_threshold(v, t)
    norms = v.norm(dim=-1)
    # closed form: shrink each row towards 0 by t, zero when its norm is at most t
    expected = torch.where((norms > t)[..., None], v * (1 - t / norms)[..., None], torch.zeros_like(v))
    torch.testing.assert_close(out, expected)
    assert (out.norm(dim=-1) == 0).sum() == (norms <= t).sum() > 0
    # optimality: v - out lies in t * subdifferential of the row norm
    diff = v - out
    active = norms > t
    torch.testing.assert_close(diff[active], t * out[active] / out[active].norm(dim=-1, keepdim=True))
    assert bool((diff[~active].norm(dim=-1) <= t + 1e-12).all())


def test_block_soft_threshold_of_zero_rows_has_zero_gradient():
    v = torch.zeros(3, 2, dtype=torch.float64, requires_grad=True)
    block_soft_threshold(v, 0.5).sum().backward()
    assert torch.equal(v.grad, torch.zeros_like(v))


@pytest.mark.parametrize("k", [1, 2, 5, 17])
def test_project_simplex_satisfies_kkt(k):
    torch.manual_seed(k)
    v = 3 * torch.randn(50, k, dtype=torch.float64)
    a = project_simplex(v)
    assert bool((a >= 0).all())
    torch.testing.assert_close(a.sum(-1), torch.ones(50, dtype=torch.float64))
    # KKT of min ||a - v||^2 on the simplex: v - a = tau on the support, <= tau off it
    tau = (v - a).masked_fill(a == 0, float("-inf")).amax(-1, keepdim=True)
    on = a > 0
    torch.testing.assert_close((v - a)[on], tau.expand_as(a)[on])
    assert bool(((v - a)[~on] <= tau.expand_as(a)[~on] + 1e-12).all())


def test_project_simplex_against_cvxpy():
    import cvxpy as cp

    torch.manual_seed(1)
    v = torch.randn(6, dtype=torch.float64)
    a = cp.Variable(6)
    cp.Problem(cp.Minimize(cp.sum_squares(a - v.numpy())), [a >= 0, cp.sum(a) == 1]).solve(
        solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    torch.testing.assert_close(project_simplex(v), torch.from_numpy(a.value), atol=1e-8, rtol=0)
