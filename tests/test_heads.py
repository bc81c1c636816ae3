"""The heads' common contract: shapes, calling conventions, validation, closed-form heads."""

import re

import numpy as np
import pytest
import torch
from helpers import CLARABEL_TIGHT, episode

from metasparse.heads import GroupLassoSVMHead, ProtoNetHead, RidgeHead, SVMHead

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
        objective = 0.5 * (cp.sum_squares(x.T @ z) + 50.0 * cp.sum_squares(z)) + cp.sum(cp.multiply(-2 * y, z))
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
    with pytest.raises(ValueError, match="exactly n_shot=3"):
        RidgeHead()(torch.randn(2, 5, 4), GOOD_SUPPORT, GOOD_LABELS, 3, n_shot=3)


def test_forward_without_support_needs_fit():
    with pytest.raises(ValueError, match="fit_"):
        RidgeHead()(torch.randn(5, 4))


def test_demo_compares_the_backends_and_they_agree(capsys):
    from metasparse.demo import run_demo

    assert run_demo(batch=2, n_way=3, n_shot=2, n_query=2, dim=8) == 0
    report = capsys.readouterr().out
    match = re.search(r"weights differ by (\S+), gradients w.r.t. the support features by (\S+) "
                      r"\(relative\); native \(defaults: tol=1e-4\) is \d+x faster", report)
    assert match, report
    assert float(match[1]) < 1e-4 and float(match[2]) < 1e-3
    assert report.count("2/2") == 5  # every head converged on both episodes


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
