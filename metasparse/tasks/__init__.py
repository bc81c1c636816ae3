"""Task samplers: learn2learn classification episodes and sparse regression tasks."""

from metasparse.tasks.classification import (
    Episode,
    classification_taskset,
    sample_episodes,
    split_support_query,
)
from metasparse.tasks.sparse_linear import (
    REPRESENTATIONS,
    SparseLinearTask,
    make_sparse_linear_task,
    n_nonzero,
    random_orthogonal,
    sparse_weights,
)

__all__ = [
    "REPRESENTATIONS",
    "Episode",
    "SparseLinearTask",
    "classification_taskset",
    "make_sparse_linear_task",
    "n_nonzero",
    "random_orthogonal",
    "sample_episodes",
    "sparse_weights",
    "split_support_query",
]
