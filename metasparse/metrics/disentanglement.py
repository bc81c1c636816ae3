r"""Disentanglement metrics for any representation: MCC, R and DCI, on numpy arrays or torch tensors.

All three compare true factors ``z_true`` (N, k) with a learned representation ``z_learned`` (N, k')
computed on the same N inputs, and work in float64 whatever the inputs' dtype (float32 least squares
on badly scaled columns loses rank and lowers R by about 0.1).

* `mcc`: mean correlation coefficient. The |correlation| matrix between true factors and learned
  coordinates, a one-to-one matching by the Hungarian algorithm
  (``scipy.optimize.linear_sum_assignment``), the mean of the ``min(k, k')`` matched values. Pearson by
  default; Spearman ranks ties by their average rank (the un-jittered 3D Shapes grid is full of ties).
  1 means each factor is an affine (Pearson) or monotone (Spearman) function of its own coordinate.
* `r_score`: linear identifiability. For each factor, the $R^2$ of an ordinary least-squares regression
  (with intercept) from all learned coordinates to that factor; the mean of $\sqrt{R^2}$ (the coefficient
  of multiple correlation, comparable to MCC). 1 means the representation is an invertible linear map
  of the factors.
* `dci`: Eastwood and Williams' disentanglement, completeness and informativeness, with the documented
  regressor: ordinary least squares from the standardised representation to each standardised factor;
  the importance of code c for factor j is ``|coefficient[c, j]|``. D and C are one minus normalised
  entropies (base k for codes, base k' for factors), averaged with ``weighting="importance"`` (each code
  or factor weighted by its share of the total importance, as Eastwood and Williams and
  disentanglement_lib) or ``"uniform"`` (plain means, as the paper's code). The two differ a lot when
  some codes are unused: six clean codes plus three noise codes give D about 0.97 with importance
  weights and about 0.70 with uniform ones. Informativeness is the mean $R^2$ of the same regressor
  (one minus its normalised mean squared error), so higher is better.

The paper scores on all 480,000 images of 3D Shapes (the uniform grid), factors jittered and
standardised as in training; during training a uniform random sample of the grid stands in for it.

Example:
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(1000, 3))
    >>> z_hat = 2.0 * z[:, [2, 0, 1]] - 1.0          # permuted, rescaled, shifted copy
    >>> round(mcc(z, z_hat), 6), round(r_score(z, z_hat), 6)
    (1.0, 1.0)
    >>> {name: round(value, 6) for name, value in dci(z, z_hat).items()}
    {'disentanglement': 1.0, 'completeness': 1.0, 'informativeness': 1.0}
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata

__all__ = ["CorrelationMethod", "DCIWeighting", "correlation_matrix", "dci", "importance_matrix",
           "matched_correlations", "mcc", "multiple_correlations", "r_score"]

CorrelationMethod = Literal["pearson", "spearman"]
DCIWeighting = Literal["importance", "uniform"]
_CORRELATION_METHODS = ("pearson", "spearman")
_WEIGHTINGS = ("importance", "uniform")


def _as_matrix(values: object, name: str) -> np.ndarray:
    """float64 numpy (N, k) from an array-like or tensor (any device, gradients dropped)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix[:, None]
    if matrix.ndim != 2 or matrix.shape[0] < 2 or matrix.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, k) with N >= 2 and k >= 1, got {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError(f"{name} must be finite")
    return matrix


def _pair(z_true: object, z_learned: object) -> tuple[np.ndarray, np.ndarray]:
    true, learned = _as_matrix(z_true, "z_true"), _as_matrix(z_learned, "z_learned")
    if true.shape[0] != learned.shape[0]:
        raise ValueError(f"z_true and z_learned must have the same number of rows, got {true.shape[0]} "
                         f"and {learned.shape[0]}")
    return true, learned


def _standardise(matrix: np.ndarray) -> np.ndarray:
    """Columns centred and scaled to unit variance; constant columns become zeros."""
    centred = matrix - matrix.mean(axis=0)
    scale = np.sqrt((centred**2).mean(axis=0))
    return np.divide(centred, scale, out=np.zeros_like(centred), where=scale > 0)


def correlation_matrix(z_true: object, z_learned: object,
                       method: CorrelationMethod = "pearson") -> np.ndarray:
    """Correlations between every true factor and every learned coordinate.

    Args:
        z_true: (N, k) factors.
        z_learned: (N, k') representation of the same N inputs.
        method: ``"pearson"`` or ``"spearman"`` (Pearson of average ranks).

    Returns:
        float64 (k, k'); a constant column correlates 0 with everything.

    Example:
        >>> correlation_matrix([[0.0], [1.0], [2.0]], [[0.0], [1.0], [4.0]], method="spearman").round(6)
        array([[1.]])
    """
    true, learned = _pair(z_true, z_learned)
    if method not in _CORRELATION_METHODS:
        raise ValueError(f"method must be one of {_CORRELATION_METHODS}, got {method!r}")
    if method == "spearman":
        true, learned = rankdata(true, axis=0), rankdata(learned, axis=0)
    return _standardise(true).T @ _standardise(learned) / true.shape[0]


def matched_correlations(z_true: object, z_learned: object,
                         method: CorrelationMethod = "pearson") -> np.ndarray:
    """Each factor's |correlation| with the coordinate the MCC's one-to-one matching gives it.

    Args:
        z_true: (N, k) factors, numpy array or torch tensor.
        z_learned: (N, k') representation of the same inputs.
        method: ``"pearson"`` (default, as the paper) or ``"spearman"``.

    Returns:
        float64 (k,) in [0, 1]; NaN for the factors left without a coordinate when ``k' < k``.

    Example:
        >>> z = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> matched_correlations(z, np.c_[z[:, 1], z[:, 0] + z[:, 1]]).round(3).tolist()
        [0.707, 1.0]
    """
    absolute = np.abs(correlation_matrix(z_true, z_learned, method))
    rows, columns = linear_sum_assignment(absolute, maximize=True)
    matched = np.full(absolute.shape[0], np.nan)
    matched[rows] = absolute[rows, columns]
    return matched


def mcc(z_true: object, z_learned: object, method: CorrelationMethod = "pearson") -> float:
    """Mean correlation coefficient after the best one-to-one matching of factors to coordinates.

    With Pearson correlations and ``k' >= k`` it is at most `r_score`: a factor's correlation with one
    coordinate is at most its multiple correlation with all of them.

    Args:
        z_true: (N, k) factors, numpy array or torch tensor.
        z_learned: (N, k') representation of the same inputs.
        method: ``"pearson"`` (default, as the paper) or ``"spearman"``.

    Returns:
        Mean of the ``min(k, k')`` matched |correlations| (`matched_correlations`), in [0, 1].

    Example:
        >>> z = np.random.default_rng(0).normal(size=(500, 2))
        >>> round(mcc(z, z[:, ::-1] * [3.0, -1.0]), 6)
        1.0
    """
    return float(np.nanmean(matched_correlations(z_true, z_learned, method)))


def _least_squares(inputs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OLS with intercept, float64: (coefficients (k', k) without the intercept, per-target R^2 (k,))."""
    design = np.hstack([inputs, np.ones((inputs.shape[0], 1))])
    solution, *_ = np.linalg.lstsq(design, targets, rcond=None)
    residual = targets - design @ solution
    total = ((targets - targets.mean(axis=0))**2).sum(axis=0)
    explained = 1.0 - (residual**2).sum(axis=0) / np.where(total > 0, total, 1.0)
    return solution[:-1], np.where(total > 0, np.clip(explained, 0.0, 1.0), 0.0)


def multiple_correlations(z_true: object, z_learned: object) -> np.ndarray:
    """Each factor's multiple correlation ``sqrt(R^2)`` of a linear regression learned -> true.

    Both sides are standardised first; the regression has an intercept and is fitted and scored on all
    N rows.

    Args:
        z_true: (N, k) factors.
        z_learned: (N, k') representation of the same inputs.

    Returns:
        float64 (k,) in [0, 1].

    Example:
        >>> z = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> multiple_correlations(z, z[:, :1]).round(3).tolist()
        [1.0, 0.0]
    """
    true, learned = _pair(z_true, z_learned)
    _, explained = _least_squares(_standardise(learned), _standardise(true))
    return np.sqrt(explained)


def r_score(z_true: object, z_learned: object) -> float:
    """Mean over factors of the multiple correlation (`multiple_correlations`): linear identifiability.

    Args:
        z_true: (N, k) factors.
        z_learned: (N, k') representation of the same inputs.

    Returns:
        A float in [0, 1].

    Example:
        >>> z = np.random.default_rng(0).normal(size=(500, 3))
        >>> mixing = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 3.0]])
        >>> round(r_score(z, z @ mixing), 6)
        1.0
    """
    return float(multiple_correlations(z_true, z_learned).mean())


def importance_matrix(z_true: object, z_learned: object) -> tuple[np.ndarray, np.ndarray]:
    """The DCI regressor: OLS from the standardised representation to each standardised factor.

    Args:
        z_true: (N, k) factors.
        z_learned: (N, k') representation.

    Returns:
        ``(importance, r2)``: importance (k', k) = |coefficients| (rows codes, columns factors), and the
        in-sample R^2 (k,) of each factor's regression.

    Example:
        >>> z = np.random.default_rng(0).normal(size=(200, 2))
        >>> importance, r2 = importance_matrix(z, z[:, ::-1])
        >>> (importance.round(6) + 0.0).tolist(), r2.round(6).tolist()
        ([[0.0, 1.0], [1.0, 0.0]], [1.0, 1.0])
    """
    true, learned = _pair(z_true, z_learned)
    coefficients, explained = _least_squares(_standardise(learned), _standardise(true))
    return np.abs(coefficients), explained


def _one_minus_entropy(probabilities: np.ndarray, base: int) -> np.ndarray:
    """1 - H(p) / log(base) for each row of non-negative weights (an all-zero row counts as uniform)."""
    if base < 2:
        return np.ones(probabilities.shape[0])
    totals = probabilities.sum(axis=1, keepdims=True)
    p = np.divide(probabilities, totals, out=np.full_like(probabilities, 1.0 / probabilities.shape[1]),
                  where=totals > 0)
    logs = np.log(p, out=np.zeros_like(p), where=p > 0)
    return 1.0 + (p * logs).sum(axis=1) / np.log(base)


def dci(z_true: object, z_learned: object, weighting: DCIWeighting = "importance") -> dict[str, float]:
    """DCI disentanglement, completeness and informativeness (see the module docstring for the regressor).

    Args:
        z_true: (N, k) factors.
        z_learned: (N, k') representation of the same inputs.
        weighting: ``"importance"`` (Eastwood and Williams: codes / factors weighted by their share of
            the importance) or ``"uniform"`` (the paper's plain means).

    Returns:
        ``{"disentanglement", "completeness", "informativeness"}``, each in [0, 1].

    Example:
        >>> z = np.random.default_rng(0).normal(size=(500, 2))
        >>> dci(z, z @ np.array([[1.0, 1.0], [1.0, -1.0]]))["disentanglement"] < 0.01
        True
    """
    if weighting not in _WEIGHTINGS:
        raise ValueError(f"weighting must be one of {_WEIGHTINGS}, got {weighting!r}")
    importance, explained = importance_matrix(z_true, z_learned)
    n_codes, n_factors = importance.shape
    per_code = _one_minus_entropy(importance, base=n_factors)
    per_factor = _one_minus_entropy(importance.T, base=n_codes)
    total = importance.sum()
    if weighting == "uniform" or total == 0:
        code_weights, factor_weights = np.full(n_codes, 1.0 / n_codes), np.full(n_factors, 1.0 / n_factors)
    else:
        code_weights, factor_weights = importance.sum(axis=1) / total, importance.sum(axis=0) / total
    return {"disentanglement": float(per_code @ code_weights),
            "completeness": float(per_factor @ factor_weights),
            "informativeness": float(explained.mean())}
