"""Sparse linear regression tasks over known latent factors, seen through two representations.

The generative model of the synthetic generalisation experiment (Lachapelle et al., 2023, "Disentanglement
+ Sparse Tasks = Generalization"):

* latent factors ``z ~ N(0, I_m)``;
* task weights ``w`` with exactly ``n_nonzero(m, sparsity)`` non-zero entries on a uniformly random
  support, the non-zero values i.i.d. ``N(0, 1)``;
* targets ``y = w^T z + eps`` with ``eps ~ N(0, sigma^2)`` and ``sigma = noise * ||w||_2``. Since
  ``Var(w^T z) = ||w||_2^2``, ``noise`` is the noise-to-signal ratio of standard deviations (the signal-to-
  noise ratio of variances is ``1 / noise^2``), the same for every task whatever its sparsity, and the best
  achievable test R^2 is ``1 / (1 + noise^2)`` (0.990 for the default 0.1, the ``scale_noise`` of the
  paper's 3D Shapes runs);
* the **disentangled** representation is ``z`` itself; the **entangled** one is ``Q z`` with ``Q`` a Haar-
  random orthogonal matrix, so the same task is ``y = (Q w)^T (Q z) + eps``, linear but dense in the
  entangled coordinates.

Functions take a ``numpy.random.Generator`` so that callers control reproducibility.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "REPRESENTATIONS",
    "Representation",
    "SparseLinearTask",
    "make_sparse_linear_task",
    "n_nonzero",
    "random_orthogonal",
    "sparse_weights",
]

Representation = Literal["disentangled", "entangled"]
REPRESENTATIONS: tuple[Representation, ...] = ("disentangled", "entangled")


def n_nonzero(m: int, sparsity: float) -> int:
    """Number of non-zero task weights: ``sparsity * m`` rounded half up.

    Args:
        m: Number of latent factors, at least 1.
        sparsity: Fraction ``l / m`` of factors the task uses, in (0, 1].

    Returns:
        ``l``, between 1 and ``m``.

    Raises:
        ValueError: If ``m < 1``, ``sparsity`` is outside (0, 1], or ``sparsity * m`` rounds to 0.

    Example:
        >>> n_nonzero(100, 0.05), n_nonzero(50, 0.05)
        (5, 3)
    """
    if m < 1:
        raise ValueError(f"m must be at least 1, got {m}")
    if not 0.0 < sparsity <= 1.0:
        raise ValueError(f"sparsity must be in (0, 1], got {sparsity}")
    # A small tolerance so that e.g. 0.05 * 50 = 2.5000000000000004 and 2.5 round the same way.
    count = math.floor(sparsity * m + 0.5 + 1e-9)
    if count < 1:
        raise ValueError(f"sparsity {sparsity} with m={m} gives no non-zero weight; raise m or sparsity")
    return count


def sparse_weights(m: int, sparsity: float, rng: np.random.Generator) -> np.ndarray:
    """Task weights with exactly ``n_nonzero(m, sparsity)`` non-zero ``N(0, 1)`` entries.

    Args:
        m: Number of latent factors.
        sparsity: Fraction of non-zero weights, in (0, 1].
        rng: Source of randomness.

    Returns:
        ``(m,)`` float64 array; the support is uniformly random.

    Example:
        >>> w = sparse_weights(100, 0.05, np.random.default_rng(0))
        >>> int(np.count_nonzero(w))
        5
    """
    count = n_nonzero(m, sparsity)
    weights = np.zeros(m)
    support = rng.choice(m, size=count, replace=False)
    values = rng.standard_normal(count)
    # N(0, 1) is zero with probability 0 but keep "exactly count non-zeros" a guarantee, not a likelihood.
    values[values == 0.0] = 1.0
    weights[support] = values
    return weights


def random_orthogonal(m: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-distributed random orthogonal matrix.

    QR of a standard Gaussian matrix, with the signs of ``R``'s diagonal moved into ``Q`` so that the
    distribution is uniform over O(m) (plain QR is biased by the sign convention of the factorisation).

    Args:
        m: Size of the matrix.
        rng: Source of randomness.

    Returns:
        ``(m, m)`` float64 array ``Q`` with ``Q^T Q = I``.

    Example:
        >>> q = random_orthogonal(4, np.random.default_rng(0))
        >>> bool(np.allclose(q.T @ q, np.eye(4)))
        True
    """
    q, r = np.linalg.qr(rng.standard_normal((m, m)))
    signs = np.sign(np.diag(r))
    signs[signs == 0.0] = 1.0
    return q * signs


@dataclass(frozen=True)
class SparseLinearTask:
    """One sparse linear task and the mixing that entangles its latent factors.

    Attributes:
        weights: ``(m,)`` task weights in the disentangled (true-factor) coordinates.
        mixing: ``(m, m)`` orthogonal matrix ``Q``; the entangled representation of ``z`` is ``Q z``.
        noise_std: Standard deviation of the additive Gaussian target noise.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> task = make_sparse_linear_task(m=20, sparsity=0.2, noise=0.1, rng=rng)
        >>> z, y = task.sample(50, rng)
        >>> task.represent(z, "entangled").shape, y.shape
        ((50, 20), (50,))
    """

    weights: np.ndarray
    mixing: np.ndarray
    noise_std: float

    @property
    def m(self) -> int:
        """Number of latent factors."""
        return self.weights.shape[0]

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` latent vectors and their noisy targets.

        Args:
            n: Number of samples.
            rng: Source of randomness.

        Returns:
            ``(latents, targets)``: ``(n, m)`` standard Gaussian factors and ``(n,)`` targets
            ``latents @ weights + noise``.
        """
        latents = rng.standard_normal((n, self.m))
        targets = latents @ self.weights + self.noise_std * rng.standard_normal(n)
        return latents, targets

    def represent(self, latents: np.ndarray, representation: Representation) -> np.ndarray:
        """The features a predictor sees: the latents themselves, or their rotation by ``mixing``.

        Args:
            latents: ``(n, m)`` latent factors from `sample`.
            representation: ``"disentangled"`` (identity) or ``"entangled"`` (``z -> Q z`` per row).

        Returns:
            ``(n, m)`` features.

        Raises:
            ValueError: For an unknown ``representation``.
        """
        if representation == "disentangled":
            return latents
        if representation == "entangled":
            return latents @ self.mixing.T
        raise ValueError(f"representation must be one of {REPRESENTATIONS}, got {representation!r}")


def make_sparse_linear_task(m: int, sparsity: float, noise: float,
                            rng: np.random.Generator) -> SparseLinearTask:
    """Draw a task: sparse weights, a random orthogonal mixing, and the noise level ``noise * ||w||_2``.

    Args:
        m: Number of latent factors, at least 1.
        sparsity: Fraction ``l / m`` of non-zero weights, in (0, 1].
        noise: Noise-to-signal ratio of standard deviations, at least 0.
        rng: Source of randomness.

    Returns:
        The task.

    Raises:
        ValueError: For ``m < 1``, ``sparsity`` outside (0, 1] or ``noise < 0``.

    Example:
        >>> task = make_sparse_linear_task(100, 0.05, 0.1, np.random.default_rng(0))
        >>> int(np.count_nonzero(task.weights)), task.mixing.shape
        (5, (100, 100))
    """
    if noise < 0:
        raise ValueError(f"noise must be non-negative, got {noise}")
    weights = sparse_weights(m, sparsity, rng)
    mixing = random_orthogonal(m, rng)
    return SparseLinearTask(weights=weights, mixing=mixing, noise_std=noise * float(np.linalg.norm(weights)))
