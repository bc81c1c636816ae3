"""Input checks shared by the heads: ranks, shapes, label ranges, finiteness, with one device sync."""

from __future__ import annotations

import torch

__all__ = ["check_classification_support", "check_query", "check_regression_support", "raise_first"]


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
    if isinstance(n_way, bool) or not isinstance(n_way, int) or n_way < 1:
        raise ValueError(f"n_way must be a positive int, got {n_way!r}")
    if n_shot is not None and (isinstance(n_shot, bool) or not isinstance(n_shot, int) or n_shot < 1):
        raise ValueError(f"n_shot must be a positive int or None, got {n_shot!r}")
    unbatched = support.ndim == 2
    if labels.shape != support.shape[:-1]:
        raise ValueError(f"support_labels must have shape {tuple(support.shape[:-1])} to match support "
                         f"{tuple(support.shape)}, got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"support_labels must be an integer tensor, got {labels.dtype}")
    if unbatched:
        support, labels = support[None], labels[None]
    labels = labels.long()
    in_range = (labels >= 0) & (labels < n_way)
    counts = torch.nn.functional.one_hot(labels.clamp(0, n_way - 1), n_way).sum(dim=1)
    checks = {
        f"support_labels must lie in [0, n_way={n_way})": ~in_range.all(),
        f"every class in [0, n_way={n_way}) needs at least one support example": (counts == 0).any(),
        "support must be finite (found NaN or inf)": ~torch.isfinite(support).all(),
    }
    if n_shot is not None:
        checks[f"every class must have exactly n_shot={n_shot} support examples"] = (counts != n_shot).any()
    raise_first(checks)
    return support, labels, unbatched


def check_query(query: object, support: torch.Tensor, unbatched: bool) -> torch.Tensor:
    """Validate query features against a batched support set; return them batched (B, m, d)."""
    query = _check_features(query, "query")
    expected = "(m, d)" if unbatched else "(B, m, d)"
    if (query.ndim == 2) != unbatched:
        raise ValueError(f"query must have shape {expected} like support, got {tuple(query.shape)}")
    if unbatched:
        query = query[None]
    if query.shape[0] != support.shape[0] or query.shape[-1] != support.shape[-1]:
        raise ValueError(f"query of shape {tuple(query.shape)} does not match support of shape "
                         f"{tuple(support.shape)} (batch and feature dimensions must agree)")
    raise_first({"query must be finite (found NaN or inf)": ~torch.isfinite(query).all()})
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
    raise_first({"features must be finite (found NaN or inf)": ~torch.isfinite(features).all(),
                 "targets must be finite (found NaN or inf)": ~torch.isfinite(targets).all()})
    return features, targets.to(features.dtype), layout
