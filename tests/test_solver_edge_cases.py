"""Degenerate but legal inputs, feature scale and gradients of unconverged solves, at the solver level."""

import pytest
import torch
from helpers import directional_fd, episode, relative_error

from metasparse.solvers import GroupLasso, GroupLassoSVM, group_lasso_lambda_max
from metasparse.solvers.svm_objective import svm_zero_solution


def onehot_of(labels: torch.Tensor, n_way: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, n_way).double()


@pytest.mark.parametrize("lambda1", [0.0, 0.5])
def test_one_class_is_answered_at_once(lambda1):
    support, labels = episode(2, 1, 4, 10, seed=1)
    weights, info = GroupLassoSVM(lambda1, max_iter=1000).solve(support, onehot_of(labels, 1))
    assert bool((weights == 0).all())
    assert info.iterations.tolist() == [0, 0] and bool(info.converged.all())
    assert info.residual.tolist() == [0.0, 0.0]


@pytest.mark.parametrize("lambda1", [0.0, 0.5])
def test_all_zero_features_are_answered_at_once_with_the_exact_dual(lambda1):
    support, labels = episode(2, 5, 3, 10, seed=2)
    support[1] = 0
    onehot = onehot_of(labels, 5)
    solver = GroupLassoSVM(lambda1, 10.0, 1.0, tol=1e-12, max_iter=100_000)
    alpha, info = solver.solve_dual(support, onehot)
    assert int(info.iterations[1]) == 0 and bool(info.converged[1])
    assert float(info.residual[1]) == 0.0
    assert torch.equal(alpha[1], svm_zero_solution(onehot, 10.0, 1.0)[1])
    # the zero solution is optimal: the iterative solve of the other task agrees with it being exact
    tight, _ = GroupLassoSVM(lambda1, 10.0, 1.0, tol=1e-12, max_iter=100_000).solve_dual(support[1:] + 1e-300,
                                                                                         onehot[1:])
    assert relative_error(tight[0], alpha[1]) < 1e-10


def test_zero_features_keep_the_gradient_of_the_svm():
    # with lambda1 = 0 the weights X^T (Y - alpha*) / lambda2 have a non-zero derivative at X = 0
    support, labels = episode(1, 3, 2, 4, seed=3)
    onehot = onehot_of(labels, 3)
    solver = GroupLassoSVM(0.0, 10.0, 1.0, tol=1e-12, max_iter=100_000)
    direction = torch.randn(support.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    weighting = torch.randn(1, 4, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def loss(x):
        return (solver.solve(x, onehot)[0] * weighting).sum()

    zero = torch.zeros_like(support).requires_grad_(True)
    loss(zero).backward()
    analytic = float((zero.grad * direction).sum())
    assert abs(analytic) > 1e-3
    assert abs(analytic - directional_fd(loss, (torch.zeros_like(support),), (direction,))) < 1e-6


def test_all_zero_targets_and_features_in_the_lasso_are_answered_at_once():
    features = torch.randn(3, 20, 8, dtype=torch.float64)
    targets = features[..., :1].clone()
    targets[0] = 0
    features[1] = 0
    lam = 0.3 * group_lasso_lambda_max(features, targets)
    weights, info = GroupLasso(max_iter=1000).solve(features, targets, lam)
    assert bool((weights[:2] == 0).all()) and bool(info.converged.all())
    assert info.iterations[:2].tolist() == [0, 0] and info.residual[:2].tolist() == [0.0, 0.0]
    assert bool(torch.isfinite(info.residual).all()) and int(info.iterations[2]) > 0


# the group lasso at 10 and the SVM at 1e4 do not converge within max_iter even in float64 (the dual's
# condition number grows like the square of the scale): they are reported unconverged, not wrong
# d = 400: a working set, whose float32 features are screened in float32 (metasparse.solvers.svm_features)
@pytest.mark.parametrize(("scale", "lambda1_ratio", "dim"), [
    (1e-3, 0.0, 64), (1.0, 0.0, 64), (1e2, 0.0, 64), (1e3, 0.0, 64), (1e-3, 0.3, 64), (1.0, 0.3, 64),
    (1e-3, 0.3, 400), (1.0, 0.3, 400)])
def test_float32_logits_agree_with_float64_at_every_feature_scale(scale, lambda1_ratio, dim):
    from metasparse.solvers import svm_lambda1_max
    from metasparse.tasks import random_episodes

    support, labels, query, _ = random_episodes(2, 5, 5, 3, dim, seed=5, dtype=torch.float64)
    support, query = support * scale, query * scale
    onehot = onehot_of(labels, 5)
    lambda1 = lambda1_ratio * float(svm_lambda1_max(support, onehot, 10.0, 1.0).min())
    solver = GroupLassoSVM(lambda1, 10.0, 1.0)
    logits64 = query @ solver.solve(support, onehot)[0]
    weights32, info = solver.solve(support.float(), onehot.float())
    logits32 = query.float() @ weights32
    assert bool(info.converged.all()) and weights32.dtype == torch.float32
    assert float((logits32.double() - logits64).abs().max() / logits64.abs().max()) < 1e-3


def test_unconverged_lasso_with_more_active_features_than_samples_has_gradients_of_the_right_order():
    # an early stop leaves more active features than samples: the Hessian of the optimality conditions
    # is singular there (the gradient used to be ~1e10; converged ~1)
    generator = torch.Generator().manual_seed(6)
    features = torch.randn(4, 20, 100, generator=generator, dtype=torch.float64)
    targets = features[..., :5].sum(-1, keepdim=True) + 0.1 * torch.randn(4, 20, 1, generator=generator,
                                                                           dtype=torch.float64)
    lam = 0.05 * group_lasso_lambda_max(features, targets)

    def gradient(solver):
        x = features.clone().requires_grad_(True)
        weights, info = solver.solve(x, targets, lam)
        (weights**2).sum().backward()
        return x.grad, info

    early, early_info = gradient(GroupLasso(max_iter=20))
    exact, exact_info = gradient(GroupLasso(max_iter=100_000, tol=1e-10))
    assert bool((early_info.active > 20).all()) and not bool(early_info.gradient_trusted.any())
    assert bool(exact_info.gradient_trusted.all())
    assert bool(torch.isfinite(early).all())
    assert float(early.norm()) < 10 * float(exact.norm())
