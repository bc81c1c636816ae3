"""Metrics: few-shot accuracy with its confidence interval, and disentanglement scores (MCC, R, DCI)."""

from metasparse.metrics.disentanglement import (
    correlation_matrix,
    dci,
    importance_matrix,
    matched_correlations,
    mcc,
    multiple_correlations,
    r_score,
)
from metasparse.metrics.fewshot import accuracy_with_ci, episode_accuracy

__all__ = ["accuracy_with_ci", "correlation_matrix", "dci", "episode_accuracy",
           "importance_matrix", "matched_correlations", "mcc", "multiple_correlations", "r_score"]
