"""Task samplers: learn2learn classification episodes and sparse regression tasks."""

from metasparse.tasks.classification import (
    Episode,
    classification_taskset,
    sample_episodes,
    split_support_query,
)

__all__ = ["Episode", "classification_taskset", "sample_episodes", "split_support_query"]
