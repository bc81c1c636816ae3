"""Metrics: few-shot accuracy with its confidence interval, features used, and disentanglement scores."""

from metasparse.metrics.fewshot import accuracy_with_ci, episode_accuracy, features_used

__all__ = ["accuracy_with_ci", "episode_accuracy", "features_used"]
