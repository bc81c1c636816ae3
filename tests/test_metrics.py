"""Disentanglement metrics against scipy / scikit-learn references and exact cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.stats import entropy
from sklearn.linear_model import LinearRegression
from sklearn.preprocessing import StandardScaler

from metasparse.metrics.disentanglement import (
    correlation_matrix,
    dci,
    importance_matrix,
    matched_correlations,
    mcc,
    multiple_correlations,
    r_score,
)


def _latents(n: int = 2000, k: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, k))


def _brute_force_mcc(true: np.ndarray, learned: np.ndarray, correlate) -> float:
    """Best mean |corr| over every injective assignment of factors to coordinates."""
    k, k_learned = true.shape[1], learned.shape[1]
    corr = np.abs([[correlate(true[:, i], learned[:, j]) for j in range(k_learned)] for i in range(k)])
    if k > k_learned:
        corr, k, k_learned = corr.T, k_learned, k
    return max(np.mean([corr[i, p[i]] for i in range(k)])
               for p in itertools.permutations(range(k_learned), k))


def test_permuted_rescaled_copy_is_perfect():
    z = _latents()
    z_hat = z[:, [2, 0, 3, 1]] * np.array([3.0, -0.5, 10.0, 1e-3]) + 7.0
    assert mcc(z, z_hat) == pytest.approx(1.0, abs=1e-12)
    assert mcc(z, z_hat, method="spearman") == pytest.approx(1.0, abs=1e-12)
    assert r_score(z, z_hat) == pytest.approx(1.0, abs=1e-12)
    scores = dci(z, z_hat)
    assert scores["disentanglement"] == pytest.approx(1.0, abs=1e-9)
    assert scores["completeness"] == pytest.approx(1.0, abs=1e-9)
    assert scores["informativeness"] == pytest.approx(1.0, abs=1e-9)
    uniform = dci(z, z_hat, weighting="uniform")
    assert uniform["disentanglement"] == pytest.approx(1.0, abs=1e-9)
    assert uniform["completeness"] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("k_learned", [3, 4, 6])
def test_mcc_matches_brute_force_pearson_and_spearman(k_learned):
    rng = np.random.default_rng(1)
    z = _latents(500, 4, seed=1)
    z_hat = np.tanh(z @ rng.normal(size=(4, k_learned))) + 0.3 * rng.normal(size=(500, k_learned))
    assert mcc(z, z_hat) == pytest.approx(_brute_force_mcc(z, z_hat, lambda a, b: stats.pearsonr(a, b)[0]),
                                          abs=1e-10)
    assert mcc(z, z_hat, method="spearman") == pytest.approx(
        _brute_force_mcc(z, z_hat, lambda a, b: stats.spearmanr(a, b)[0]), abs=1e-10)


def test_spearman_uses_average_ranks_for_ties():
    rng = np.random.default_rng(2)
    grid = rng.integers(0, 4, size=(300, 2)).astype(float)       # many ties, like the un-jittered grid
    learned = grid ** 3 + rng.normal(scale=0.5, size=grid.shape)
    expected = stats.spearmanr(grid, learned).statistic[:2, 2:]
    np.testing.assert_allclose(correlation_matrix(grid, learned, "spearman"), expected, atol=1e-12)


def test_r_score_matches_sklearn_and_survives_bad_scaling_in_float32():
    rng = np.random.default_rng(3)
    z = _latents(3000, 3, seed=3)
    mixing = rng.normal(size=(3, 5))
    z_hat = (z @ mixing + 0.5 * rng.normal(size=(3000, 5))) * np.array([1e4, 1e-4, 1.0, 1e3, 1e-3])
    x, y = StandardScaler().fit_transform(z_hat), StandardScaler().fit_transform(z)
    reference = np.mean([np.sqrt(LinearRegression().fit(x, y[:, i]).score(x, y[:, i])) for i in range(3)])
    assert r_score(z, z_hat) == pytest.approx(reference, abs=1e-10)
    as_float32 = torch.from_numpy(z_hat).float()
    assert r_score(torch.from_numpy(z), as_float32) == pytest.approx(reference, abs=1e-4)
    assert reference < 0.99        # the noise is visible: the test could fail


@pytest.mark.parametrize("k_learned", [3, 4, 6])
def test_per_factor_scores_match_references_and_bound_mcc_by_r(k_learned):
    rng = np.random.default_rng(4)
    z = _latents(800, 4, seed=4)
    z_hat = np.tanh(z @ rng.normal(size=(4, k_learned))) + 0.3 * rng.normal(size=(800, k_learned))
    matched = matched_correlations(z, z_hat)
    assert np.isnan(matched).sum() == max(0, 4 - k_learned)
    assert np.nanmean(matched) == pytest.approx(
        _brute_force_mcc(z, z_hat, lambda a, b: stats.pearsonr(a, b)[0]), abs=1e-10)
    x = StandardScaler().fit_transform(z_hat)
    reference = [np.sqrt(LinearRegression().fit(x, z[:, i]).score(x, z[:, i])) for i in range(4)]
    per_factor = multiple_correlations(z, z_hat)
    np.testing.assert_allclose(per_factor, reference, atol=1e-10)
    # one coordinate explains a factor at most as well as all of them
    known = ~np.isnan(matched)
    assert (matched[known] <= per_factor[known] + 1e-12).all()
    assert (matched[known] < per_factor[known] - 1e-3).any()   # not equal everywhere: the check can fail


def _reference_dci(z: np.ndarray, z_hat: np.ndarray, weighting: str) -> dict[str, float]:
    x, y = StandardScaler().fit_transform(z_hat), StandardScaler().fit_transform(z)
    coefficients = [LinearRegression().fit(x, y[:, j]).coef_ for j in range(y.shape[1])]
    importance = np.abs(np.stack(coefficients, axis=1))
    n_codes, n_factors = importance.shape
    d_per_code = np.array([1 - entropy(row, base=n_factors) for row in importance])
    c_per_factor = np.array([1 - entropy(column, base=n_codes) for column in importance.T])
    if weighting == "uniform":
        code_w, factor_w = np.full(n_codes, 1 / n_codes), np.full(n_factors, 1 / n_factors)
    else:
        code_w, factor_w = importance.sum(1) / importance.sum(), importance.sum(0) / importance.sum()
    r2 = [LinearRegression().fit(x, y[:, j]).score(x, y[:, j]) for j in range(n_factors)]
    return {"disentanglement": float(d_per_code @ code_w), "completeness": float(c_per_factor @ factor_w),
            "informativeness": float(np.mean(r2))}


@pytest.mark.parametrize("weighting", ["importance", "uniform"])
def test_dci_matches_sklearn_scipy_reference(weighting):
    rng = np.random.default_rng(4)
    z = _latents(2000, 3, seed=4)
    z_hat = z @ (np.eye(3) + 0.4 * rng.normal(size=(3, 3))) + 0.2 * rng.normal(size=(2000, 3))
    z_hat = np.hstack([z_hat, rng.normal(size=(2000, 2))])      # two unused codes
    ours, reference = dci(z, z_hat, weighting=weighting), _reference_dci(z, z_hat, weighting)
    for name in ours:
        assert ours[name] == pytest.approx(reference[name], abs=1e-10), name
    assert 0.05 < ours["disentanglement"] < 0.95     # neither degenerate case


def test_dci_weightings_differ_with_noise_codes():
    """Six clean codes and three noise codes: importance weighting ignores the noise, uniform does not."""
    rng = np.random.default_rng(5)
    z = _latents(20000, 6, seed=5)
    z_hat = np.hstack([z, rng.normal(size=(20000, 3))])
    importance = dci(z, z_hat, weighting="importance")["disentanglement"]
    uniform = dci(z, z_hat, weighting="uniform")["disentanglement"]
    assert importance > 0.97
    assert 0.6 < uniform < 0.8
    assert mcc(z, z_hat) == pytest.approx(1.0, abs=1e-12)


def test_importance_matrix_is_abs_of_ols_coefficients():
    z = _latents(400, 2, seed=6)
    z_hat = np.stack([z[:, 0] + 2 * z[:, 1], z[:, 1]], axis=1)
    importance, r2 = importance_matrix(z, z_hat)
    x, y = StandardScaler().fit_transform(z_hat), StandardScaler().fit_transform(z)
    expected = np.abs(LinearRegression().fit(x, y).coef_.T)
    np.testing.assert_allclose(importance, expected, atol=1e-10)
    np.testing.assert_allclose(r2, 1.0, atol=1e-12)


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="same number of rows"):
        mcc(np.zeros((5, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="method"):
        mcc(_latents(10, 2), _latents(10, 2), method="kendall")
    with pytest.raises(ValueError, match="weighting"):
        dci(_latents(10, 2), _latents(10, 2), weighting="entropy")
    with pytest.raises(ValueError, match="finite"):
        r_score(np.full((3, 1), np.nan), np.zeros((3, 1)))
