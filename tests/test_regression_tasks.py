"""Sparse regression tasks over 3D Shapes: latents, sampling, coefficient modes, targets, seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metasparse.data import Shapes3D
from metasparse.tasks.regression import (
    FactorLatents,
    RegressionTaskSampler,
    TaskCoefficients,
    TaskConfig,
    regression_taskset,
    support_variability,
)


@pytest.fixture(scope="module")
def shapes() -> Shapes3D:
    return Shapes3D()


@pytest.fixture(scope="module")
def correlated(shapes) -> FactorLatents:
    return FactorLatents(shapes, distribution="equicorrelated", rho=0.9)


def test_realised_correlation_matches_the_notes_and_a_sample(correlated):
    assert correlated.realised_correlation() == pytest.approx(0.82, abs=0.005)
    drawn = correlated.latents.numpy()[correlated.sample(200_000, np.random.default_rng(0))]
    sample_correlation = np.corrcoef(drawn.T)
    np.testing.assert_allclose(sample_correlation, correlated.correlation(), atol=0.01)


def test_jitter_stays_within_its_grid_cell_and_standardises(shapes):
    from metasparse.data import flat_to_factor_indices

    grid_indices = flat_to_factor_indices(torch.arange(len(shapes))).numpy()
    for jitter in (0.0, 0.5):
        latents = FactorLatents(shapes, distribution="uniform", jitter=jitter).latents.numpy()
        np.testing.assert_allclose(latents.mean(0), 0.0, atol=1e-9)
        np.testing.assert_allclose(latents.std(0), 1.0, atol=1e-9)
        for factor in (0, 3, 5):
            cells = [latents[grid_indices[:, factor] == value, factor] for value in range(2)]
            spacing = np.median(cells[1]) - np.median(cells[0])
            width = (cells[0].max() - cells[0].min()) / spacing     # s grid gaps, up to sampling
            assert width == pytest.approx(jitter, abs=0.01)
            assert cells[0].max() < cells[1].min()


def test_toeplitz_and_uniform_distributions(shapes):
    toeplitz = FactorLatents(shapes, distribution="toeplitz", rho=0.9).correlation()
    assert toeplitz[0, 1] > toeplitz[0, 2] > toeplitz[0, 5]      # decays with |i - j|
    uniform = FactorLatents(shapes, distribution="uniform")
    assert abs(uniform.realised_correlation()) < 0.01
    assert uniform.effective_count() == pytest.approx(480_000)


@pytest.mark.parametrize(("mode", "expected_size"), [
    ("bernoulli", 6 * 0.5 / (1 - 0.5**6)),      # Bernoulli(0.5) conditioned on a non-empty support
    ("bernoulli_per_batch", 5.0),                # the paper's code, about 5 of 6 (notes section 3.2)
    ("fixed_size", 3.0), ("block", 2.0), ("gaussian", 6.0), ("laplace", 6.0)])
def test_coefficient_modes(mode, expected_size):
    config = TaskConfig(mode=mode, support_size=3, block_size=2)
    report = support_variability(config, 6, num_tasks=4000, seed=1)
    assert report["mean_support_size"] == pytest.approx(expected_size, abs=0.1)
    coefficients = TaskCoefficients(config, 6)
    rng = np.random.default_rng(2)
    if mode == "bernoulli_per_batch":
        coefficients.start_batch(rng)
    supports = np.array([coefficients.draw(rng) != 0 for _ in range(500)])
    assert supports.any(axis=1).all()
    if mode == "block":
        starts = supports.argmax(axis=1)
        assert set(starts.tolist()) == {0, 2, 4}
        assert (supports.sum(axis=1) == 2).all() and supports[np.arange(500), starts + 1].all()


def test_support_variability_holds_for_sparse_modes_and_fails_for_blocks():
    for mode in ("bernoulli", "fixed_size"):
        assert support_variability(TaskConfig(mode=mode, support_size=2), 6)["satisfied"], mode
    for block in (2, 3, 6):
        report = support_variability(TaskConfig(mode="block", block_size=block), 6)
        assert not report["satisfied"]
        assert report["intersections"][block - 1] == list(range(block))
    assert not support_variability(TaskConfig(mode="bernoulli_per_batch"), 6, num_tasks=16)["satisfied"]
    assert support_variability(TaskConfig(mode="gaussian"), 6)["weight_rank"] == 6


def test_tasks_are_consistent_and_seeded(shapes, correlated):
    config = TaskConfig(shots=10, test_shots=15, mode="bernoulli", noise_ratio=0.1, batch_size=3)
    sampler = RegressionTaskSampler(regression_taskset(correlated, config), seed=5)
    batch = sampler.batch(step=2)
    assert batch.images.shape == (3, 25, 64, 64, 3) and batch.images.dtype == torch.uint8
    assert torch.equal(batch.images[1], shapes.images(batch.indices[1]))
    torch.testing.assert_close(batch.latents, correlated.latents[batch.indices])
    signal = (batch.latents @ batch.weights.unsqueeze(-1)).squeeze(-1)
    for part in (slice(0, 10), slice(10, 25)):
        ratio = (batch.targets[:, part].double() - signal[:, part]).norm(dim=1) / signal[:, part].norm(dim=1)
        torch.testing.assert_close(ratio, torch.full((3,), 0.1, dtype=torch.float64), atol=1e-5, rtol=0)
    again = RegressionTaskSampler(regression_taskset(correlated, config), seed=5).batch(step=2)
    assert torch.equal(again.indices, batch.indices) and torch.equal(again.targets, batch.targets)
    assert not torch.equal(sampler.batch(step=3).indices, batch.indices)


def test_per_batch_rule_shares_the_forced_factors_within_a_batch(correlated):
    config = TaskConfig(shots=2, test_shots=2, mode="bernoulli_per_batch", batch_size=8)
    sampler = RegressionTaskSampler(regression_taskset(correlated, config), seed=0)
    supports = sampler.batch(step=0).weights != 0
    forced = sampler.taskset.coefficients.batch_support
    assert supports[:, torch.from_numpy(forced)].all()


def test_bad_configuration_is_rejected(correlated):
    with pytest.raises(ValueError, match="mode"):
        TaskConfig(mode="dense")
    with pytest.raises(ValueError, match="block_size"):
        TaskCoefficients(TaskConfig(mode="block", block_size=4), 6)
    with pytest.raises(ValueError, match="rho"):
        FactorLatents(correlated.dataset, rho=1.0)
