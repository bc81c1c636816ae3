"""Metrics: few-shot accuracy with its confidence interval, features used, and disentanglement scores."""

from metasparse.metrics.disentanglement import correlation_matrix, dci, importance_matrix, mcc, r_score
from metasparse.metrics.fewshot import accuracy_with_ci, episode_accuracy, features_used

__all__ = ["accuracy_with_ci", "correlation_matrix", "dci", "episode_accuracy", "features_used",
           "importance_matrix", "mcc", "r_score"]
