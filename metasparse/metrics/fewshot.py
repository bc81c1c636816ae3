"""Few-shot reporting: accuracy per episode, and its mean +- 95% confidence interval over episodes.

The fraction of features a head uses is ``1 - head.last_info.sparsity`` (`metasparse.solvers.SolverInfo`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["accuracy_with_ci", "episode_accuracy"]


def episode_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-episode accuracy, in [0, 1].

    Args:
        logits: (B, m, n_way) query logits.
        labels: (B, m) query labels.

    Returns:
        (B,) float tensor.

    Example:
        >>> episode_accuracy(torch.tensor([[[2.0, 0.0], [0.0, 1.0]]]), torch.tensor([[0, 0]]))
        tensor([0.5000])
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(f"logits must be (B, m, n_way) and labels (B, m); got {tuple(logits.shape)} "
                         f"and {tuple(labels.shape)}")
    return (logits.argmax(-1) == labels).float().mean(-1)


def accuracy_with_ci(accuracies: Sequence[float] | np.ndarray | torch.Tensor) -> tuple[float, float]:
    """Mean accuracy and the half-width of its 95% confidence interval, MetaOptNet's way.

    ``1.96 * std / sqrt(N)`` with the population standard deviation (``np.std``, ddof = 0), as in
    MetaOptNet's ``test.py``; both in the unit of the input (pass percentages to get percentages).

    Args:
        accuracies: One accuracy per episode, at least one.

    Returns:
        ``(mean, ci95)``.

    Example:
        >>> mean, ci95 = accuracy_with_ci([50.0, 70.0, 60.0, 80.0])
        >>> f"{mean:.2f} +- {ci95:.2f} %"
        '65.00 +- 10.96 %'
    """
    values = np.asarray(torch.as_tensor(accuracies, dtype=torch.float64).cpu(), dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("accuracies must hold at least one episode")
    return float(values.mean()), float(1.96 * values.std() / math.sqrt(values.size))

