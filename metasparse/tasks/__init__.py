"""Task samplers: learn2learn classification episodes and sparse regression tasks."""

from metasparse.tasks.classification import (
    Episode,
    EpisodeSampler,
    classification_taskset,
    sample_episodes,
    split_support_query,
)
from metasparse.tasks.random_features import random_episodes
from metasparse.tasks.regression import (
    COEFFICIENT_MODES,
    LATENT_DISTRIBUTIONS,
    FactorLatents,
    RegressionBatch,
    RegressionTaskSampler,
    TaskConfig,
    regression_taskset,
    support_variability,
)
from metasparse.tasks.seeding import derive_seed, rng_state, seed_everything, seeded, set_rng_state
from metasparse.tasks.sparse_linear import (
    REPRESENTATIONS,
    SparseLinearTask,
    make_sparse_linear_task,
    n_nonzero,
    random_orthogonal,
    sparse_weights,
)

__all__ = [
    "COEFFICIENT_MODES",
    "LATENT_DISTRIBUTIONS",
    "REPRESENTATIONS",
    "Episode",
    "EpisodeSampler",
    "FactorLatents",
    "RegressionBatch",
    "RegressionTaskSampler",
    "SparseLinearTask",
    "TaskConfig",
    "classification_taskset",
    "derive_seed",
    "make_sparse_linear_task",
    "n_nonzero",
    "random_episodes",
    "random_orthogonal",
    "regression_taskset",
    "rng_state",
    "sample_episodes",
    "seed_everything",
    "seeded",
    "set_rng_state",
    "sparse_weights",
    "split_support_query",
    "support_variability",
]
