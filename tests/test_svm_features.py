"""Float32 support features in a working-set solve: every comparison with lambda1 is that of float64, and
the gap, W(alpha) and P(W) through the active columns equal their float64 full-width values."""

import pytest
import torch

from metasparse.solvers import GroupLassoSVM, NonzeroRows, svm_lambda1_max
from metasparse.solvers.svm_features import SupportFeatures
from metasparse.solvers.svm_objective import (
    feature_norms,
    svm_primal_objective,
    svm_primal_weights,
    svm_relative_gap,
)
from metasparse.tasks import random_episodes


def episodes(scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    support, labels, _, _ = random_episodes(3, 5, 5, 1, 400, seed=11)
    onehot = torch.nn.functional.one_hot(labels, 5).double()
    alpha = torch.softmax(torch.randn(3, 25, 5, generator=torch.Generator().manual_seed(2)).double(), dim=-1)
    return support * scale, onehot, alpha


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e4])
def test_norms_compare_with_the_threshold_as_float64_does(scale: float):
    support, onehot, alpha = episodes(scale)
    exact = feature_norms(support.double(), onehot - alpha)
    # thresholds 1e-9 (relative) off the norms of two features: float32 cannot tell the side, float64 can
    threshold = torch.stack([exact[0, 7] * (1 + 1e-9), exact[1, 7] * (1 - 1e-9), exact[2, 7] * (1 + 1e-9)])
    norms = SupportFeatures(support).norms(onehot - alpha, threshold)
    above, exact_above = norms > threshold[:, None], exact > threshold[:, None]
    assert bool((above == exact_above).all())
    torch.testing.assert_close(norms[:, 7], exact[:, 7], rtol=1e-13, atol=0)  # recomputed in float64
    float32_only = feature_norms(support, (onehot - alpha).float()).double()
    assert bool(((float32_only - exact).abs() > 0).any())  # float32 alone is not float64
    torch.testing.assert_close(norms, exact, rtol=1e-5, atol=0)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e4])
def test_weights_gap_and_primal_through_active_columns_equal_the_float64_full_width_values(scale: float):
    support, onehot, alpha = episodes(scale)
    x = support.double()
    lambda1 = 0.3 * svm_lambda1_max(x, onehot, 10.0, 1.0)
    solver = GroupLassoSVM(10.0, 10.0, 1.0).for_tasks(lambda1)
    features = SupportFeatures(support)
    rows, columns = features.active_rows(solver, onehot, alpha)
    weights = NonzeroRows(rows, columns, support.shape[-1]).dense()
    expected = svm_primal_weights(x, onehot, alpha, lambda1[:, None, None], 10.0)
    assert bool(((weights != 0) == (expected != 0)).all())
    assert columns.shape[1] == int((expected.abs().amax(-1) > 0).sum(-1).max())  # no wider than needed
    assert 0 < int((expected.abs().amax(-1) > 0).sum()) < expected.shape[0] * expected.shape[1]
    torch.testing.assert_close(weights, expected, rtol=1e-12, atol=0)
    expected_gap = svm_relative_gap(expected, alpha, x, onehot, lambda1, 10.0, 1.0)
    torch.testing.assert_close(features.gap(solver, onehot, alpha), expected_gap, rtol=1e-10, atol=1e-14)
    expected_primal = svm_primal_objective(expected, x, onehot, lambda1, 10.0, 1.0)
    torch.testing.assert_close(features.primal_objective(solver, weights, onehot), expected_primal,
                               rtol=1e-12, atol=0)
    torch.testing.assert_close(features.primal_objective(solver, rows, onehot, columns), expected_primal,
                               rtol=1e-12, atol=0)
    # float64 features take the full-width path: the same values
    exact_features = SupportFeatures(x)
    torch.testing.assert_close(exact_features.gap(solver, onehot, alpha), expected_gap, rtol=1e-12, atol=0)
    exact_rows, exact_columns = exact_features.active_rows(solver, onehot, alpha)
    assert torch.equal(exact_columns.sort(dim=1).values, columns.sort(dim=1).values)
    torch.testing.assert_close(exact_rows, expected.gather(1, exact_columns[..., None].expand(-1, -1, 5)),
                               rtol=1e-12, atol=0)


def test_a_float32_working_set_solve_matches_the_float64_solve():
    support, labels, _, _ = random_episodes(4, 5, 15, 1, 2000, seed=5)
    onehot = torch.nn.functional.one_hot(labels, 5).float()
    lambda1 = 0.3 * float(svm_lambda1_max(support, onehot, 10.0, 1.0).median())
    solver = GroupLassoSVM(lambda1, 10.0, 1.0)
    alpha32, info32 = solver.solve_dual(support, onehot)
    alpha64, info64 = solver.solve_dual(support.double(), onehot.double())
    assert bool(info32.converged.all()) and bool(info64.converged.all())
    torch.testing.assert_close(alpha32.double(), alpha64, rtol=0, atol=1e-6)
    torch.testing.assert_close(info32.active, info64.active)
