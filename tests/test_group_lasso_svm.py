"""The group-lasso SVM head: native and cvxpylayers backends against an independent cvxpy reference,
implicit gradients against finite differences, and MetaOptNet's SVM as the lambda1 = 0 case."""

import warnings

import numpy as np
import pytest
import torch
from helpers import CLARABEL_TIGHT, directional_fd, episode, reference_svm_weights, relative_error

from metasparse.heads import GroupLassoSVMHead, SVMHead
from metasparse.solvers import ConvergenceWarning
from metasparse.solvers.group_lasso_svm import (
    GroupLassoSVM,
    svm_dual_objective,
    svm_lambda1_max,
    svm_primal_objective,
    svm_primal_weights,
    svm_relative_gap,
)
from metasparse.solvers.prox import project_simplex
from metasparse.solvers.svm_dual import DualProblem
from metasparse.solvers.svm_implicit import dual_residual_with_implicit_gradient, kernel_vjp
from metasparse.solvers.svm_objective import feature_correlation, smoothed_hinge, weights_from_dual_residual

# (lambda1, lambda2, dual_reg): MetaOptNet-SVM, a mild and a strongly sparse group lasso, the paper's lambda2
SETTINGS = [(0.0, 10.0, 1.0), (1.0, 10.0, 1.0), (3.0, 1.0, 0.5), (2.0, 1000.0, 1.0)]
TIGHT = {"max_iter": 100_000, "tol": 1e-12}


@pytest.mark.parametrize(("lambda1", "lambda2", "dual_reg"), SETTINGS)
def test_native_solution_matches_cvxpy_reference(lambda1, lambda2, dual_reg):
    support, labels = episode(3, 5, 3, 12, seed=1)
    head = GroupLassoSVMHead(lambda1, lambda2, dual_reg, **TIGHT)
    weights = head.solve(support, labels, 5)
    reference = reference_svm_weights(support, labels, 5, lambda1, lambda2, dual_reg)
    assert relative_error(weights, reference) < 1e-4
    ref_norms = np.linalg.norm(reference, axis=-1)
    ref_active = (ref_norms > 1e-6 * ref_norms.max(axis=-1, keepdims=True)).sum(-1)
    assert head.last_info.active.tolist() == ref_active.tolist()
    assert bool(head.last_info.converged.all())


def backbone_like_episodes(shots: int, d: int, tasks: list[int]) -> tuple[torch.Tensor, ...]:
    """Tasks of the benchmark's meta-batch (ReLU features, 5-way, 15 queries) in float64, and its lambda1
    (0.3 x the median lambda1_max of the batch)."""
    from metasparse.tasks import random_episodes

    support, labels, query, _ = random_episodes(8, 5, shots, 15, d, seed=shots * 100_000 + d)
    onehot = torch.nn.functional.one_hot(labels, 5).float()
    lambda1 = 0.3 * float(svm_lambda1_max(support, onehot, 10.0, 1.0).median())
    return support[tasks].double(), labels[tasks], query[tasks].double(), lambda1


@pytest.mark.parametrize("ratio", [0.5, 0.02])
def test_working_set_solution_matches_reference_when_d_is_large(ratio):
    support, labels = episode(2, 5, 2, 300, seed=16)
    support = torch.relu(support)  # backbone-like features, the ill-conditioned case
    onehot = torch.nn.functional.one_hot(labels, 5).double()
    lambda1 = ratio * float(svm_lambda1_max(support, onehot, 10.0, 1.0).min())
    head = GroupLassoSVMHead(lambda1, 10.0, 1.0, **TIGHT)
    weights = head.solve(support, labels, 5)
    active = head.last_info.active
    assert bool((active < 300).all()) and (ratio > 0.1 or bool((active > 64).all())), active
    assert relative_error(weights, reference_svm_weights(support, labels, 5, lambda1, 10.0, 1.0)) < 1e-4


def test_newton_steps_solve_the_ill_conditioned_svm_dual():
    # ReLU features with d = 16000 and 15 shots: the kernel's condition number is about 5e5
    from metasparse.tasks import random_episodes

    support, labels, _, _ = random_episodes(2, 5, 15, 1, 16000, seed=1_516_000)
    onehot = torch.nn.functional.one_hot(labels, 5).float()
    _, with_newton = GroupLassoSVM(0.0, 10.0, 1.0, max_iter=60, tol=1e-4).solve(support, onehot)
    fista_only_solver = GroupLassoSVM(0.0, 10.0, 1.0, max_iter=60, tol=1e-4, newton=False)
    _, fista_only = fista_only_solver.solve(support, onehot)
    assert bool(with_newton.converged.all()) and float(with_newton.residual.max()) <= 1e-4
    assert not bool(fista_only.converged.any())


@pytest.mark.parametrize("shots", [1, 2])
def test_a_small_dual_is_finished_by_the_polish_within_max_iter(shots):
    # 5-way, d = 640: the first-order solve stops at POLISH_FINISHES_FROM x tol (2 shots) or
    # POLISH_FINISHES_TINY_FROM x tol (1 shot, a tiny dual, whose last round leaves its violators to the
    # polish), and the Newton polish takes every task below tol, its steps counted as iterations and kept
    # within max_iter
    from metasparse.solvers.svm_features import SupportFeatures
    from metasparse.solvers.svm_polish import (
        POLISH_FINISHES_FROM,
        POLISH_FINISHES_TINY_FROM,
        POLISH_SETTLED,
        first_order_tol,
        violators_to_polish,
    )
    from metasparse.solvers.svm_working_set import first_order_solve
    from metasparse.tasks import random_episodes

    support, labels, _, _ = random_episodes(4, 5, shots, 1, 640, seed=8, dtype=torch.float64)
    onehot = torch.nn.functional.one_hot(labels, 5).double()
    solver = GroupLassoSVM(0.3 * float(svm_lambda1_max(support, onehot, 10.0, 1.0).median()), 10.0, 1.0)
    tiny = shots == 1
    factor = POLISH_FINISHES_TINY_FROM if tiny else POLISH_FINISHES_FROM
    assert first_order_tol(solver, onehot) == factor * solver.tol
    assert violators_to_polish(solver, onehot) == tiny

    def first_order(to_polish):
        return first_order_solve(solver, SupportFeatures(support), onehot, torch.full_like(onehot, 0.2),
                                 first_order_tol(solver, onehot), violators_to_polish=to_polish)

    first = first_order(tiny)
    assert bool(first.converged.all()) and float(first.residual.max()) > solver.tol  # the polish's to do
    if tiny:  # the violators of the first round are left to the polish: no second round
        assert int(first.iterations.max()) < int(first_order(False).iterations.max())
    alpha, info = solver.solve_dual(support, onehot)
    assert bool(info.converged.all()) and float(info.residual.max()) <= POLISH_SETTLED
    assert bool((info.iterations > first.iterations).all())  # the Newton steps count
    exact, _ = GroupLassoSVM(solver.lambda1, 10.0, 1.0, **TIGHT).solve_dual(support, onehot)
    torch.testing.assert_close(alpha, exact, rtol=0, atol=1e-8)
    assert float((first.solution - exact).abs().max()) > 1e-5
    # a budget that ends where the first-order solve of a task above tol does leaves no iteration to
    # take it to tol: not converged, whatever the polish and its refinement reach
    task = int(first.residual.argmax())
    capped = GroupLassoSVM(solver.lambda1, 10.0, 1.0, max_iter=int(first.iterations[task]))
    _, short = capped.solve_dual(support, onehot)
    assert not bool(short.converged[task]) and int(short.iterations[task]) == capped.max_iter
    assert bool((short.residual[short.converged] <= solver.tol).all())


def test_working_set_converges_on_backbone_sized_features_within_max_iter():
    # 15-shot, d = 16000 ReLU features, lambda1 = 0.3 lambda1_max: the tasks of the benchmark batch that
    # missed tol=1e-4 in 1000 iterations when every working-set round was solved to tol
    support, labels, _, lambda1 = backbone_like_episodes(15, 16000, [2, 5, 7])
    onehot = torch.nn.functional.one_hot(labels, 5).double()
    _, info = GroupLassoSVM(lambda1, 10.0, 1.0).solve_dual(support, onehot)
    assert bool(info.converged.all()) and float(info.residual.max()) <= 1e-4, info.summary()
    assert bool((info.iterations < 1000).all()) and bool((info.active < 200).all())


@pytest.mark.parametrize("eps", [0.0, 0.1, 1.0])
def test_smoothed_hinge_is_the_moreau_envelope_of_the_crammer_singer_hinge(eps):
    """`smoothed_hinge` against min_z hinge(z) + ||s - z||^2 / (2 eps) solved by cvxpy (the plain hinge at
    eps = 0), the smoothing of the cvxpy problems."""
    import cvxpy as cp

    scores = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    onehot = torch.nn.functional.one_hot(torch.tensor([[0, 1, 2, 1], [2, 2, 0, 1]]), 3).double()
    expected = []
    for s, y in zip(scores.numpy(), onehot.numpy(), strict=True):
        z = cp.Variable(s.shape)
        hinge = cp.sum(cp.max(z + 1 - y, axis=1) - cp.sum(cp.multiply(y, z), axis=1))
        if eps == 0:
            problem = cp.Problem(cp.Minimize(hinge), [z == s])
        else:
            problem = cp.Problem(cp.Minimize(hinge + cp.sum_squares(s - z) / (2 * eps)))
        problem.solve(solver=cp.CLARABEL, **CLARABEL_TIGHT)
        expected.append(problem.value)
    expected = torch.tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(smoothed_hinge(scores, onehot, eps), expected, rtol=1e-7, atol=1e-8)


def test_strong_duality_holds_at_the_solution():
    support, labels = episode(2, 5, 2, 10, seed=2)
    onehot = torch.nn.functional.one_hot(labels, 5).double()
    solver = GroupLassoSVM(2.0, 1.0, 0.5, **TIGHT)
    alpha, info = solver.solve_dual(support, onehot)
    weights, _ = solver.solve(support, onehot)
    primal = svm_primal_objective(weights, support, onehot, 2.0, 1.0, 0.5)
    dual = svm_dual_objective(alpha, support, onehot, 2.0, 1.0, 0.5)
    torch.testing.assert_close(primal, support.shape[1] - dual, rtol=1e-10, atol=0)
    assert float(info.residual.max()) < 1e-10


def test_svm_gap_through_the_gram_matrix_is_the_gap_through_the_weights():
    support, labels = episode(3, 5, 3, 40, seed=4)
    onehot = torch.nn.functional.one_hot(labels, 5).double()
    generator = torch.Generator().manual_seed(1)
    for lambda2, dual_reg in [(10.0, 1.0), (1.0, 0.5)]:
        solver = GroupLassoSVM(0.0, lambda2, dual_reg)
        random = project_simplex(torch.randn(onehot.shape, generator=generator, dtype=torch.float64))
        for alpha in (torch.full_like(onehot, 0.2), random, solver.solve_dual(support, onehot)[0]):
            weights = support.transpose(1, 2) @ (onehot - alpha) / lambda2
            primal = svm_primal_objective(weights, support, onehot, 0.0, lambda2, dual_reg)
            dual = svm_dual_objective(alpha, support, onehot, 0.0, lambda2, dual_reg)
            expected = (primal + dual - support.shape[1]) / primal
            torch.testing.assert_close(DualProblem(solver, support, onehot).gap(alpha), expected,
                                       rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("lambda1", [0.0, 2.0, torch.tensor([0.5, 2.0, 0.0, 4.0])])
def test_dual_problem_gradient_objective_and_gap_match_the_reference_functions(lambda1):
    """The class-major products of `DualProblem` against autograd of `svm_dual_objective` and against
    `svm_relative_gap`, for one point per task and for stacked points (B, n, F, K), and its fused
    gradient step against the gradient."""
    support, labels = episode(4, 5, 3, 30, seed=8)
    onehot = torch.nn.functional.one_hot(labels, 5).double()
    solver = GroupLassoSVM(1.0, 10.0, 1.0).for_tasks(lambda1) if isinstance(lambda1, torch.Tensor) \
        else GroupLassoSVM(lambda1, 10.0, 1.0)
    problem = DualProblem(solver, support, onehot)
    points = project_simplex(torch.randn(4, 15, 3, 5, generator=torch.Generator().manual_seed(5),
                                         dtype=torch.float64))
    task_lambda1 = [float(lambda1[b]) if isinstance(lambda1, torch.Tensor) else lambda1 for b in range(4)]
    for f in range(points.shape[2]):
        alpha = points[:, :, f].clone().requires_grad_(True)
        task = [(support[b:b + 1], onehot[b:b + 1], alpha[b:b + 1], task_lambda1[b]) for b in range(4)]
        dual = torch.cat([svm_dual_objective(a, x, y, lam, 10.0, 1.0) for x, y, a, lam in task])
        (gradient,) = torch.autograd.grad(dual.sum(), alpha)
        gap = torch.cat([svm_relative_gap(svm_primal_weights(x, y, a, lam, 10.0), a, x, y, lam, 10.0, 1.0)
                         for x, y, a, lam in task]).detach()
        torch.testing.assert_close(problem.gradient(points[:, :, f]), gradient, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(problem.gradient(points)[:, :, f], gradient, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(problem.gradient_step(points[:, :, f]),
                                   points[:, :, f] - gradient / problem.lipschitz[:, None, None],
                                   rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(problem.dual(points[:, :, f]), dual.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(problem.dual(points)[:, f], dual.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(problem.gap(points[:, :, f]), gap, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("lambda1", [0.0, 2.0, torch.tensor([0.5, 2.0, 0.0, 4.0])])
def test_newton_step_on_some_tasks_is_the_step_of_those_tasks_alone(lambda1):
    support, labels = episode(4, 5, 3, 30, seed=6)
    onehot = torch.nn.functional.one_hot(labels, 5).double()
    solver = GroupLassoSVM(1.0, 10.0, 1.0).for_tasks(lambda1) if isinstance(lambda1, torch.Tensor) \
        else GroupLassoSVM(lambda1, 10.0, 1.0)
    alpha = project_simplex(torch.randn(onehot.shape, generator=torch.Generator().manual_seed(3),
                                        dtype=torch.float64))
    tasks = torch.tensor([True, False, True, False])
    moved = DualProblem(solver, support, onehot).newton_step(alpha, tasks)
    index = tasks.nonzero()[:, 0]
    alone = solver.for_tasks(lambda1[index]) if isinstance(lambda1, torch.Tensor) else solver
    expected = DualProblem(alone, support[index], onehot[index]).newton_step(alpha[index], tasks[index])
    torch.testing.assert_close(moved[index], expected, rtol=0, atol=1e-14)
    assert bool((moved[~tasks] == alpha[~tasks]).all())
    assert bool((moved[index] != alpha[index]).any())  # the step moved the chosen tasks


def test_sparsity_grows_with_lambda1():
    support, labels = episode(4, 5, 5, 40, seed=3)
    sparsity = []
    for lambda1 in (0.0, 1.0, 4.0, 8.0):
        head = GroupLassoSVMHead(lambda1, 1.0, 1.0)
        head.solve(support, labels, 5)
        sparsity.append(float(head.last_info.sparsity.mean()))
    assert sparsity[0] == 0.0
    assert sparsity == sorted(sparsity) and sparsity[-1] > 0.5


@pytest.mark.parametrize(("lambda1", "lambda2", "dual_reg"), SETTINGS)
def test_native_gradient_matches_finite_differences(lambda1, lambda2, dual_reg):
    support, labels = episode(2, 5, 2, 8, seed=4)
    generator = torch.Generator().manual_seed(5)
    query = torch.randn(2, 7, 8, generator=generator, dtype=torch.float64)
    head = GroupLassoSVMHead(lambda1, lambda2, dual_reg, learn_scale=False, **TIGHT)

    def loss(x):
        return torch.nn.functional.cross_entropy(head(query, x, labels, 5).flatten(0, 1),
                                                 torch.arange(7).repeat(2) % 5)

    x = support.clone().requires_grad_(True)
    loss(x).backward()
    if lambda1 == 3.0:
        assert int(head.last_info.active.min()) < 8, "this setting must exercise a sparse solution"
    for seed in range(2):
        direction = torch.randn(support.shape, generator=torch.Generator().manual_seed(seed),
                                dtype=torch.float64)
        analytic = float((x.grad * direction).sum())
        assert abs(analytic - directional_fd(loss, (support,), (direction,))) <= 1e-3 * abs(analytic) + 1e-9


def test_native_gradient_matches_finite_differences_on_a_working_set():
    support, labels = episode(2, 5, 3, 120, seed=17)
    support = torch.relu(support)
    onehot = torch.nn.functional.one_hot(labels, 5).double()
    lambda1 = 0.2 * float(svm_lambda1_max(support, onehot, 10.0, 1.0).min())
    generator = torch.Generator().manual_seed(18)
    query = torch.relu(torch.randn(2, 6, 120, generator=generator, dtype=torch.float64))
    head = GroupLassoSVMHead(lambda1, 10.0, 1.0, learn_scale=False, **TIGHT)

    def loss(x):
        return head(query, x, labels, 5).logsumexp(-1).sum()

    x = support.clone().requires_grad_(True)
    loss(x).backward()
    assert 0 < int(head.last_info.active.max()) < 120
    direction = torch.randn(support.shape, generator=torch.Generator().manual_seed(19), dtype=torch.float64)
    analytic = float((x.grad * direction).sum())
    assert abs(analytic - directional_fd(loss, (support,), (direction,))) <= 1e-3 * abs(analytic)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_weights_through_the_active_columns_are_the_ones_through_all_features(dtype):
    # solve() computes W(alpha*) and its implicit gradient on the active columns only; the reference
    # takes both through all d features
    support, labels = episode(3, 4, 3, 90, seed=23)
    support = torch.relu(support).to(dtype)
    onehot = torch.nn.functional.one_hot(labels, 4).to(dtype)
    lambda1 = 0.3 * float(svm_lambda1_max(support.double(), onehot.double(), 10.0, 1.0).min())
    solver = GroupLassoSVM(lambda1, 10.0, 1.0, **TIGHT)
    direction = torch.randn(3, 90, 4, generator=torch.Generator().manual_seed(24), dtype=dtype)
    x = support.clone().requires_grad_(True)
    weights, _ = solver.solve(x, onehot)
    (weights * direction).sum().backward()
    alpha, _ = solver.solve_dual(support, onehot)
    x_all = support.clone().requires_grad_(True)
    residual = dual_residual_with_implicit_gradient(x_all, onehot, alpha.double(), solver)
    reference = weights_from_dual_residual(x_all, residual, lambda1, 10.0)
    (reference * direction).sum().backward()
    active = int((weights.detach().abs().amax(-1) > 0).sum(-1).max())
    assert 0 < active < 90
    assert float(x.grad.abs().max()) > 0
    tolerance = {"atol": 1e-12, "rtol": 1e-10} if dtype == torch.float64 else {"atol": 1e-6, "rtol": 1e-5}
    torch.testing.assert_close(weights.detach(), reference.detach(), **tolerance)
    torch.testing.assert_close(x.grad, x_all.grad, **tolerance)


@pytest.mark.parametrize("lambda1", [0.0, 4.0, torch.tensor([0.0, 4.0, 6.0])])
def test_kernel_vjp_is_the_autograd_derivative_of_the_kernel_term(lambda1):
    """The closed-form derivative of <X BST(X^T R), U> in X against autograd through BST, in float64,
    with active and inactive features in every task whose lambda1 is > 0."""
    generator = torch.Generator().manual_seed(11)
    x, residual, direction = (torch.randn(3, 6, *shape, generator=generator, dtype=torch.float64)
                              for shape in ((40,), (4,), (4,)))
    correlation = feature_correlation(x, residual)
    norms = correlation.norm(dim=-1)
    for task in range(3):
        threshold = float(lambda1[task]) if isinstance(lambda1, torch.Tensor) else lambda1
        if threshold > 0:
            assert 0 < int((norms[task] > threshold).sum()) < 40
    x_autograd = x.clone().requires_grad_(True)
    kernel = x_autograd @ weights_from_dual_residual(x_autograd, residual, lambda1, 1.0)
    (expected,) = torch.autograd.grad(kernel, x_autograd, grad_outputs=direction)
    torch.testing.assert_close(kernel_vjp(x, residual, correlation, lambda1, direction), expected,
                               rtol=1e-12, atol=1e-12)


def test_default_tolerance_gradient_is_accurate_where_many_features_sit_near_their_threshold():
    # At tol=1e-4 a polish from a FISTA point did not always find the face of the optimum here (gradient
    # error above 1e-2); Newton steps from a gap of 1e-2 and the polish now land on it.
    support, labels, query, lambda1 = backbone_like_episodes(15, 640, [1, 3])
    head = GroupLassoSVMHead(lambda1, 10.0, 1.0, learn_scale=False)

    def gradient(**solver_options):
        x = support.clone().requires_grad_(True)
        for name, value in solver_options.items():
            setattr(head.native, name, value)
        head(query, x, labels, 5).logsumexp(-1).sum().backward()
        return x.grad

    reference = gradient(tol=1e-12, max_iter=100_000)
    default = gradient(tol=1e-4, max_iter=1000)
    assert float(head.last_info.residual.max()) < 1e-10 and bool(head.last_info.gradient_trusted.all())
    assert relative_error(default, reference) < 1e-5


def test_evaluation_is_as_accurate_as_training():
    # the same polished solution with and without a gradient (no_grad logits were up to 6e-3 off)
    support, labels = episode(2, 5, 5, 40, seed=20)
    head = GroupLassoSVMHead(1.0, 10.0, 1.0)
    with torch.no_grad():
        plain = head.solve(support, labels, 5)
    assert float(head.last_info.residual.max()) < 1e-12
    polished = head.solve(support.clone().requires_grad_(True), labels, 5)
    exact = GroupLassoSVMHead(1.0, 10.0, 1.0, **TIGHT).solve(support, labels, 5)
    assert relative_error(plain, exact) < 1e-8
    assert torch.equal(plain, polished.detach())


def test_gradient_flows_to_query_and_scale():
    support, labels = episode(2, 5, 2, 8, seed=6)
    query = torch.randn(2, 4, 8, dtype=torch.float64, requires_grad=True)
    head = GroupLassoSVMHead(1.0, 1.0, 1.0).double()
    head(query, support, labels, 5).sum().backward()
    assert query.grad.abs().sum() > 0 and head.scale.grad is not None


def test_svm_head_is_the_lambda1_zero_case_and_metaoptnet_qp():
    import cvxpy as cp

    support, labels = episode(2, 5, 3, 10, seed=7)
    svm = SVMHead(C=0.1, **TIGHT).solve(support, labels, 5)
    group = GroupLassoSVMHead(0.0, 10.0, 1.0, **TIGHT).solve(support, labels, 5)
    torch.testing.assert_close(svm, group)
    # MetaOptNet's QP: min 1/2 a^T (K (x) I + 1.0 I) a - <Y, a>  s.t.  a <= C Y, sum_k a_ik = 0
    for b in range(2):
        x = support[b].numpy()
        y = np.eye(5)[labels[b].numpy()]
        alpha = cp.Variable((15, 5))
        objective = (0.5 * cp.sum_squares(x.T @ alpha) + 0.5 * cp.sum_squares(alpha)
                     - cp.sum(cp.multiply(y, alpha)))
        cp.Problem(cp.Minimize(objective), [alpha <= 0.1 * y, cp.sum(alpha, axis=1) == 0]).solve(
            solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
        assert relative_error(svm[b], x.T @ alpha.value) < 1e-5


@pytest.mark.parametrize(("lambda1", "lambda2", "dual_reg"), [(0.0, 10.0, 1.0), (3.0, 1.0, 0.5)])
def test_cvxpylayers_backend_matches_reference_and_native_gradients(lambda1, lambda2, dual_reg):
    support, labels = episode(2, 5, 2, 8, seed=8)
    query = torch.randn(2, 6, 8, dtype=torch.float64)
    grads, weights = {}, {}
    for solver in ("native", "cvxpylayers"):
        head = GroupLassoSVMHead(lambda1, lambda2, dual_reg, solver=solver, **TIGHT)
        x = support.clone().requires_grad_(True)
        weights[solver] = head.solve(x, labels, 5)
        (query @ weights[solver]).pow(2).sum().backward()
        grads[solver] = x.grad
        assert bool(head.last_info.converged.all()) and float(head.last_info.residual.max()) < 1e-6
    reference = reference_svm_weights(support, labels, 5, lambda1, lambda2, dual_reg)
    assert relative_error(weights["cvxpylayers"], reference) < 1e-4
    assert relative_error(grads["cvxpylayers"], grads["native"]) < 1e-3


def test_cvxpylayers_backend_accepts_the_unsmoothed_hinge():
    support, labels = episode(1, 3, 2, 5, seed=9)
    weights = GroupLassoSVMHead(0.5, 1.0, 0.0, solver="cvxpylayers").solve(support, labels, 3)
    reference = reference_svm_weights(support, labels, 3, 0.5, 1.0, 0.0)
    assert relative_error(weights, reference) < 1e-4


@pytest.mark.parametrize(("lambda2", "dual_reg"), [(10.0, 1.0), (1.0, 0.5), (0.5, 1.0)])
def test_lambda1_max_is_the_threshold_of_the_zero_solution(lambda2, dual_reg):
    support, labels = episode(3, 5, 2, 10, seed=15)
    onehot = torch.nn.functional.one_hot(labels, 5).double()
    lambda_max = svm_lambda1_max(support, onehot, lambda2, dual_reg)
    for b in range(3):
        above = GroupLassoSVM(float(lambda_max[b]) * 1.001, lambda2, dual_reg, **TIGHT)
        below = GroupLassoSVM(float(lambda_max[b]) * 0.98, lambda2, dual_reg, **TIGHT)
        assert bool((above.solve(support[b:b + 1], onehot[b:b + 1])[0] == 0).all())
        assert bool((below.solve(support[b:b + 1], onehot[b:b + 1])[0] != 0).any())


def test_lambda1_at_or_above_lambda_max_gives_zero_weights_and_zero_gradient():
    support, labels = episode(2, 5, 2, 8, seed=10)
    x = support.clone().requires_grad_(True)
    head = GroupLassoSVMHead(1e4, 1.0, 1.0)
    logits = head(torch.randn(2, 3, 8, dtype=torch.float64), x, labels, 5)
    logits.sum().backward()
    assert bool((head.last_info.sparsity == 1).all())
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_duplicate_support_points_and_zero_features_stay_finite():
    support, labels = episode(1, 3, 2, 6, seed=11)
    support = torch.cat([support, support], dim=1)  # every support point twice
    labels = torch.cat([labels, labels], dim=1)
    support[..., 2] = 0.0  # a dead feature
    x = support.clone().requires_grad_(True)
    for lambda1 in (0.0, 0.5):
        x.grad = None
        head = GroupLassoSVMHead(lambda1, 1.0, 1.0)
        weights = head.solve(x, labels, 3)
        weights.sum().backward()
        assert bool(torch.isfinite(weights).all() and torch.isfinite(x.grad).all())
        assert torch.equal(weights[0, 2], torch.zeros(3, dtype=torch.float64))


def test_early_stopped_mode_runs_fixed_iterations_without_warning():
    support, labels = episode(2, 5, 3, 16, seed=12)
    head = GroupLassoSVMHead(0.5, 10.0, 1.0, max_iter=5, tol=None)
    x = support.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        head.solve(x, labels, 5).sum().backward()
    info = head.last_info
    assert info.fixed_iterations and not bool(info.converged.any())
    assert info.iterations.tolist() == [5, 5] and bool((info.residual > 0).all())
    assert bool(torch.isfinite(x.grad).all())


def test_non_convergence_warns_with_diagnostics():
    support, labels = episode(2, 5, 3, 16, seed=13)
    head = GroupLassoSVMHead(0.5, 10.0, 1.0, max_iter=3, tol=1e-10)
    with pytest.warns(ConvergenceWarning, match=r"2/2 tasks did not reach tol=1e-10 in max_iter=3"):
        head.solve(support, labels, 5)
    assert not bool(head.last_info.converged.any())


def test_float32_inputs_give_float32_outputs_and_agree_with_float64():
    support, labels = episode(3, 5, 5, 32, seed=14)
    query = torch.randn(3, 10, 32, dtype=torch.float64)
    head = GroupLassoSVMHead(1.0, 10.0, 1.0, tol=1e-6)
    logits64 = head(query, support, labels, 5)
    logits32 = head(query.float(), support.float(), labels, 5)
    assert logits32.dtype == torch.float32
    assert relative_error(logits32.double(), logits64) < 1e-3


@pytest.mark.parametrize("lambda1", [0.0, 0.3])
def test_float32_residual_is_the_gap_of_the_returned_weights(lambda1):
    """The float32 check runs through the nonzero columns only; it must equal the relative gap of the
    returned (rounded) weights over all d features against the float64 dual solution."""
    torch.manual_seed(3)
    y = torch.nn.functional.one_hot(torch.arange(5).repeat(3), 5).double().repeat(4, 1, 1)
    x = torch.relu(torch.randn(4, 15, 300) + y.float() @ torch.randn(5, 300))
    lam = lambda1 * svm_lambda1_max(x.double(), y, 10.0, 1.0)
    solver = GroupLassoSVM(lambda2=10.0, dual_reg=1.0).for_tasks(lam)
    weights, info = solver.solve(x, y.float())
    alpha, solved, _, _ = solver._solve_dual(solver._features(x), y, None)
    gap = svm_relative_gap(weights.double(), alpha, x.double(), y, lam[:, None, None], 10.0, 1.0)
    torch.testing.assert_close(info.residual.double(), torch.maximum(solved.residual, gap), rtol=1e-6,
                               atol=1e-14)
    assert float(gap.max()) > 1e-14  # the rounding of the returned weights is visible


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"lambda1": -1.0}, "lambda1 must be >= 0"),
    ({"lambda2": 0.0}, "lambda2 must be > 0"),
    ({"dual_reg": 0.0}, "dual_reg must be > 0 for the native solver"),
    ({"max_iter": 0}, "max_iter must be a positive int"),
    ({"tol": -1.0}, "tol must be > 0 or None"),
    ({"solver": "qpth"}, "solver must be one of"),
])
def test_bad_options_are_rejected_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GroupLassoSVMHead(**kwargs)


def test_logits_through_the_nonzero_rows_equal_the_dense_product_with_its_gradients():
    support, labels = episode(2, 5, 3, 300, seed=31)
    support = torch.relu(support)
    onehot = torch.nn.functional.one_hot(labels, 5).double()
    lambda1 = 0.3 * float(svm_lambda1_max(support, onehot, 10.0, 1.0).min())
    head = GroupLassoSVMHead(lambda1, 10.0, 1.0, learn_scale=False)
    generator = torch.Generator().manual_seed(32)
    query = torch.relu(torch.randn(2, 7, 300, generator=generator, dtype=torch.float64))
    sparse_query, dense_query = query.clone().requires_grad_(True), query.clone().requires_grad_(True)
    x_sparse, x_dense = support.clone().requires_grad_(True), support.clone().requires_grad_(True)
    logits = head(sparse_query, x_sparse, labels, 5)  # through the solver's nonzero rows (NonzeroRows)
    assert 0 < int(head.last_info.active.max()) < 75
    dense = dense_query @ head.solve(x_dense, labels, 5)
    torch.testing.assert_close(logits, dense, rtol=1e-13, atol=1e-13)
    fitted = head.fit_(support, labels, 5)(query)  # learn2learn's convention: the dense weights, kept
    torch.testing.assert_close(fitted, dense.detach(), rtol=1e-13, atol=1e-13)
    logits.logsumexp(-1).sum().backward()
    dense.logsumexp(-1).sum().backward()
    torch.testing.assert_close(sparse_query.grad, dense_query.grad, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(x_sparse.grad, x_dense.grad, rtol=1e-10, atol=1e-12)
