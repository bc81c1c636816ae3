"""The lasso head: native and cvxpylayers backends against an independent cvxpy reference, implicit
gradients in features and targets against finite differences, lambda_max and edge cases."""

import pytest
import torch
from helpers import directional_fd, reference_regression_weights, relative_error

from metasparse.heads import LassoHead
from metasparse.solvers import GroupLasso, group_lasso_lambda_max

TIGHT = {"max_iter": 100_000, "tol": 1e-13}


def regression_tasks(batch, n, d, k=None, seed=0):
    """Targets driven by 3 of the d features, with noise; (B, n) targets when k is None."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, n, d, generator=generator, dtype=torch.float64)
    true = torch.zeros(batch, d, k or 1, dtype=torch.float64)
    true[:, :3] = torch.randn(batch, 3, k or 1, generator=generator, dtype=torch.float64)
    targets = features @ true + 0.1 * torch.randn(batch, n, k or 1, generator=generator, dtype=torch.float64)
    return features, targets[..., 0] if k is None else targets


@pytest.mark.parametrize("k", [None, 3])
@pytest.mark.parametrize("solver", ["native", "cvxpylayers"])
def test_solution_matches_cvxpy_reference(solver, k):
    features, targets = regression_tasks(3, 20, 10, k, seed=1)
    head = LassoHead(0.2, solver=solver, **(TIGHT if solver == "native" else {}))  # SCS reaches ~1e-9
    weights = head.solve(features, targets)
    targets3 = targets[..., None] if k is None else targets
    lam = 0.2 * group_lasso_lambda_max(features, targets3)
    reference = reference_regression_weights(features, targets3, lam)
    assert relative_error(weights, reference[..., 0] if k is None else reference) < 1e-4
    assert bool(head.last_info.converged.all())
    if solver == "native":
        assert head.last_info.active.tolist() == (abs(reference).max(-1) > 1e-6).sum(-1).tolist()


@pytest.mark.parametrize("k", [1, 3])
def test_native_gradient_matches_finite_differences(k):
    features, targets = regression_tasks(2, 15, 8, k, seed=2)
    lam = 0.25 * group_lasso_lambda_max(features, targets)  # held fixed: the solution map's derivative
    query = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    solver = GroupLasso(**TIGHT)

    def loss(x, y):
        weights, info = solver.solve(x, y, lam)
        assert int(info.active.max()) < 8, "the solution must be sparse"
        return ((query @ weights) ** 2).sum()

    x, y = features.clone().requires_grad_(True), targets.clone().requires_grad_(True)
    loss(x, y).backward()
    for seed in range(2):
        gen = torch.Generator().manual_seed(seed)
        dx = torch.randn(features.shape, generator=gen, dtype=torch.float64)
        dy = torch.randn(targets.shape, generator=gen, dtype=torch.float64)
        analytic = float((x.grad * dx).sum() + (y.grad * dy).sum())
        numeric = directional_fd(loss, (features, targets), (dx, dy))
        assert abs(analytic - numeric) <= 1e-3 * abs(analytic) + 1e-9


def test_head_takes_lambda_max_without_gradient():
    features, targets = regression_tasks(2, 15, 8, seed=10)
    x = features.clone().requires_grad_(True)
    LassoHead(0.25, **TIGHT).solve(x, targets).pow(2).sum().backward()
    lam = 0.25 * group_lasso_lambda_max(features, targets[..., None])
    x_fixed = features.clone().requires_grad_(True)
    GroupLasso(**TIGHT).solve(x_fixed, targets[..., None], lam)[0].pow(2).sum().backward()
    torch.testing.assert_close(x.grad, x_fixed.grad)


def test_cvxpylayers_gradient_agrees_with_native():
    features, targets = regression_tasks(2, 15, 8, seed=4)
    grads = {}
    for solver, tol in (("native", TIGHT["tol"]), ("cvxpylayers", 1e-8)):  # SCS reaches about 1e-10
        x = features.clone().requires_grad_(True)
        head = LassoHead(0.3, solver=solver, max_iter=TIGHT["max_iter"], tol=tol)
        head.solve(x, targets).pow(2).sum().backward()
        assert bool(head.last_info.converged.all())
        grads[solver] = x.grad
    assert relative_error(grads["cvxpylayers"], grads["native"]) < 1e-3


def test_lambda_max_is_the_threshold_of_the_zero_solution():
    features, targets = regression_tasks(3, 20, 10, 2, seed=5)
    assert bool((LassoHead(1.0).solve(features, targets) == 0).all())
    below = LassoHead(0.99, **TIGHT).solve(features, targets)
    assert bool((below.abs().sum(dim=(1, 2)) > 0).all())


def test_ratio_above_one_gives_zero_weights_and_zero_gradient():
    features, targets = regression_tasks(2, 12, 6, seed=6)
    x, y = features.clone().requires_grad_(True), targets.clone().requires_grad_(True)
    head = LassoHead(1.5)
    head(torch.randn(2, 4, 6, dtype=torch.float64), x, y).sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x)) and torch.equal(y.grad, torch.zeros_like(y))
    assert bool((head.last_info.sparsity == 1).all()) and bool(head.last_info.converged.all())


def test_duplicate_and_zero_features_stay_finite():
    features, targets = regression_tasks(1, 12, 5, seed=7)
    features = torch.cat([features, features[..., :1], torch.zeros_like(features[..., :1])], dim=-1)
    x = features.clone().requires_grad_(True)
    head = LassoHead(0.1)
    weights = head.solve(x, targets)
    weights.sum().backward()
    assert bool(torch.isfinite(weights).all() and torch.isfinite(x.grad).all())
    assert weights[0, -1] == 0


def test_warm_start_and_fixed_iterations():
    features, targets = regression_tasks(2, 20, 10, seed=8)
    targets = targets[..., None]
    lam = 0.2 * group_lasso_lambda_max(features, targets)
    exact, _ = GroupLasso(**TIGHT).solve(features, targets, lam)
    _, info = GroupLasso(max_iter=3, tol=None).solve(features, targets, lam)
    assert info.fixed_iterations and info.iterations.tolist() == [3, 3] and not bool(info.converged.any())
    warm, warm_info = GroupLasso(tol=1e-10).solve(features, targets, lam, init=exact)
    assert warm_info.iterations.tolist() == [10, 10]  # converged at the first check
    torch.testing.assert_close(warm, exact)


def test_shapes_unbatched_and_fit_forward():
    features, targets = regression_tasks(1, 20, 6, seed=9)
    head = LassoHead(0.3)
    w = head.solve(features[0], targets[0])
    assert w.shape == (6,)
    query = torch.randn(4, 6, dtype=torch.float64)
    assert head(query, features[0], targets[0]).shape == (4,)
    torch.testing.assert_close(head.fit_(features[0], targets[0])(query), query @ w)
    assert head(query, features[0], torch.stack([targets[0]] * 2, -1)).shape == (4, 2)


@pytest.mark.parametrize(("args", "match"), [
    ((torch.randn(5, 3), torch.randn(4)), r"targets must have shape \(5,\)"),
    ((torch.randn(2, 5, 3), torch.randn(2, 5).long()), "targets must be a floating-point tensor"),
    ((torch.full((5, 3), float("nan")), torch.randn(5)), "features must be finite"),
    ((torch.randn(5, 3), torch.full((5,), float("inf"))), "targets must be finite"),
    ((torch.randn(5), torch.randn(5)), r"features must have shape \(n, d\) or \(B, n, d\)"),
])
def test_bad_input_names_the_argument(args, match):
    with pytest.raises(ValueError, match=match):
        LassoHead().solve(*args)


def test_bad_options_are_rejected_by_name():
    with pytest.raises(ValueError, match="lambda_ratio must be > 0"):
        LassoHead(0.0)
    with pytest.raises(ValueError, match="solver must be one of"):
        LassoHead(solver="sklearn")
