r"""Sparse multi-task regression over a dataset with known factors (3D Shapes first): the study's tasks.

A task is an episode of ``shots + test_shots`` images drawn i.i.d. from a distribution over the dataset's
images, with targets that are a sparse linear function of the images' (jittered, standardised) factors:

$$ y = Z w + \sigma \frac{\|Z w\|_2}{\|\varepsilon\|_2} \varepsilon, \qquad \varepsilon \sim N(0, I), $$

so the noise norm is ``noise_ratio`` ($\sigma$) times the signal norm, per task, with the noise drawn
separately for the support (first ``shots``) and query (last ``test_shots``) samples, as the paper's code.

* **Latents** (`FactorLatents`): each factor is jittered once by ``U(-s gap / 2, s gap / 2)``
  (``s = jitter``, gap = the spacing of its grid values; fixed seed 546243265 as the paper) to break
  the grid, then standardised over all images. Images are drawn with probability proportional to a
  Gaussian density of their latents: ``"equicorrelated"`` (covariance 1 on the diagonal, ``rho``
  elsewhere, the paper's ``harder_gauss``), ``"toeplitz"`` (``rho^|i-j|``, ``gauss``), or ``"uniform"``.
  The *realised* correlation (`FactorLatents.realised_correlation`) is lower than ``rho`` because the
  grid is bounded: about 0.82 at ``rho = 0.9``.
* **Coefficients** (`TaskCoefficients`, ``mode``): ``"bernoulli"`` (each factor in the support with
  probability ``support_prob``, redrawn until the support is not empty, i.e. conditioned on being
  non-empty; Gaussian values on it), ``"bernoulli_per_batch"`` (the paper's code: one set of factors,
  ``k`` indices drawn with replacement per *meta-batch*, is switched on in every task of the batch on top
  of the Bernoulli mask, so about 5 of 6 factors are on), ``"fixed_size"`` (``support_size`` factors),
  ``"block"`` (one of the contiguous blocks ``{0..b-1}, {b..2b-1}, ...`` of ``block_size`` b),
  ``"gaussian"`` and ``"laplace"`` (dense).
* **Sampling**: a learn2learn ``Taskset`` (`regression_taskset`) whose task transforms draw the
  images (`SampleImages`) and the coefficients (`TaskCoefficients`) and whose collate renders all images of
  the task in one batched call and computes the targets. `RegressionTaskSampler` makes meta-batch
  ``step`` a fixed function of ``(seed, step)``, like `metasparse.tasks.EpisodeSampler`, so that a resumed
  run sees the same tasks. The same ``mode`` applies to every split (the released code applied it to
  the validation split only).

`support_variability` checks the identifiability assumption of a coefficient mode: every factor must be
the intersection of the supports that contain it.

Example:
    >>> from metasparse.data import Shapes3D
    >>> latents = FactorLatents(Shapes3D(), distribution="equicorrelated", rho=0.9)
    >>> round(latents.realised_correlation(), 2)
    0.82
    >>> sampler = RegressionTaskSampler(regression_taskset(latents, TaskConfig(mode="bernoulli")), seed=0)
    >>> batch = sampler.batch(step=0)
    >>> batch.images.shape, batch.targets.shape, batch.weights.shape
    (torch.Size([8, 50, 64, 64, 3]), torch.Size([8, 50]), torch.Size([8, 6]))
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from metasparse._optional import require
from metasparse.tasks.seeding import derive_seed, seeded

if TYPE_CHECKING:
    from learn2learn.data import Taskset

__all__ = [
    "COEFFICIENT_MODES",
    "LATENT_DISTRIBUTIONS",
    "ORIGINAL_JITTER_SEED",
    "FactorDataset",
    "FactorLatents",
    "RegressionBatch",
    "RegressionCollate",
    "RegressionTaskSampler",
    "SampleImages",
    "TaskCoefficients",
    "TaskConfig",
    "images_to_float",
    "regression_taskset",
    "support_variability",
]

CoefficientMode = Literal["bernoulli", "bernoulli_per_batch", "fixed_size", "block", "gaussian", "laplace"]
COEFFICIENT_MODES: tuple[str, ...] = ("bernoulli", "bernoulli_per_batch", "fixed_size", "block", "gaussian",
                                      "laplace")
LatentDistribution = Literal["equicorrelated", "toeplitz", "uniform"]
LATENT_DISTRIBUTIONS: tuple[str, ...] = ("equicorrelated", "toeplitz", "uniform")
#: The seed of the paper's factor jitter (``z_noise_scale``).
ORIGINAL_JITTER_SEED = 546243265


class FactorDataset(Protocol):
    """What the tasks need of a dataset: ``factors`` (N, k) and ``images(indices)``, uint8 (N, H, W, C)."""

    factors: torch.Tensor

    def images(self, indices: object) -> torch.Tensor: ...


def images_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, C) -> float32 (..., C, H, W) in [0, 1].

    Example:
        >>> images_to_float(torch.full((2, 4, 4, 3), 255, dtype=torch.uint8)).shape
        torch.Size([2, 3, 4, 4])
    """
    return images.movedim(-1, -3).float().div_(255)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


class FactorLatents:
    """Jittered, standardised factors of a dataset and a sampling distribution over its images.

    Args:
        dataset: Anything with ``factors`` (N, k) and ``images(indices)`` (e.g. `metasparse.data.Shapes3D`).
        distribution: ``"equicorrelated"``, ``"toeplitz"`` or ``"uniform"``.
        rho: Correlation of the Gaussian reweighting, in [0, 1).
        jitter: ``s`` in [0, 1]: each factor moves by up to ``s`` half grid gaps (0 leaves the grid).
        jitter_seed: Seed of the jitter (the paper's by default).

    Attributes:
        latents: float64 (N, k) jittered, standardised factors.
        probabilities: float64 (N,) sampling probabilities of the images.

    Example:
        >>> from metasparse.data import Shapes3D
        >>> latents = FactorLatents(Shapes3D(), distribution="uniform", jitter=0.0)
        >>> latents.latents.shape, bool(abs(latents.latents.mean()) < 1e-9)
        (torch.Size([480000, 6]), True)
    """

    def __init__(self, dataset: FactorDataset, distribution: LatentDistribution = "equicorrelated",
                 rho: float = 0.9, jitter: float = 1.0, jitter_seed: int = ORIGINAL_JITTER_SEED) -> None:
        _check(distribution in LATENT_DISTRIBUTIONS,
               f"distribution must be one of {LATENT_DISTRIBUTIONS}, got {distribution!r}")
        _check(0.0 <= rho < 1.0, f"rho must be in [0, 1), got {rho!r}")
        _check(0.0 <= jitter <= 1.0, f"jitter must be in [0, 1], got {jitter!r}")
        self.dataset, self.distribution = dataset, distribution
        self.rho, self.jitter = float(rho), float(jitter)
        factors = torch.as_tensor(dataset.factors, dtype=torch.float64).cpu().numpy()
        _check(factors.ndim == 2 and factors.shape[0] >= 2,
               f"dataset.factors must be (N, k) with N >= 2, got {factors.shape}")
        jittered = factors + self.jitter * _grid_gaps(factors) * (
            np.random.default_rng(jitter_seed).random(factors.shape) - 0.5)
        scale = jittered.std(axis=0)
        latents = (jittered - jittered.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
        self.latents = torch.from_numpy(latents)
        self.probabilities = torch.from_numpy(self._probabilities(latents))
        self._cdf = np.cumsum(self.probabilities.numpy())
        self._cdf /= self._cdf[-1]

    @property
    def num_factors(self) -> int:
        """k, the number of factors."""
        return self.latents.shape[1]

    def covariance(self) -> np.ndarray:
        """The (k, k) covariance of the Gaussian reweighting (identity for ``"uniform"`` is not used)."""
        k = self.num_factors
        distance = np.abs(np.subtract.outer(np.arange(k), np.arange(k)))
        if self.distribution == "toeplitz":
            return self.rho ** distance
        return np.where(distance == 0, 1.0, self.rho)

    def _probabilities(self, latents: np.ndarray) -> np.ndarray:
        if self.distribution == "uniform":
            return np.full(latents.shape[0], 1.0 / latents.shape[0])
        precision = np.linalg.inv(self.covariance())
        log_density = -0.5 * np.einsum("ni,ij,nj->n", latents, precision, latents)
        weights = np.exp(log_density - log_density.max())
        return weights / weights.sum()

    def sample(self, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """``n`` image indices drawn i.i.d. with replacement from `probabilities` (numpy's global
        generator unless ``rng``)."""
        uniforms = rng.random(n) if rng is not None else np.random.random(n)  # noqa: NPY002
        return np.minimum(np.searchsorted(self._cdf, uniforms, side="right"), len(self._cdf) - 1)

    def correlation(self) -> np.ndarray:
        """The exact (k, k) Pearson correlation of the latents under `probabilities`."""
        z, p = self.latents.numpy(), self.probabilities.numpy()
        centred = z - p @ z
        covariance = centred.T @ (centred * p[:, None])
        scale = np.sqrt(np.diag(covariance))
        return covariance / np.outer(scale, scale)

    def realised_correlation(self) -> float:
        """Mean off-diagonal correlation of the latents under the sampling distribution (exact, not sampled).

        Example:
            >>> from metasparse.data import Shapes3D
            >>> round(FactorLatents(Shapes3D(), rho=0.5).realised_correlation(), 2)
            0.3
        """
        correlation = self.correlation()
        return float(correlation[~np.eye(len(correlation), dtype=bool)].mean())

    def effective_count(self) -> float:
        """``1 / sum(p^2)``: how many images the distribution effectively draws from."""
        return float(1.0 / (self.probabilities.numpy() ** 2).sum())


def _grid_gaps(factors: np.ndarray) -> np.ndarray:
    """(k,) smallest spacing between consecutive distinct values of each factor (0 for a constant one)."""
    gaps = []
    for column in factors.T:
        values = np.unique(column)
        gaps.append(float(np.diff(values).min()) if values.size > 1 else 0.0)
    return np.array(gaps)


@dataclass(frozen=True)
class TaskConfig:
    """How tasks are drawn.

    Attributes:
        shots: Support (inner) samples per task.
        test_shots: Query (outer) samples per task.
        mode: Coefficient mode (see the module docstring), one of `COEFFICIENT_MODES`.
        support_prob: Bernoulli modes: probability of each factor being in the support.
        support_size: ``"fixed_size"``: the support size.
        block_size: ``"block"``: the block size b (must divide the number of factors).
        noise_ratio: Noise norm over signal norm, per task and split.
        batch_size: Tasks per meta-batch.

    Example:
        >>> TaskConfig(mode="block", block_size=3).block_size
        3
    """

    shots: int = 25
    test_shots: int = 25
    mode: CoefficientMode = "bernoulli"
    support_prob: float = 0.5
    support_size: int = 3
    block_size: int = 2
    noise_ratio: float = 0.1
    batch_size: int = 8

    def __post_init__(self) -> None:
        _check(self.mode in COEFFICIENT_MODES, f"mode must be one of {COEFFICIENT_MODES}, got {self.mode!r}")
        for name in ("shots", "test_shots", "support_size", "block_size", "batch_size"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= 1, f"{name} must be a positive int, got {value!r}")
        _check(0.0 < self.support_prob <= 1.0, f"support_prob must be in (0, 1], got {self.support_prob!r}")
        _check(self.noise_ratio >= 0.0, f"noise_ratio must be >= 0, got {self.noise_ratio!r}")


@dataclass
class TaskCoefficients:
    """Task transform: draws one task's coefficients ``w`` (k,) and attaches them to every sample.

    Draws from numpy's global generator (seeded per task by `RegressionTaskSampler`). For
    ``"bernoulli_per_batch"``, `start_batch` draws the set switched on in every task of the batch.

    Example:
        >>> coefficients = TaskCoefficients(TaskConfig(mode="fixed_size", support_size=2), num_factors=6)
        >>> int((coefficients.draw(np.random.default_rng(0)) != 0).sum())
        2
    """

    config: TaskConfig
    num_factors: int
    batch_support: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        k, config = self.num_factors, self.config
        if config.mode == "fixed_size":
            _check(config.support_size <= k,
                   f"support_size must be at most the {k} factors, got {config.support_size}")
        if config.mode == "block":
            _check(k % config.block_size == 0,
                   f"block_size must divide the number of factors ({k}), got {config.block_size}")

    def start_batch(self, rng: np.random.Generator) -> None:
        """Draw the batch-shared support of ``"bernoulli_per_batch"`` (k indices with replacement)."""
        mask = np.zeros(self.num_factors, dtype=bool)
        mask[rng.integers(0, self.num_factors, size=self.num_factors)] = True
        self.batch_support = mask

    def support(self, rng: np.random.Generator) -> np.ndarray:
        """One task's support: bool (k,)."""
        k, config = self.num_factors, self.config
        if config.mode in ("gaussian", "laplace"):
            return np.ones(k, dtype=bool)
        if config.mode == "fixed_size":
            mask = np.zeros(k, dtype=bool)
            mask[rng.choice(k, size=config.support_size, replace=False)] = True
            return mask
        if config.mode == "block":
            start = config.block_size * int(rng.integers(0, k // config.block_size))
            mask = np.zeros(k, dtype=bool)
            mask[start:start + config.block_size] = True
            return mask
        mask = rng.random(k) < config.support_prob
        if config.mode == "bernoulli_per_batch":
            if self.batch_support is None:
                raise ValueError("mode='bernoulli_per_batch' needs start_batch() before each meta-batch")
            return mask | self.batch_support
        while not mask.any():
            mask = rng.random(k) < config.support_prob
        return mask

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """One task's coefficients: float64 (k,), zero off the support."""
        mask = self.support(rng)
        if self.config.mode == "laplace":
            return rng.laplace(size=self.num_factors)
        return rng.normal(size=self.num_factors) * mask

    def __call__(self, task_description: list) -> list:
        # A generator seeded from the global one: seeded per task by RegressionTaskSampler.
        weights = self.draw(np.random.default_rng(np.random.randint(2**62)))  # noqa: NPY002
        for description in task_description:
            description.transforms.append(functools.partial(_with_weights, weights=weights))
        return task_description


def _with_weights(index: int, weights: np.ndarray) -> tuple[int, np.ndarray]:
    return index, weights


@dataclass
class SampleImages:
    """Task transform: ``n`` image indices drawn from ``latents``' distribution (numpy's global generator)."""

    latents: FactorLatents
    n: int

    def __call__(self, task_description: list | None) -> list:
        data_description = require("learn2learn.data.task_dataset").DataDescription
        return [data_description(int(i)) for i in self.latents.sample(self.n)]


class RegressionBatch(NamedTuple):
    """A meta-batch of regression tasks (B tasks, n = shots + test_shots samples each).

    Shapes: ``images`` uint8 (B, n, H, W, C) as the dataset gives them (`images_to_float` converts
    them, best once per batch on the model's device); ``latents`` float64 (B, n, k); ``targets``
    float32 (B, n); ``weights`` float64 (B, k); ``indices`` int64 (B, n). The first ``shots`` samples are
    the support, the rest the query.

    Example:
        >>> batch = sampler.batch(step)                    # from a RegressionTaskSampler  # doctest: +SKIP
        >>> support, query = batch.images[:, :25], batch.images[:, 25:]                  # doctest: +SKIP
    """

    images: torch.Tensor
    latents: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor
    indices: torch.Tensor


@dataclass
class RegressionCollate:
    """Task collate: renders (or reads) a task's images in one batched call and computes its targets."""

    latents: FactorLatents
    shots: int
    noise_ratio: float

    def __call__(self, items: Sequence[tuple[int, np.ndarray]]) -> RegressionBatch:
        indices = np.array([index for index, _ in items], dtype=np.int64)
        weights = items[0][1]
        z = self.latents.latents.numpy()[indices]
        signal = z @ weights
        targets = np.concatenate([_add_noise(part, self.noise_ratio)
                                  for part in (signal[:self.shots], signal[self.shots:])])
        images = self.latents.dataset.images(torch.from_numpy(indices))
        return RegressionBatch(images, torch.from_numpy(z), torch.from_numpy(targets).float(),
                               torch.from_numpy(weights), torch.from_numpy(indices))


def _add_noise(signal: np.ndarray, ratio: float) -> np.ndarray:
    """signal + ratio * ||signal|| / ||eps|| * eps, eps ~ N(0, I) from numpy's global generator."""
    if signal.size == 0 or ratio == 0.0:
        return signal
    noise = np.random.standard_normal(signal.shape)  # noqa: NPY002
    return signal + ratio * np.linalg.norm(signal) / np.linalg.norm(noise) * noise


class _IndexDataset(Dataset):
    """Item ``i`` is ``i``: the task collate loads images in batches, not one by one."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> int:
        return index


def regression_taskset(latents: FactorLatents, config: TaskConfig, num_tasks: int = -1) -> Taskset:
    """A learn2learn ``Taskset`` of regression tasks over ``latents``' dataset.

    Its task transforms are `SampleImages` then `TaskCoefficients`; its collate is `RegressionCollate`,
    so ``sample()`` returns an unbatched `RegressionBatch` (no leading B). It draws from numpy's global
    generator: use `RegressionTaskSampler` for reproducible meta-batches.

    Args:
        latents: The dataset's latents and sampling distribution.
        config: Shots, coefficient mode, noise.
        num_tasks: As learn2learn: ``-1`` draws new tasks on every call.

    Example:
        >>> from metasparse.data import Shapes3D
        >>> latents = FactorLatents(Shapes3D(), "uniform")
        >>> regression_taskset(latents, TaskConfig(shots=5, test_shots=5)).sample().images.shape
        torch.Size([10, 64, 64, 3])
    """
    l2l = require("learn2learn")
    n = len(latents.latents)
    meta = l2l.data.MetaDataset(_IndexDataset(n), labels_to_indices={0: list(range(n))})
    transforms = [SampleImages(latents, config.shots + config.test_shots),
                  TaskCoefficients(config, latents.num_factors)]
    taskset = l2l.data.Taskset(meta, task_transforms=transforms, num_tasks=num_tasks,
                               task_collate=RegressionCollate(latents, config.shots, config.noise_ratio))
    taskset.regression_config = config
    taskset.coefficients = transforms[1]
    return taskset


class RegressionTaskSampler:
    """Meta-batches of regression tasks, batch ``step`` a fixed function of ``(seed, step)``.

    Task ``i`` of batch ``step`` is drawn with the global generators seeded by
    ``derive_seed(seed, step, i)`` (then restored); the batch-shared support of
    ``"bernoulli_per_batch"`` by ``derive_seed(seed, step)``. So a resumed run sees the same tasks, and a
    fixed validation set is ``[batch(step) for step in range(n)]`` of a sampler with its own seed.

    Args:
        taskset: From `regression_taskset`.
        seed: Seed of the task stream.

    Example:
        >>> from metasparse.data import Shapes3D
        >>> latents = FactorLatents(Shapes3D(), "uniform")
        >>> sampler = RegressionTaskSampler(regression_taskset(latents, TaskConfig(batch_size=2)), seed=1)
        >>> bool((sampler.batch(3).targets == sampler.batch(3).targets).all())
        True
    """

    def __init__(self, taskset: Taskset, seed: int = 0) -> None:
        self.taskset = taskset
        self.config: TaskConfig = taskset.regression_config
        self.seed = int(seed)

    def batch(self, step: int, indices: Sequence[int] | range | None = None) -> RegressionBatch:
        """Tasks ``indices`` (default: all ``batch_size``) of meta-batch ``step``, stacked."""
        indices = range(self.config.batch_size) if indices is None else indices
        if self.config.mode == "bernoulli_per_batch":
            self.taskset.coefficients.start_batch(np.random.default_rng(derive_seed(self.seed, step)))
        tasks = []
        for index in indices:
            with seeded(derive_seed(self.seed, step, index)):
                tasks.append(self.taskset.sample())
        return RegressionBatch(*(torch.stack(parts) for parts in zip(*tasks, strict=True)))

    def state_dict(self) -> dict[str, int]:
        """``{"seed": seed}``: all a resumed run needs to see the same tasks."""
        return {"seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore the seed from `state_dict`."""
        self.seed = int(state["seed"])


def support_variability(config: TaskConfig, num_factors: int, num_tasks: int = 2000,
                        seed: int = 0) -> dict[str, Any]:
    """Check sufficient support variability: is every factor the intersection of the supports containing it?

    Supports are drawn from the coefficient mode as in training (``num_tasks`` of them, in meta-batches
    of ``config.batch_size``); a factor that no task uses fails.

    Args:
        config: The task generator.
        num_factors: k.
        num_tasks: Supports to draw.
        seed: Seed of the draw.

    Returns:
        ``{"satisfied": bool, "intersections": [[factors] per factor], "mean_support_size": float,
        "weight_rank": int}`` (the rank of the stacked coefficients: task variability).

    Example:
        >>> support_variability(TaskConfig(mode="block", block_size=2), 6)["intersections"][0]
        [0, 1]
        >>> support_variability(TaskConfig(mode="bernoulli"), 6)["satisfied"]
        True
    """
    _check(num_tasks >= 1, f"num_tasks must be >= 1, got {num_tasks}")
    coefficients = TaskCoefficients(config, num_factors)
    rng = np.random.default_rng(seed)
    supports, weights = [], []
    for task in range(num_tasks):
        if config.mode == "bernoulli_per_batch" and task % config.batch_size == 0:
            coefficients.start_batch(rng)
        w = coefficients.draw(rng)
        weights.append(w)
        supports.append(w != 0)
    supports_array = np.array(supports)
    intersections = []
    for factor in range(num_factors):
        containing = supports_array[supports_array[:, factor]]
        intersection = containing.all(axis=0) if len(containing) else np.zeros(num_factors, dtype=bool)
        intersections.append(np.flatnonzero(intersection).tolist())
    return {"satisfied": all(found == [factor] for factor, found in enumerate(intersections)),
            "intersections": intersections,
            "mean_support_size": float(supports_array.sum(axis=1).mean()),
            "weight_rank": int(np.linalg.matrix_rank(np.array(weights)))}
