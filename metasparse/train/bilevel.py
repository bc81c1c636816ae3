r"""Bilevel training of an encoder through sparse multi-task regression: the paper's disentanglement study.

Each step draws 8 regression tasks over 3D Shapes (`metasparse.tasks.regression`), encodes their
images with `metasparse.models.Shapes3DEncoder`, fits each task's inner predictor on the support
features and minimises the outer loss $\frac{1}{2n}\|\Phi_{\text{out}} \hat w - y_{\text{out}}\|^2$
(mean over tasks) with AdamW (lr 1e-3, no weight decay), the gradient flowing through $\hat w$:

* ``method="lasso"``: `metasparse.heads.LassoHead` with $\lambda = $ ``lambda_ratio`` $\cdot
  \lambda_{\max}$ (native solver, implicit gradients on the support);
* ``method="ridge"``: $\hat w = (\Phi^\top\Phi + n\lambda_2 I)^{-1}\Phi^\top y$ with
  $\lambda_2 = $ ``ridge_ratio`` $\cdot \|\Phi\|_F^2 / n$ (taken without gradient, as the paper's code),
  differentiated by autograd through a Cholesky solve. Its evaluation also reports the ridge + FastICA
  baseline (``*_ica`` metrics).

With ``shared_samples`` (the paper's ``--no_inner_outer_split``) the inner and outer problems use all
``shots + test_shots`` samples; otherwise the inner one the first ``shots`` and the outer one the rest.
The encoder's output batch norm takes its statistics over each task's samples in training and its
running statistics in validation and evaluation.

Validation (every ``validate_every`` steps, on fixed tasks of a sampler seeded ``seed + 1``) reports the
outer loss, which picks ``best.pt``, and MCC / R on a fixed uniform sample of ``probe_samples`` images.
`evaluate_encoder` scores a trained encoder on the uniform grid (all images, or a seeded uniform sample
of ``eval_samples``), with and without FastICA fitted on ``ica_samples`` images of the training
distribution.

Example:
    >>> config = DisentangleConfig(steps=20, validate_every=10, val_tasks=16)       # doctest: +SKIP
    >>> trainer = BilevelTrainer(config)                                             # doctest: +SKIP
    >>> run_training(trainer, config.to_dict(), config.run_options("runs/lasso"))    # doctest: +SKIP
    >>> evaluate_encoder(trainer.encoder, trainer.latents, config)                   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metasparse._optional import require
from metasparse.heads import LassoHead
from metasparse.metrics.disentanglement import dci, matched_correlations, mcc, multiple_correlations, r_score
from metasparse.models.encoders import Shapes3DEncoder
from metasparse.tasks.regression import (
    COEFFICIENT_MODES,
    LATENT_DISTRIBUTIONS,
    FactorLatents,
    RegressionBatch,
    RegressionTaskSampler,
    TaskConfig,
    images_to_float,
    regression_taskset,
)
from metasparse.tasks.seeding import seed_everything
from metasparse.train.config import option
from metasparse.train.run import RunOptions, resolve_device

__all__ = ["METHODS", "BilevelTrainer", "DisentangleConfig", "encode", "evaluate_encoder", "make_latents",
           "ridge_weights", "score_representation"]

METHODS = ("lasso", "ridge")
"""Inner predictors of `DisentangleConfig.method` (ridge + ICA is the ridge run's ``*_ica`` metrics)."""

_ENCODE_CHUNK = 1024


@dataclass(frozen=True)
class DisentangleConfig:
    """Everything a disentanglement run depends on; saved as the run's ``config.json``. Defaults: the
    paper's README run, except the coefficient mode (see ``mode``).

    Example:
        >>> config = DisentangleConfig(method="ridge", rho=0.5)
        >>> config.task_config().mode, config.run_options("runs/ridge").best_metric
        ('bernoulli', 'loss')
    """

    data_path: str | None = option(None, "DeepMind's 3dshapes.h5 (default: the procedural renderer)")
    distribution: str = option("equicorrelated", "latent distribution", LATENT_DISTRIBUTIONS)
    rho: float = option(0.9, "correlation of the Gaussian reweighting of the latents")
    jitter: float = option(1.0, "factor jitter within grid cells, in grid gaps (the paper's z_noise_scale)")
    mode: str = option("bernoulli", "task coefficients ('bernoulli': non-empty Bernoulli(0.5) supports; "
                       "'bernoulli_per_batch': the paper's code, about 5 of 6 factors on)", COEFFICIENT_MODES)
    support_prob: float = option(0.5, "Bernoulli modes: probability of each factor in a task's support")
    support_size: int = option(3, "mode fixed_size: factors per task")
    block_size: int = option(2, "mode block: block size (2, 3: support violation; 6: dense)")
    noise_ratio: float = option(0.1, "target noise norm over signal norm, per task")
    shots: int = option(25, "inner (support) samples per task")
    test_shots: int = option(25, "outer (query) samples per task")
    shared_samples: bool = option(True, "fit and score each task on all its samples (the paper's setting)")
    method: str = option("lasso", "inner predictor", METHODS)
    lambda_ratio: float = option(0.3, "lasso: lambda / lambda_max")
    ridge_ratio: float = option(0.01, "ridge: lambda2 / (||Phi||_F^2 / n)")
    inner_max_iter: int = option(1000, "lasso solver iteration cap")
    inner_tol: float = option(1e-5, "lasso solver relative duality gap")
    z_dim: int = option(6, "representation size (the paper: the 6 true factors)")
    batch_size: int = option(8, "tasks per step")
    lr: float = option(1e-3, "AdamW learning rate")
    weight_decay: float = option(0.0, "AdamW weight decay")
    steps: int = option(20000, "optimisation steps")
    validate_every: int = option(1000, "validate and checkpoint every this many steps")
    val_tasks: int = option(1000, "fixed validation tasks")
    probe_samples: int = option(4096, "uniform images scored by MCC / R at each validation")
    eval_samples: int = option(0, "final evaluation: 0 = all 480,000 images, else a uniform sample")
    ica_samples: int = option(250_000, "images of the training distribution FastICA is fitted on")
    seed: int = option(0, "seed of the model, the tasks and the evaluation samples")
    device: str = option("auto", "cpu, cuda, cuda:N or auto")

    def __post_init__(self) -> None:
        positive = ("shots", "test_shots", "inner_max_iter", "z_dim", "batch_size", "steps", "validate_every",
                    "val_tasks", "probe_samples", "ica_samples", "support_size", "block_size")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.eval_samples, int) or self.eval_samples < 0:
            raise ValueError("eval_samples must be 0 (all images) or a positive int, "
                             f"got {self.eval_samples!r}")
        for name in ("lambda_ratio", "ridge_ratio", "lr", "inner_tol"):
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be a finite number > 0, got {getattr(self, name)!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        self.task_config()  # checks the task settings
        if not 0 <= self.rho < 1:
            raise ValueError(f"rho must be in [0, 1), got {self.rho!r}")

    def task_config(self) -> TaskConfig:
        """The tasks' settings (the same for training and validation)."""
        return TaskConfig(shots=self.shots, test_shots=self.test_shots, mode=self.mode,
                          support_prob=self.support_prob, support_size=self.support_size,
                          block_size=self.block_size, noise_ratio=self.noise_ratio,
                          batch_size=self.batch_size)

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready values."""
        return dataclasses.asdict(self)

    def run_options(self, out_dir: str | Path, resume: bool = False, progress: bool = True) -> RunOptions:
        """`RunOptions` of this config: best checkpoint by validation outer loss."""
        return RunOptions(Path(out_dir), self.steps, self.validate_every, best_metric="loss", best_mode="min",
                          resume=resume, progress=progress, progress_keys=("loss", "support_size"))


def ridge_weights(features: torch.Tensor, targets: torch.Tensor, ridge_ratio: float) -> torch.Tensor:
    r"""Inner ridge per task: $\min_w \frac{1}{2n}\|\Phi w - y\|^2 + \frac{\lambda_2}{2}\|w\|^2$,
    $\lambda_2 = $ ``ridge_ratio`` $\|\Phi\|_F^2 / n$ (no gradient through $\lambda_2$).

    Args:
        features: (B, n, d).
        targets: (B, n).
        ridge_ratio: > 0.

    Returns:
        (B, d), differentiable in both inputs.

    Example:
        >>> phi = torch.randn(2, 30, 4, dtype=torch.float64); w = torch.ones(4, dtype=torch.float64)
        >>> bool(torch.allclose(ridge_weights(phi, phi @ w, 1e-9), w.expand(2, 4), atol=1e-6))
        True
    """
    n, d = features.shape[-2:]
    with torch.no_grad():
        lambda2 = ridge_ratio * features.pow(2).sum(dim=(-2, -1)) / n
    gram = features.transpose(-1, -2) @ features + (n * lambda2)[:, None, None] * torch.eye(
        d, dtype=features.dtype, device=features.device)
    rhs = features.transpose(-1, -2) @ targets.unsqueeze(-1)
    return torch.cholesky_solve(rhs, torch.linalg.cholesky(gram)).squeeze(-1)


def make_latents(config: DisentangleConfig, device: torch.device | str = "cpu") -> FactorLatents:
    """The latents of ``config``: `metasparse.data.Shapes3D` (the file at ``config.data_path``, or the
    renderer on ``device``) with the config's distribution, rho and jitter."""
    from metasparse.data import Shapes3D

    dataset = Shapes3D(config.data_path, device=device)
    return FactorLatents(dataset, config.distribution, config.rho, config.jitter)


class BilevelTrainer:
    """Trains a `Shapes3DEncoder` through inner lasso or ridge regressions; a `metasparse.train.Trainer`.

    Args:
        config: The run's settings.
        latents: The dataset's latents, built with ``config``'s distribution, rho and jitter (default:
            built here from `metasparse.data.Shapes3D` of ``config.data_path`` on the run's device); pass
            them to share one copy between runs.

    Attributes:
        encoder: The model.
        latents: The dataset's latents and training distribution.
        device: Where the encoder runs.

    Example:
        >>> config = DisentangleConfig(steps=2, validate_every=1, val_tasks=8)      # doctest: +SKIP
        >>> trainer = BilevelTrainer(config)                                         # doctest: +SKIP
        >>> trainer.train_step(0)["loss"], trainer.validate()["mcc"]                 # doctest: +SKIP
        (0.18..., 0.3...)
    """

    def __init__(self, config: DisentangleConfig, latents: FactorLatents | None = None) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        seed_everything(config.seed)
        self.latents = make_latents(config, self.device) if latents is None else latents
        built_with = (self.latents.distribution, self.latents.rho, self.latents.jitter)
        if built_with != (config.distribution, config.rho, config.jitter):
            raise ValueError(f"latents were built with (distribution, rho, jitter) = {built_with}, but the "
                             f"config has {(config.distribution, config.rho, config.jitter)}")
        taskset = regression_taskset(self.latents, config.task_config())
        self.sampler = RegressionTaskSampler(taskset, seed=config.seed)
        self.val_sampler = RegressionTaskSampler(regression_taskset(self.latents, config.task_config()),
                                                 seed=config.seed + 1)
        self.encoder = Shapes3DEncoder(z_dim=config.z_dim).to(self.device)
        self.lasso = LassoHead(config.lambda_ratio, max_iter=config.inner_max_iter, tol=config.inner_tol)
        self.optimizer = torch.optim.AdamW(self.encoder.parameters(), lr=config.lr,
                                           weight_decay=config.weight_decay)
        probe_rng = np.random.default_rng([config.seed, 1])
        self.probe_indices = probe_rng.choice(len(self.latents.latents), size=config.probe_samples,
                                              replace=False)

    def _splits(self) -> tuple[slice, slice]:
        if self.config.shared_samples:
            return slice(None), slice(None)
        return slice(0, self.config.shots), slice(self.config.shots, None)

    def inner_weights(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The inner predictors (B, d) of features (B, n, d) and targets (B, n)."""
        if self.config.method == "lasso":
            return self.lasso.solve(features, targets)
        return ridge_weights(features, targets, self.config.ridge_ratio)

    def _loss(self, batch: RegressionBatch) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(images_to_float(batch.images.to(self.device)))
        return self.outer_loss(features, batch.targets.to(self.device))

    def outer_loss(self, features: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The outer loss (mean over tasks) of features (B, n, d) and targets (B, n), and the inner weights.

        The inner predictor is fitted on the support samples (all of them with ``shared_samples``) and
        scored on the query samples; the loss is differentiable in ``features`` through the weights.
        """
        inner, outer = self._splits()
        weights = self.inner_weights(features[:, inner], targets[:, inner])
        predictions = (features[:, outer] @ weights.unsqueeze(-1)).squeeze(-1)
        return 0.5 * (predictions - targets[:, outer]).pow(2).mean(), weights

    def train_step(self, step: int) -> dict[str, float]:
        """One AdamW step on meta-batch ``step``."""
        self.encoder.train()
        started = time.perf_counter()
        batch = self.sampler.batch(step)
        loaded = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss, weights = self._loss(batch)
        loss.backward()
        self.optimizer.step()
        finished = time.perf_counter()
        support_size = (weights.detach() != 0).sum(-1).double().mean()
        return {"loss": float(loss.detach()), "support_size": float(support_size),
                "time_data": loaded - started, "time_step": finished - started}

    def validate(self) -> dict[str, float]:
        """Outer loss and support size on the fixed validation tasks; MCC and R on the probe images."""
        self.encoder.eval()
        losses, sizes = [], []
        batches = math.ceil(self.config.val_tasks / self.config.batch_size)
        with torch.no_grad():
            for step in range(batches):
                count = min(self.config.batch_size, self.config.val_tasks - step * self.config.batch_size)
                loss, weights = self._loss(self.val_sampler.batch(step, range(count)))
                losses.append(float(loss) * count)
                sizes.append(float((weights != 0).sum(-1).float().sum()))
        learned = encode(self.encoder, self.latents, self.probe_indices, self.device)
        true = self.latents.latents[self.probe_indices].numpy()
        self.encoder.train()
        tasks = self.config.val_tasks
        return {"loss": sum(losses) / tasks, "support_size": sum(sizes) / tasks,
                "mcc": mcc(true, learned), "r": r_score(true, learned)}

    def state_dict(self) -> dict[str, Any]:
        """Encoder, optimiser and sampler states."""
        return {"encoder": self.encoder.state_dict(), "optimizer": self.optimizer.state_dict(),
                "sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.encoder.load_state_dict(state["encoder"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])


def encode(encoder: torch.nn.Module, latents: FactorLatents, indices: np.ndarray,
           device: torch.device | str = "cpu") -> np.ndarray:
    """Representations (N, z) of the images at ``indices``, in eval mode, in chunks, float64 numpy.

    Example:
        >>> from metasparse.data import Shapes3D
        >>> latents = FactorLatents(Shapes3D(), "uniform")
        >>> encode(Shapes3DEncoder(), latents, np.arange(10)).shape
        (10, 6)
    """
    was_training = encoder.training
    encoder.eval()
    chunks = []
    with torch.no_grad():
        for start in range(0, len(indices), _ENCODE_CHUNK):
            part = torch.as_tensor(indices[start:start + _ENCODE_CHUNK])
            images = images_to_float(latents.dataset.images(part)).to(device)
            chunks.append(encoder(images).double().cpu())
    encoder.train(was_training)
    return torch.cat(chunks).numpy()


def score_representation(z_true: np.ndarray, z_learned: np.ndarray) -> dict[str, Any]:
    """MCC (Pearson and Spearman), R and DCI (importance and uniform weighting) of one representation,
    and each factor's share of MCC and R (``mcc_per_factor``: `matched_correlations`; ``r_per_factor``:
    `multiple_correlations`; lists in factor order, None for a factor without a coordinate).

    Example:
        >>> z = np.random.default_rng(0).normal(size=(300, 2))
        >>> round(score_representation(z, z[:, ::-1])["mcc"], 6)
        1.0
    """
    importance, uniform = dci(z_true, z_learned), dci(z_true, z_learned, weighting="uniform")
    matched, multiple = matched_correlations(z_true, z_learned), multiple_correlations(z_true, z_learned)
    return {"mcc": float(np.nanmean(matched)), "mcc_spearman": mcc(z_true, z_learned, method="spearman"),
            "r": float(multiple.mean()), "r_per_factor": multiple.tolist(),
            "mcc_per_factor": [None if np.isnan(value) else value for value in matched.tolist()],
            "dci_d": importance["disentanglement"],
            "dci_c": importance["completeness"], "dci_i": importance["informativeness"],
            "dci_d_uniform": uniform["disentanglement"], "dci_c_uniform": uniform["completeness"]}


def evaluate_encoder(encoder: torch.nn.Module, latents: FactorLatents, config: DisentangleConfig,
                     device: torch.device | str = "cpu") -> dict[str, Any]:
    """Score an encoder on the uniform grid, as is and after FastICA fitted on the training distribution.

    The evaluation images are all of the dataset's (``config.eval_samples == 0``, the paper's setting) or
    a uniform sample of that many without replacement; FastICA (``n_components=z_dim``,
    ``whiten="unit-variance"``, ``fun="logcosh"``, as the paper) is fitted on ``config.ica_samples``
    images drawn from the training distribution, then applied to the evaluation representation. Both
    samples are seeded by ``config.seed``.

    Returns:
        `score_representation`'s metrics, the same with an ``_ica`` suffix, ``"eval_images"`` and
        ``"ica_converged"``.

    Example:
        >>> scores = evaluate_encoder(trainer.encoder, latents, config)  # doctest: +SKIP
        >>> scores["mcc"], scores["r"]                                   # doctest: +SKIP
    """
    decomposition = require("sklearn.decomposition")
    convergence_warning = require("sklearn.exceptions").ConvergenceWarning
    rng = np.random.default_rng([config.seed, 2])
    total = len(latents.latents)
    indices = (np.arange(total) if config.eval_samples == 0 or config.eval_samples >= total
               else np.sort(rng.choice(total, size=config.eval_samples, replace=False)))
    learned = encode(encoder, latents, indices, device)
    true = latents.latents.numpy()[indices]
    scores: dict[str, Any] = {"eval_images": len(indices), **score_representation(true, learned)}
    training = encode(encoder, latents, latents.sample(config.ica_samples, rng), device)
    ica = decomposition.FastICA(n_components=learned.shape[1], whiten="unit-variance", fun="logcosh",
                                random_state=config.seed, max_iter=1000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", convergence_warning)
        ica.fit(training)
    scores["ica_converged"] = not any(issubclass(w.category, convergence_warning) for w in caught)
    scores.update({f"{name}_ica": value
                   for name, value in score_representation(true, ica.transform(learned)).items()})
    return scores
