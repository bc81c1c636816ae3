"""Bilevel disentanglement training: inner ridge, the trainer on the run machinery, resume, evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metasparse.tasks.regression import FactorLatents
from metasparse.train.bilevel import (
    BilevelTrainer,
    DisentangleConfig,
    evaluate_encoder,
    make_latents,
    ridge_weights,
)
from metasparse.train.run import load_checkpoint, read_metrics, run_training

TINY = dict(shots=4, test_shots=4, batch_size=2, val_tasks=2, probe_samples=128, validate_every=2,
            eval_samples=500, ica_samples=500, device="cpu")


@pytest.fixture(scope="module")
def latents() -> FactorLatents:
    """One copy of the default latents (rho = 0.9, jitter 1) for every trainer of this module."""
    return make_latents(DisentangleConfig(**TINY))


def test_ridge_weights_match_the_closed_form_and_its_gradient():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(3, 12, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    targets = torch.randn(3, 12, dtype=torch.float64, generator=generator, requires_grad=True)
    weights = ridge_weights(features, targets, 0.1)
    for b in range(3):
        phi, y = features[b].detach().numpy(), targets[b].detach().numpy()
        lambda2 = 0.1 * (phi**2).sum() / 12
        expected = np.linalg.solve(phi.T @ phi + 12 * lambda2 * np.eye(4), phi.T @ y)
        np.testing.assert_allclose(weights[b].detach().numpy(), expected, rtol=1e-10)

    # Gradients: lambda2 is a constant (stop-gradient), so they are those of a plain solve with it fixed.
    probe = torch.randn(3, 4, dtype=torch.float64, generator=generator)
    ours = torch.autograd.grad((weights * probe).sum(), (features, targets))
    lambda2 = (0.1 * features.detach().pow(2).sum(dim=(1, 2)) / 12)[:, None, None]
    gram = features.transpose(1, 2) @ features + 12 * lambda2 * torch.eye(4, dtype=torch.float64)
    reference = torch.linalg.solve(gram, (features.transpose(1, 2) @ targets[..., None]))[..., 0]
    expected = torch.autograd.grad((reference * probe).sum(), (features, targets))
    for got, want in zip(ours, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_config_is_checked():
    with pytest.raises(ValueError, match="method"):
        DisentangleConfig(method="elastic")
    with pytest.raises(ValueError, match="block_size"):
        DisentangleConfig(block_size=0)
    with pytest.raises(ValueError, match="eval_samples"):
        DisentangleConfig(eval_samples=-1)
    with pytest.raises(ValueError, match="latents were built"):
        BilevelTrainer(DisentangleConfig(rho=0.5, **TINY), FactorLatents(_Grid(), rho=0.9))


class _Grid:
    """A stand-in dataset: factors only (the trainer must reject mismatched latents before any image)."""

    factors = torch.cartesian_prod(torch.arange(3.0), torch.arange(4.0))

    def images(self, indices: object) -> torch.Tensor:
        raise AssertionError("not needed")


@pytest.mark.parametrize("method", ["lasso", "ridge"])
def test_training_steps_and_validation(tmp_path, latents, method):
    config = DisentangleConfig(method=method, steps=3, shared_samples=(method == "lasso"), **TINY)
    trainer = BilevelTrainer(config, latents)
    before = [p.detach().clone() for p in trainer.encoder.parameters()]
    summary = run_training(trainer, config.to_dict(), config.run_options(tmp_path / method, progress=False))
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.encoder.parameters(), strict=True))
    records = read_metrics(tmp_path / method)
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3]
    last = summary["last"]
    assert np.isfinite(last["loss"]) and 0.0 <= last["mcc"] <= 1.0 and 0.0 <= last["r"] <= 1.0
    if method == "ridge":
        assert last["support_size"] == 6.0         # ridge uses every coordinate


def test_killed_and_resumed_run_ends_like_an_uninterrupted_one(tmp_path, latents):
    config = DisentangleConfig(steps=4, **TINY)

    class KilledAt(BilevelTrainer):
        def train_step(self, step: int) -> dict[str, float]:
            if step == 3:
                raise KeyboardInterrupt   # between the checkpoints of steps 2 and 4
            return super().train_step(step)

    def options(name: str, resume: bool = False):
        return config.run_options(tmp_path / name, resume=resume, progress=False)

    full = run_training(BilevelTrainer(config, latents), config.to_dict(), options("full"))
    with pytest.raises(KeyboardInterrupt):
        run_training(KilledAt(config, latents), config.to_dict(), options("cut"))
    resumed = run_training(BilevelTrainer(config, latents), config.to_dict(), options("cut", resume=True))
    assert resumed["last"] == full["last"]
    full_state = load_checkpoint(tmp_path / "full" / "last.pt")["trainer"]["encoder"]
    resumed_state = load_checkpoint(tmp_path / "cut" / "last.pt")["trainer"]["encoder"]
    for name, value in full_state.items():
        assert torch.equal(value, resumed_state[name]), name
    untimed = [[{k: v for k, v in record.items() if not k.startswith("time_")}
                for record in read_metrics(tmp_path / run)] for run in ("cut", "full")]
    assert untimed[0] == untimed[1]


def test_evaluate_encoder_reports_plain_and_ica_metrics(latents):
    config = DisentangleConfig(**TINY)
    trainer = BilevelTrainer(config, latents)
    scores = evaluate_encoder(trainer.encoder, trainer.latents, config)
    assert scores["eval_images"] == 500
    for name in ("mcc", "mcc_spearman", "r", "dci_d", "dci_c", "dci_i", "dci_d_uniform", "dci_c_uniform"):
        assert 0.0 <= scores[name] <= 1.0 and 0.0 <= scores[f"{name}_ica"] <= 1.0, name
    # ICA is an invertible linear map of the representation: the linear score R cannot change.
    assert scores["r_ica"] == pytest.approx(scores["r"], abs=1e-6)
