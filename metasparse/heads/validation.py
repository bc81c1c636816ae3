"""Checks shared by the heads: hyper-parameters at construction; ranks, shapes, label ranges, dtypes,
devices and finiteness of the inputs at each call, with one device sync."""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence

import torch

__all__ = [
    "HALF_DTYPES",
    "check_choice",
    "check_classification_support",
    "check_flag",
    "check_max_iter",
    "check_number",
    "check_query",
    "check_regression_support",
    "check_tol",
    "compute_dtype",
    "has_nonfinite",
    "raise_first",
]

HALF_DTYPES = (torch.float16, torch.bfloat16)
"""Input dtypes the heads compute in float32 (and return in the input dtype): their solvers, Cholesky
factorisations and duality gaps are not implemented or not accurate in half precision."""


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a head computes in for inputs of ``dtype``: float32 for half precision, else ``dtype``.

    Example:
        >>> compute_dtype(torch.bfloat16), compute_dtype(torch.float64)
        (torch.float32, torch.float64)
    """
    return torch.float32 if dtype in HALF_DTYPES else dtype


def check_number(value: object, name: str, *, minimum: float = -math.inf, strict: bool = False,
                 maximum: float = math.inf) -> float:
    """``value`` as a float, or ``ValueError`` naming ``name`` unless it is a finite real number in range.

    Args:
        value: A Python or numpy real number, or a 0-d real tensor (not a bool).
        name: The argument's name, for the message.
        minimum: Lower bound.
        strict: The lower bound is excluded (``> minimum`` rather than ``>= minimum``).
        maximum: Upper bound, included.

    Example:
        >>> check_number(0.5, "lambda1_ratio", minimum=0.0, maximum=1.0)
        0.5
        >>> check_number(float("inf"), "lambda2", minimum=0.0, strict=True)
        Traceback (most recent call last):
        ...
        ValueError: lambda2 must be > 0 and finite, got inf
    """
    bounds = [f"{'>' if strict else '>='} {minimum:g}"] if minimum > -math.inf else []
    bounds += [f"<= {maximum:g}"] if maximum < math.inf else []
    expected = f"{' and '.join(bounds)} and finite" if bounds else "a finite number"
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not (value.is_complex() or
                                                                     value.dtype == torch.bool):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    number = float(value)
    low_ok = number > minimum if strict else number >= minimum
    if not (math.isfinite(number) and low_ok and number <= maximum):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return number


def check_max_iter(value: object, name: str = "max_iter") -> int:
    """``value`` as an int, or ``ValueError`` unless it is a positive integer (not a bool, not a float).

    Example:
        >>> check_max_iter(3)
        3
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def check_tol(value: object, name: str = "tol") -> float | None:
    """``None`` (fixed iterations) or ``value`` as a float, or ``ValueError`` unless it is finite and > 0.

    Example:
        >>> check_tol(None), check_tol(1e-4)
        (None, 0.0001)
    """
    if value is None:
        return None
    try:
        return check_number(value, name, minimum=0.0, strict=True)
    except ValueError:
        raise ValueError(f"{name} must be > 0 or None (a fixed number of iterations), and finite, "
                         f"got {value!r}") from None


def check_flag(value: object, name: str) -> bool:
    """``value`` if it is a bool, else ``ValueError`` naming ``name``."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_choice(value: object, name: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else ``ValueError`` naming ``name`` and the choices."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def raise_first(checks: dict[str, torch.Tensor]) -> None:
    """Raise ``ValueError(message)`` for the first check whose 0-d bool tensor is True.

    All checks are read back in one transfer, so a head costs one device sync per call.
    """
    if not checks:
        return
    failed = torch.stack([flag.reshape(()) for flag in checks.values()]).tolist()
    for message, bad in zip(checks, failed, strict=True):
        if bad:
            raise ValueError(message)


def has_nonfinite(tensor: torch.Tensor) -> torch.Tensor:
    """0-d bool tensor: whether ``tensor`` holds a NaN or an infinity.

    One read-only pass (`torch.aminmax`, which propagates NaN, and whose results are infinite only when
    an entry is), instead of the several passes and the temporary of ``~torch.isfinite(t).all()``: on
    MetaOptNet-sized query features that check took a fifth of a head's step.

    Example:
        >>> has_nonfinite(torch.tensor([1.0, float("nan")])), has_nonfinite(torch.ones(3))
        (tensor(True), tensor(False))
    """
    if tensor.numel() == 0:
        return torch.zeros((), dtype=torch.bool, device=tensor.device)
    low, high = torch.aminmax(tensor.detach())
    return ~(torch.isfinite(low) & torch.isfinite(high))


def _check_tensor(value: object, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def _check_features(value: object, name: str) -> torch.Tensor:
    tensor = _check_tensor(value, name)
    if tensor.ndim not in (2, 3):
        raise ValueError(f"{name} must have shape (n, d) or (B, n, d), got {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {tensor.dtype}")
    if tensor.shape[-2] == 0 or tensor.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one row and one feature, got {tuple(tensor.shape)}")
    return tensor


def _positive_int(value: object, name: str, alternative: str = "") -> int:
    try:
        number = operator.index(value)  # int, numpy or 0-d integer tensor; not float
    except TypeError:
        number = 0
    if isinstance(value, bool) or number < 1:
        raise ValueError(f"{name} must be a positive int{alternative}, got {value!r}")
    return number


def _check_same_kind(tensor: torch.Tensor, name: str, reference: torch.Tensor, reference_name: str) -> None:
    if tensor.dtype != reference.dtype:
        raise ValueError(f"{name} must have the dtype of {reference_name} ({reference.dtype}), got "
                         f"{tensor.dtype}; convert one of them")
    if tensor.device != reference.device:
        raise ValueError(f"{name} must be on the device of {reference_name} ({reference.device}), got "
                         f"{tensor.device}")


def check_classification_support(support: object, labels: object, n_way: object,
                                 n_shot: object = None) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Validate an episode's support set and return it batched.

    Returns:
        ``(support (B, n, d), labels (B, n) int64, unbatched)``.

    Raises:
        ValueError: naming the argument, for a wrong rank or shape, labels outside ``[0, n_way)``, a
            class with no support example (or not exactly ``n_shot`` when given), non-finite features.
    """
    support = _check_features(support, "support")
    labels = _check_tensor(labels, "support_labels")
    n_way = _positive_int(n_way, "n_way")
    if n_shot is not None:
        n_shot = _positive_int(n_shot, "n_shot", " or None")
    unbatched = support.ndim == 2
    if labels.shape != support.shape[:-1]:
        raise ValueError(f"support_labels must have shape {tuple(support.shape[:-1])} to match support "
                         f"{tuple(support.shape)}, got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"support_labels must be an integer tensor, got {labels.dtype}")
    if labels.device != support.device:
        raise ValueError(f"support_labels must be on the device of support ({support.device}), "
                         f"got {labels.device}")
    if unbatched:
        support, labels = support[None], labels[None]
    labels = labels.long()
    in_range = (labels >= 0) & (labels < n_way)
    counts = torch.nn.functional.one_hot(labels.clamp(0, n_way - 1), n_way).sum(dim=1)
    checks = {
        f"support_labels must lie in [0, n_way={n_way})": ~in_range.all(),
        f"support_labels: every class in [0, n_way={n_way}) needs at least one support example":
            (counts == 0).any(),
        "support must be finite (found NaN or inf)": has_nonfinite(support),
    }
    if n_shot is not None:
        message = f"n_shot={n_shot}: every class must have exactly n_shot examples in support_labels"
        checks[message] = (counts != n_shot).any()
    raise_first(checks)
    return support, labels, unbatched


def check_query(query: object, support: torch.Tensor, unbatched: bool) -> torch.Tensor:
    """Validate query features against a batched support set; return them batched (B, m, d).

    The query must have the support's dtype and device: a head never converts one of them silently.
    """
    query = _check_features(query, "query")
    _check_same_kind(query, "query", support, "support")
    expected = "(m, d)" if unbatched else "(B, m, d)"
    if (query.ndim == 2) != unbatched:
        raise ValueError(f"query must have shape {expected} like support, got {tuple(query.shape)}")
    if unbatched:
        query = query[None]
    if query.shape[0] != support.shape[0] or query.shape[-1] != support.shape[-1]:
        raise ValueError(f"query of shape {tuple(query.shape)} does not match support of shape "
                         f"{tuple(support.shape)} (batch and feature dimensions must agree)")
    raise_first({"query must be finite (found NaN or inf)": has_nonfinite(query)})
    return query


def check_regression_support(features: object, targets: object) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Validate regression data; return ``(features (B, n, d), targets (B, n, K), layout)``.

    ``layout`` records the caller's target rank: ``"single"`` for (n,) targets, ``"batch"`` for (B, n),
    ``"multi"`` for (n, K) with unbatched features, ``"batch_multi"`` for (B, n, K).
    """
    features = _check_features(features, "features")
    targets = _check_tensor(targets, "targets")
    if not targets.is_floating_point():
        raise ValueError(f"targets must be a floating-point tensor, got {targets.dtype}")
    _check_same_kind(targets, "targets", features, "features")
    batched = features.ndim == 3
    rows = features.shape[:-1]
    if targets.shape == rows:
        layout = "batch" if batched else "single"
        targets = targets[..., None]
    elif targets.ndim == features.ndim and targets.shape[:-1] == rows and targets.shape[-1] >= 1:
        layout = "batch_multi" if batched else "multi"
    else:
        raise ValueError(f"targets must have shape {tuple(rows)} or {(*rows, 'K')} to match features "
                         f"{tuple(features.shape)}, got {tuple(targets.shape)}")
    if not batched:
        features, targets = features[None], targets[None]
    raise_first({"features must be finite (found NaN or inf)": has_nonfinite(features),
                 "targets must be finite (found NaN or inf)": has_nonfinite(targets)})
    return features, targets, layout
