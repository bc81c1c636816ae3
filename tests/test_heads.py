"""The heads' common contract: shapes, calling conventions, validation, closed-form heads."""

import inspect
import warnings

import numpy as np
import pytest
import torch
from helpers import CLARABEL_TIGHT, episode, reference_svm_weights, relative_error

from metasparse.heads import GroupLassoSVMHead, LassoHead, ProtoNetHead, RidgeHead, SVMHead
from metasparse.solvers import ConvergenceWarning

HEADS = [
    pytest.param(lambda: GroupLassoSVMHead(0.5, 10.0), id="group_lasso_svm"),
    pytest.param(lambda: SVMHead(), id="svm"),
    pytest.param(lambda: RidgeHead(), id="ridge"),
    pytest.param(lambda: ProtoNetHead(), id="protonet"),
]


@pytest.mark.parametrize("make_head", HEADS)
def test_batched_unbatched_and_fit_forward_agree(make_head):
    head = make_head()
    support, labels = episode(3, 5, 2, 16, seed=0, dtype=torch.float32)
    query = torch.randn(3, 7, 16)
    logits = head(query, support, labels, 5, n_shot=2)
    assert logits.shape == (3, 7, 5) and logits.dtype == torch.float32
    assert head.solve(support, labels, 5).shape == (3, 16, 5)
    assert head.last_info.sparsity.shape == (3,)
    single = head(query[1], support[1], labels[1], 5)
    assert single.shape == (7, 5)
    torch.testing.assert_close(single, logits[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(head.fit_(support, labels, 5)(query), logits)
    torch.testing.assert_close(head.fit_(support[1], labels[1])(query[1]), single)


@pytest.mark.parametrize("make_head", HEADS)
def test_support_order_does_not_matter(make_head):
    head = make_head().double()
    support, labels = episode(2, 5, 3, 12, seed=1)
    permutation = torch.randperm(15)
    weights = head.solve(support, labels, 5)
    permuted = head.solve(support[:, permutation], labels[:, permutation], 5)
    torch.testing.assert_close(weights, permuted, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("make_head", HEADS)
def test_backbone_and_scale_receive_gradients(make_head):
    head = make_head()
    backbone = torch.nn.Linear(10, 16)
    images, labels = torch.randn(2, 10, 10), torch.arange(5).repeat(2).expand(2, 10)
    query, query_labels = torch.randn(2, 15, 10), torch.arange(5).repeat(3).expand(2, 15)
    logits = head(backbone(query), backbone(images), labels, 5)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), query_labels.flatten()).backward()
    assert backbone.weight.grad.abs().sum() > 0
    assert head.scale.grad is not None and torch.isfinite(head.scale.grad)


def test_ridge_head_equals_metaoptnet_rr_qp_solved_by_cvxpy():
    # MetaOptNet-RR: min_z 1/2 z^T (K + lam I) (x) I z + e^T z with e = -2Y, logits = Q X^T z
    import cvxpy as cp

    support, labels = episode(2, 5, 3, 20, seed=2)
    query = torch.randn(2, 6, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    logits = RidgeHead(lam=50.0, learn_scale=False).double()(query, support, labels, 5)
    for b in range(2):
        x, y = support[b].numpy(), np.eye(5)[labels[b].numpy()]
        z = cp.Variable((15, 5))
        objective = 0.5 * (cp.sum_squares(x.T @ z) + 50.0 * cp.sum_squares(z)) - 2 * cp.sum(cp.multiply(y, z))
        cp.Problem(cp.Minimize(objective)).solve(solver=cp.CLARABEL, **CLARABEL_TIGHT)
        expected = query[b].numpy() @ x.T @ z.value
        np.testing.assert_allclose(logits[b].numpy(), expected, rtol=1e-7, atol=1e-9)
    # a plain ridge min ||XW - Y||^2 + lam ||W||^2 gives exactly half of them
    x, y = support[0].numpy(), np.eye(5)[labels[0].numpy()]
    plain = query[0].numpy() @ np.linalg.solve(x.T @ x + 50.0 * np.eye(20), x.T @ y)
    np.testing.assert_allclose(logits[0].numpy(), 2 * plain, rtol=1e-9, atol=1e-12)


def test_protonet_head_matches_explicit_distances():
    support, labels = episode(2, 5, 3, 8, seed=3)
    query = torch.randn(2, 4, 8, dtype=torch.float64)
    logits = ProtoNetHead(learn_scale=False).double()(query, support, labels, 5)
    for b in range(2):
        prototypes = torch.stack([support[b][labels[b] == k].mean(0) for k in range(5)])
        expected = -torch.cdist(query[b], prototypes) ** 2 / 8
        torch.testing.assert_close(logits[b], expected)


def test_learn_scale_false_keeps_a_fixed_buffer():
    head = RidgeHead(learn_scale=False, scale=2.0)
    assert list(head.parameters()) == [] and float(head.scale) == 2.0


GOOD_SUPPORT, GOOD_LABELS = torch.randn(2, 6, 4), torch.arange(3).repeat(2).expand(2, 6)


@pytest.mark.parametrize(("query", "support", "labels", "n_way", "match"), [
    (torch.randn(2, 5, 4), torch.randn(6, 4, 1, 1), GOOD_LABELS, 3, r"support must have shape \(n, d\)"),
    (torch.randn(2, 5, 4), GOOD_SUPPORT, GOOD_LABELS[:, :5], 3, "support_labels must have shape"),
    (torch.randn(2, 5, 4), GOOD_SUPPORT, GOOD_LABELS.float(), 3, "support_labels must be an integer"),
    (torch.randn(2, 5, 4), GOOD_SUPPORT, GOOD_LABELS + 1, 3, r"support_labels must lie in \[0, n_way=3\)"),
    (torch.randn(2, 5, 4), GOOD_SUPPORT, GOOD_LABELS % 2, 3, "every class in .* needs at least one"),
    (torch.randn(2, 5, 4), GOOD_SUPPORT, GOOD_LABELS, 0, "n_way must be a positive int"),
    (torch.randn(2, 5, 3), GOOD_SUPPORT, GOOD_LABELS, 3, "does not match support"),
    (torch.randn(3, 5, 4), GOOD_SUPPORT, GOOD_LABELS, 3, "does not match support"),
    (torch.randn(5, 4), GOOD_SUPPORT, GOOD_LABELS, 3, r"query must have shape \(B, m, d\)"),
    (torch.full((2, 5, 4), float("nan")), GOOD_SUPPORT, GOOD_LABELS, 3, "query must be finite"),
    (torch.randn(2, 5, 4), GOOD_SUPPORT.masked_fill(GOOD_SUPPORT > 1, float("inf")), GOOD_LABELS, 3,
     "support must be finite"),
    (torch.randn(2, 5, 4), GOOD_SUPPORT.long(), GOOD_LABELS, 3, "support must be a floating-point"),
])
@pytest.mark.parametrize("make_head", HEADS[:1] + HEADS[2:3])
def test_bad_input_names_the_argument(make_head, query, support, labels, n_way, match):
    with pytest.raises(ValueError, match=match):
        make_head()(query, support, labels, n_way)


def test_n_shot_is_checked_when_given():
    with pytest.raises(ValueError, match="n_shot=3: every class must have exactly n_shot"):
        RidgeHead()(torch.randn(2, 5, 4), GOOD_SUPPORT, GOOD_LABELS, 3, n_shot=3)


def test_forward_without_support_needs_fit():
    with pytest.raises(ValueError, match="fit_"):
        RidgeHead()(torch.randn(5, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("make_head", HEADS)
def test_heads_run_on_the_gpu_and_match_the_cpu(make_head):
    support, labels = episode(4, 5, 5, 64, seed=30, dtype=torch.float32)
    query = torch.randn(4, 10, 64, generator=torch.Generator().manual_seed(31))
    results = {}
    for device in ("cpu", "cuda"):
        head = make_head().to(device)
        x = support.to(device).requires_grad_(True)
        logits = head(query.to(device), x, labels.to(device), 5)
        logits.logsumexp(-1).sum().backward()
        assert logits.device.type == device and x.grad.device.type == device
        results[device] = (logits.detach().cpu(), x.grad.cpu())
    torch.testing.assert_close(results["cuda"][0], results["cpu"][0], rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(results["cuda"][1], results["cpu"][1], rtol=1e-3, atol=1e-4)


# --- hyper-parameters, dtypes, devices, empty batches ---------------------------------------------------

ALL_HEADS = [*HEADS, pytest.param(lambda: GroupLassoSVMHead(lambda1_ratio=0.3), id="group_lasso_ratio")]


@pytest.mark.parametrize(("make_head", "match"), [
    (lambda: GroupLassoSVMHead(lambda2=float("inf")), "lambda2 must be > 0 and finite, got inf"),
    (lambda: GroupLassoSVMHead(dual_reg=float("inf")), "dual_reg must be > 0 and finite"),
    (lambda: GroupLassoSVMHead(dual_reg=0.0), "dual_reg must be > 0 for the native solver"),
    (lambda: GroupLassoSVMHead(lambda1=float("nan")), "lambda1 must be >= 0 and finite"),
    (lambda: GroupLassoSVMHead(lambda1="0.1"), "lambda1 must be >= 0 and finite, got '0.1'"),
    (lambda: GroupLassoSVMHead(scale=float("nan")), "scale must be a finite number, got nan"),
    (lambda: GroupLassoSVMHead(max_iter=-5), "max_iter must be a positive int, got -5"),
    (lambda: GroupLassoSVMHead(max_iter=10.0), "max_iter must be a positive int, got 10.0"),
    (lambda: GroupLassoSVMHead(max_iter=True), "max_iter must be a positive int"),
    (lambda: GroupLassoSVMHead(tol=0.0), "tol must be > 0 or None"),
    (lambda: GroupLassoSVMHead(tol=float("inf")), "tol must be > 0 or None"),
    (lambda: GroupLassoSVMHead(solver="cvxpylayers", tol=None), "tol=None .* needs solver='native'"),
    (lambda: GroupLassoSVMHead(solver="qpth"), "solver must be one of"),
    (lambda: GroupLassoSVMHead(solver_args=["eps"]), "solver_args must be a dict"),
    (lambda: GroupLassoSVMHead(learn_scale=1), "learn_scale must be True or False"),
    (lambda: GroupLassoSVMHead(lambda1_ratio=float("inf")), "lambda1_ratio must be >= 0 and finite"),
    (lambda: GroupLassoSVMHead(lambda1_ratio=-0.1), "lambda1_ratio must be >= 0"),
    (lambda: GroupLassoSVMHead(lambda1=0.1, lambda1_ratio=0.3), "lambda1 .* or lambda1_ratio .* not both"),
    (lambda: SVMHead(C=float("inf")), "C must be > 0 and finite"),
    (lambda: SVMHead(C=0.0), "C must be > 0"),
    (lambda: SVMHead.metaoptnet_test(tol=1e-3), "metaoptnet_test sets tol"),
    (lambda: RidgeHead(lam=float("nan")), "lam must be > 0 and finite"),
    (lambda: RidgeHead(lam=-1.0), "lam must be > 0"),
    (lambda: ProtoNetHead(normalize="yes"), "normalize must be True or False"),
    (lambda: ProtoNetHead(scale=float("-inf")), "scale must be a finite number"),
    (lambda: LassoHead(lambda_ratio=float("inf")), "lambda_ratio must be > 0 and finite"),
    (lambda: LassoHead(max_iter=0), "max_iter must be a positive int"),
    (lambda: LassoHead(tol=-1e-6), "tol must be > 0 or None"),
    (lambda: LassoHead(solver="cvxpylayers", tol=None), "tol=None .* needs solver='native'"),
])
def test_hyper_parameters_are_checked_at_construction(make_head, match):
    with pytest.raises(ValueError, match=match):
        make_head()


def test_numbers_may_be_numpy_scalars_or_0d_tensors():
    head = GroupLassoSVMHead(lambda1=np.float32(0.25), lambda2=torch.tensor(5.0), max_iter=np.int64(50))
    assert (head.lambda1, head.lambda2, head.max_iter) == (0.25, 5.0, 50)
    support, labels = episode(2, 3, 2, 8, seed=19)
    assert head.solve(support, labels, np.int64(3)).shape == (2, 8, 3)
    assert head.lambda1_max(support.half(), labels, torch.tensor(3)).shape == (2,)
    with pytest.raises(ValueError, match="lambda2 must be > 0 and finite"):
        GroupLassoSVMHead(lambda2=torch.ones(2))


@pytest.mark.parametrize("make_head", ALL_HEADS)
def test_mixed_dtypes_and_devices_are_refused_by_name(make_head):
    support, labels = episode(2, 3, 2, 8, seed=20)
    query = torch.randn(2, 4, 8, dtype=torch.float64)
    head = make_head()
    with pytest.raises(ValueError, match=r"query must have the dtype of support \(torch.float64\)"):
        head(query.float(), support, labels, 3)
    with pytest.raises(ValueError, match="support_labels must be on the device of support"):
        head(query, support, labels.to("meta"), 3)
    with pytest.raises(ValueError, match="query must be on the device of support"):
        head(query.to("meta"), support, labels, 3)
    head.fit_(support.float(), labels, 3)
    with pytest.raises(ValueError, match=r"query must have the dtype of support \(torch.float32\)"):
        head(query)


def test_lasso_head_refuses_mixed_dtypes():
    features = torch.randn(2, 10, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"targets must have the dtype of features \(torch.float64\)"):
        LassoHead().solve(features, features[..., 0].float())
    with pytest.raises(ValueError, match=r"query must have the dtype of support \(torch.float64\)"):
        LassoHead()(torch.randn(2, 3, 4), features, features[..., 0])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("make_head", ALL_HEADS)
def test_half_precision_is_computed_in_float32_and_returned_in_the_input_dtype(make_head, dtype):
    support, labels = episode(2, 5, 3, 16, seed=21, dtype=torch.float32)
    query = torch.randn(2, 6, 16, generator=torch.Generator().manual_seed(22))
    support_half = support.to(dtype).requires_grad_(True)
    head = make_head()
    logits = head(query.to(dtype), support_half, labels, 5)
    assert logits.dtype == dtype and head.solve(support_half, labels, 5).dtype == dtype
    reference = make_head()(query.to(dtype).float(), support_half.detach().float(), labels, 5)
    torch.testing.assert_close(logits.float(), reference.to(dtype).float())
    logits.float().logsumexp(-1).sum().backward()
    assert support_half.grad.dtype == dtype and bool(torch.isfinite(support_half.grad.float()).all())


@pytest.mark.parametrize("make_head", ALL_HEADS)
def test_an_empty_batch_gives_empty_results(make_head):
    head = make_head()
    support = torch.randn(0, 10, 8, requires_grad=True)
    logits = head(torch.randn(0, 4, 8), support, torch.zeros(0, 10, dtype=torch.long), 5)
    assert logits.shape == (0, 4, 5)
    assert head.solve(support, torch.zeros(0, 10, dtype=torch.long), 5).shape == (0, 8, 5)
    assert head.last_info.converged.shape == (0,) and head.last_info.residual.shape == (0,)
    assert head.last_info.summary().endswith("no tasks (an empty batch)")
    logits.sum().backward()
    assert support.grad.shape == support.shape


def test_an_empty_batch_of_regression_tasks_gives_empty_results():
    head = LassoHead()
    weights = head.solve(torch.randn(0, 10, 4), torch.randn(0, 10))
    assert weights.shape == (0, 4)
    assert head(torch.randn(0, 3, 4), torch.randn(0, 10, 4), torch.randn(0, 10)).shape == (0, 3)
    assert head.last_info.residual.shape == (0,)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_lasso_head_computes_half_precision_in_float32(dtype):
    features = torch.randn(3, 20, 5)
    targets = features[..., 0] - features[..., 2]
    weights = LassoHead(0.3).solve(features.to(dtype), targets.to(dtype))
    assert weights.dtype == dtype
    expected = LassoHead(0.3).solve(features.to(dtype).float(), targets.to(dtype).float())
    torch.testing.assert_close(weights.float(), expected.to(dtype).float())


# --- lambda1_ratio --------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["native", "cvxpylayers"])
def test_lambda1_ratio_is_a_fraction_of_each_episodes_lambda1_max(solver):
    support, labels = episode(3, 3, 2, 6, seed=23)
    support = support * torch.tensor([1.0, 5.0, 0.2], dtype=torch.float64)[:, None, None]  # different scales
    tight = {"tol": 1e-9, "max_iter": 20_000} if solver == "native" else {}
    head = GroupLassoSVMHead(lambda1_ratio=0.4, solver=solver, **tight)
    weights = head.solve(support, labels, 3)
    lambda1_max = head.lambda1_max(support, labels, 3)
    reference = reference_svm_weights(support, labels, 3, 0.0, 10.0, 1.0)  # shapes only; per task below
    for b in range(3):
        absolute = GroupLassoSVMHead(lambda1=0.4 * float(lambda1_max[b]), solver=solver, **tight)
        torch.testing.assert_close(weights[b], absolute.solve(support[b], labels[b], 3), rtol=1e-6, atol=1e-9)
        expected = reference_svm_weights(support[b:b + 1], labels[b:b + 1], 3, 0.4 * float(lambda1_max[b]),
                                         10.0, 1.0)[0]
        assert relative_error(weights[b], expected) < 1e-4 and reference[b].shape == expected.shape
    assert bool(head.last_info.converged.all())


@pytest.mark.parametrize("solver", ["native", "cvxpylayers"])
def test_lambda1_ratio_one_gives_zero_weights_and_zero_gradients(solver):
    support, labels = episode(2, 3, 2, 6, seed=24)
    support.requires_grad_(True)
    head = GroupLassoSVMHead(lambda1_ratio=1.0, solver=solver)
    weights = head.solve(support, labels, 3)
    assert bool((weights == 0).all()) and head.last_info.sparsity.tolist() == [1.0, 1.0]
    assert bool(head.last_info.converged.all())
    (weights.sum() + head(torch.randn(2, 4, 6, dtype=torch.float64), support, labels, 3).sum()).backward()
    assert bool((support.grad == 0).all())


# --- cvxpylayers diagnostics ----------------------------------------------------------------------------


def test_cvxpylayers_lasso_at_lambda_max_is_exactly_zero_with_zero_gradients():
    features = torch.randn(2, 12, 5, dtype=torch.float64, requires_grad=True)
    targets = features.detach()[..., 0] + 0.1
    head = LassoHead(lambda_ratio=1.0, solver="cvxpylayers")
    weights = head.solve(features, targets)
    assert bool((weights == 0).all()) and head.last_info.sparsity.tolist() == [1.0, 1.0]
    weights.sum().backward()
    assert bool((features.grad == 0).all())


def test_cvxpylayers_sparsity_counts_the_rows_the_exact_solution_zeroes():
    support, labels = episode(2, 3, 3, 10, seed=25)
    native = GroupLassoSVMHead(lambda1_ratio=0.5, tol=1e-10, max_iter=20_000)
    exact = GroupLassoSVMHead(lambda1_ratio=0.5, solver="cvxpylayers")
    w_native, w_exact = native.solve(support, labels, 3), exact.solve(support, labels, 3)
    assert exact.last_info.active.tolist() == native.last_info.active.tolist()
    assert 0 < int(exact.last_info.active.min()) and int(exact.last_info.active.max()) < 10
    assert torch.equal(w_exact.norm(dim=-1) == 0, w_native.norm(dim=-1) == 0)


@pytest.mark.parametrize("make_head", [
    pytest.param(lambda: GroupLassoSVMHead(0.3, solver="cvxpylayers"), id="group_lasso_svm"),
    pytest.param(lambda: LassoHead(0.3, solver="cvxpylayers"), id="lasso"),
])
def test_cvxpylayers_solution_far_from_optimal_is_not_reported_converged(make_head, monkeypatch):
    head = make_head()
    runner = head.cvxpylayers

    def off_by_half(key, *params):  # as if SCS had stopped early without saying so
        (weights,), _ = runner(key, *params)
        return [1.5 * weights], True

    monkeypatch.setattr(head, "cvxpylayers", off_by_half)
    support, labels = episode(2, 3, 2, 6, seed=26)
    with pytest.warns(ConvergenceWarning, match="recomputed relative duality gap is above tol"):
        if isinstance(head, LassoHead):
            head.solve(support, support[..., 0] - support[..., 1])
        else:
            head.solve(support, labels, 3)
    assert not bool(head.last_info.converged.any()) and float(head.last_info.residual.min()) > 1e-3


# --- warnings -------------------------------------------------------------------------------------------


def test_a_head_warns_once_per_setting_at_the_callers_line():
    support, labels = episode(2, 5, 3, 16, seed=27)
    head = GroupLassoSVMHead(0.5, max_iter=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 2
        for _ in range(3):
            head(torch.randn(2, 4, 16, dtype=torch.float64), support, labels, 5)
            assert head.last_info.converged.tolist() == [False, False]
        GroupLassoSVMHead(0.5, max_iter=2).solve(support, labels, 5)  # another head warns again
    assert [(w.category, w.filename, w.lineno) for w in caught] == [
        (ConvergenceWarning, __file__, line), (ConvergenceWarning, __file__, line + 2)]
    assert "2/2 tasks did not reach tol=0.0001 in max_iter=2" in str(caught[0].message)


# --- MetaOptNet's test setting --------------------------------------------------------------------------


def test_metaoptnet_test_setting_gives_the_exact_svm_solution_not_three_fista_steps():
    support, labels = episode(4, 5, 5, 32, seed=28)
    query = torch.randn(4, 10, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(29))
    head = SVMHead.metaoptnet_test(learn_scale=False)
    logits = head(query, support, labels, 5)
    assert head.tol == 1e-2 and bool(head.last_info.converged.all())
    exact = torch.as_tensor(reference_svm_weights(support, labels, 5, 0.0, 10.0, 1.0))
    assert relative_error(logits, query @ exact) < 1e-6
    three_steps = SVMHead(tol=None, max_iter=3, learn_scale=False)(query, support, labels, 5)
    assert relative_error(three_steps, query @ exact) > 0.1


# --- MetaOptNet's own heads through qpth (not a dependency: run with qpth importable) ---------------------


def _metaoptnet_logits(query, support, labels, n_way, head, max_iter):
    """MetaOptNet's MetaOptNetHead_Ridge / MetaOptNetHead_SVM QPs (kjunelee/MetaOptNet), on the CPU."""
    from qpth.qp import QPFunction

    batch, n, _ = support.shape
    kernel = support @ support.transpose(1, 2)
    eye_k, eye_nk = torch.eye(n_way, dtype=support.dtype), torch.eye(n * n_way, dtype=support.dtype)
    onehot = torch.nn.functional.one_hot(labels, n_way).to(support.dtype).reshape(batch, n * n_way)
    empty = torch.Tensor().to(support.dtype)
    solve = QPFunction(verbose=False, maxIter=max_iter)
    if head == "ridge":  # e = -2Y and a fake inequality 0 z <= 0
        block = torch.stack([torch.kron(k + 50.0 * torch.eye(n, dtype=support.dtype), eye_k) for k in kernel])
        zeros = torch.zeros(batch, n * n_way, n * n_way, dtype=support.dtype)
        z = solve(block, -2.0 * onehot, zeros, zeros[..., 0], empty, empty)
    else:  # C = 0.1, the +1.0 * I on the kernel, e = -Y, z <= C Y, rows summing to 0
        block = torch.stack([torch.kron(k, eye_k) for k in kernel]) + eye_nk
        rows = torch.kron(torch.eye(n, dtype=support.dtype), torch.ones(1, n_way, dtype=support.dtype))
        z = solve(block, -onehot, eye_nk.expand(batch, -1, -1), 0.1 * onehot, rows.expand(batch, -1, -1),
                  torch.zeros(batch, n, dtype=support.dtype))
    return torch.einsum("bsq,bsk->bqk", support @ query.transpose(1, 2), z.reshape(batch, n, n_way))


def test_ridge_and_svm_heads_match_metaoptnets_qps_through_qpth():
    pytest.importorskip("qpth")
    support, labels = episode(4, 5, 5, 64, seed=32)
    query = torch.randn(4, 15, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(33))
    ridge = RidgeHead(learn_scale=False)(query, support, labels, 5)
    for max_iter in (1, 3, 20):  # the ridge QP has no active constraint: exact from the first iteration
        assert relative_error(_metaoptnet_logits(query, support, labels, 5, "ridge", max_iter), ridge) < 1e-12
    svm = SVMHead.metaoptnet_test(learn_scale=False)(query, support, labels, 5)
    assert relative_error(_metaoptnet_logits(query, support, labels, 5, "svm", 20), svm) < 1e-6
    # MetaOptNet's test setting stops qpth far from the QP's solution: no tolerance reproduces it exactly
    assert relative_error(_metaoptnet_logits(query, support, labels, 5, "svm", 3), svm) > 0.1
