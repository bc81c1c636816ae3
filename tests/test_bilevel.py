"""Bilevel disentanglement training: inner ridge, the trainer on the run machinery, resume, evaluation."""

from __future__ import annotations

import json

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


@pytest.mark.slow
def test_sweep_cli_shards_skips_finished_runs_and_writes_results(tmp_path):
    from metasparse.cli import main
    from metasparse.experiments.disentangle import RESULTS_FILE

    flags = ["--rhos", "0.9", "--methods", "lasso", "ridge", "--seeds", "0", "--steps", "1",
             "--validate-every", "1", "--val-tasks", "2", "--probe-samples", "64", "--eval-samples", "300",
             "--ica-samples", "300", "--shots", "3", "--test-shots", "3", "--batch-size", "2",
             "--device", "cpu", "--no-progress", "--out", str(tmp_path)]
    assert main(["disentangle", "sweep", *flags, "--shard", "1/2"]) == 0
    runs = sorted(path.parent.name for path in tmp_path.glob(f"runs/*/{RESULTS_FILE}"))
    assert runs == ["ridge-rho0.9-jit1-bernoulli-lam0.01-s0"]          # the second of the two runs
    finished = (tmp_path / "runs" / runs[0] / RESULTS_FILE).stat().st_mtime_ns
    assert main(["disentangle", "sweep", *flags]) == 0
    assert (tmp_path / "runs" / runs[0] / RESULTS_FILE).stat().st_mtime_ns == finished    # skipped
    records = json.loads((tmp_path / RESULTS_FILE).read_text())
    assert sorted(record["method"] for record in records) == ["inner-lasso", "inner-ridge", "inner-ridge+ICA"]
    assert (tmp_path / "correlation.png").stat().st_size > 0
    assert (tmp_path / "validation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit, match="shard"):
        main(["disentangle", "sweep", *flags, "--shard", "2/2"])

    # scoring a finished run again on the same sample reproduces its evaluation, per-factor scores included
    run_dir = tmp_path / "runs" / runs[0]
    assert main(["disentangle", "score", str(run_dir), "--eval-samples", "300",
                 "--out", str(tmp_path / "all.json")]) == 0
    rescored = json.loads((run_dir / "rescored.json").read_text())["scores"]
    assert json.loads((tmp_path / "all.json").read_text())[0]["scores"] == rescored
    original = json.loads((run_dir / RESULTS_FILE).read_text())["scores"]
    assert rescored == original
    with pytest.raises(SystemExit, match="not a finished run"):
        main(["disentangle", "score", str(tmp_path)])
    with pytest.raises(SystemExit, match="eval_samples"):
        main(["disentangle", "score", str(run_dir), "--eval-samples", "-1"])


def test_support_violation_plot_centres_the_bars_of_the_methods_that_ran(tmp_path):
    from metasparse.experiments.disentangle import plot_support_violation

    records = [{"mode": "block", "block_size": block, "method": "inner-lasso", "mcc": mcc, "r": 0.95}
               for block, mcc in ((2, 0.93), (3, 0.78))]
    records.append({"mode": "bernoulli", "block_size": 2, "method": "inner-ridge", "mcc": 0.6, "r": 0.9})
    figure = plot_support_violation(records, tmp_path / "support.png")
    mcc_axis = figure.axes[0]
    assert [text.get_text() for text in mcc_axis.get_legend().get_texts()] == ["inner-lasso"]
    centres = [bar.get_x() + bar.get_width() / 2 for bar in mcc_axis.patches]
    assert centres == pytest.approx(list(mcc_axis.get_xticks()))
    assert [bar.get_height() for bar in mcc_axis.patches] == pytest.approx([0.93, 0.78])
    assert (tmp_path / "support.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class _FactorsOnly:
    """A 6-factor grid (5 values each) without images: for training a linear encoder of the latents."""

    factors = torch.cartesian_prod(*[torch.linspace(0.0, 1.0, 5, dtype=torch.float64)] * 6)

    def images(self, indices: object) -> torch.Tensor:
        return torch.zeros(len(torch.as_tensor(indices)), 1, 1, 1, dtype=torch.uint8)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lasso", "ridge"])
def test_inner_lasso_disentangles_a_linear_mixing_of_correlated_latents(method):
    """The method's core claim, quick: the same tasks, inner solvers and outer loss as a real run, with a
    learned linear map of the true latents (started entangled) in place of the image encoder. The inner
    lasso turns it into a permuted, rescaled copy of the factors; the inner ridge, which is rotation
    invariant, has no reason to, and stays entangled."""
    from metasparse.metrics import mcc
    from metasparse.models import TaskBatchNorm

    config = DisentangleConfig(method=method, rho=0.5, batch_size=32, device="cpu")
    latents = FactorLatents(_FactorsOnly(), rho=0.5)
    trainer = BilevelTrainer(config, latents)
    generator = torch.Generator().manual_seed(0)
    mixing = torch.nn.Parameter(torch.linalg.qr(torch.randn(6, 6, generator=generator))[0])
    norm = TaskBatchNorm(6)
    optimizer = torch.optim.Adam([mixing], lr=0.05)
    z = latents.latents[torch.from_numpy(latents.sample(4000, np.random.default_rng(0)))]
    start = mcc(z, z @ mixing.detach().double())
    for step in range(80 if method == "lasso" else 40):
        batch = trainer.sampler.batch(step)
        loss, _ = trainer.outer_loss(norm(batch.latents.float() @ mixing), batch.targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    end = mcc(z, z @ mixing.detach().double())
    if method == "lasso":
        assert end > 0.95 and end > start + 0.2       # measured: 0.68 -> 0.96 at step 75
    else:
        assert end < start + 0.05                     # measured: 0.68 -> 0.66 at step 50
