"""Episodic classification tasks built with learn2learn's ``Taskset``."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

from metasparse._optional import require

if TYPE_CHECKING:
    from learn2learn.data import Taskset
    from torch.utils.data import Dataset

__all__ = ["Episode", "classification_taskset", "sample_episodes", "split_support_query"]


class Episode(NamedTuple):
    """A batch of episodes, support and query split by label.

    Shapes: ``support`` (B, n_way * n_shot, ...), ``support_labels`` (B, n_way * n_shot),
    ``query`` (B, n_way * n_query, ...), ``query_labels`` (B, n_way * n_query); labels in [0, n_way).
    """

    support: torch.Tensor
    support_labels: torch.Tensor
    query: torch.Tensor
    query_labels: torch.Tensor


def classification_taskset(dataset: Dataset, n_way: int, n_shot: int, n_query: int,
                           num_tasks: int = -1, labels_to_indices: dict | None = None) -> Taskset:
    """A learn2learn ``Taskset`` of ``n_way``-way episodes with ``n_shot + n_query`` items per class.

    Args:
        dataset: Any map-style dataset whose items are ``(x, label)`` with an integer label.
        n_way: Classes per episode.
        n_shot: Support examples per class.
        n_query: Query examples per class.
        num_tasks: ``-1`` samples a new episode on every access; ``N`` fixes N episodes (evaluation).
        labels_to_indices: Optional ``{label: [indices]}``; saves learn2learn a pass over the dataset.

    Returns:
        ``learn2learn.data.Taskset`` whose ``sample()`` is ``(x, labels)`` with labels in [0, n_way).
        learn2learn samples with Python's ``random`` module: seed it for reproducible episodes.

    Example:
        >>> ts = classification_taskset(dataset, n_way=5, n_shot=1, n_query=15)  # doctest: +SKIP
        >>> x, y = ts.sample()                                                     # doctest: +SKIP
    """
    for name, value in (("n_way", n_way), ("n_shot", n_shot), ("n_query", n_query)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    l2l = require("learn2learn")
    meta = l2l.data.MetaDataset(dataset, labels_to_indices=labels_to_indices)
    if len(meta.labels) < n_way:
        raise ValueError(f"n_way={n_way} exceeds the {len(meta.labels)} classes of the dataset")
    transforms = [
        l2l.data.transforms.NWays(meta, n_way),
        l2l.data.transforms.KShots(meta, n_shot + n_query),
        l2l.data.transforms.LoadData(meta),
        l2l.data.transforms.RemapLabels(meta),
    ]
    return l2l.data.Taskset(meta, task_transforms=transforms, num_tasks=num_tasks)


def split_support_query(data: torch.Tensor, labels: torch.Tensor, n_way: int,
                        n_shot: int) -> Episode:
    """Split one sampled task into support and query by label, never by position.

    Every class in ``[0, n_way)`` must appear the same number of times (``n_shot + n_query``).

    Args:
        data: (N, ...) task inputs.
        labels: (N,) integer labels in [0, n_way).
        n_way: Number of classes.
        n_shot: Support examples per class; the rest of each class goes to the query set.

    Returns:
        An unbatched `Episode` (no leading B), both sets sorted by class.
    """
    labels = torch.as_tensor(labels).long().reshape(-1)
    if data.shape[0] != labels.shape[0]:
        raise ValueError(f"data has {data.shape[0]} items but labels has {labels.shape[0]}")
    counts = torch.bincount(labels, minlength=n_way)
    if counts.numel() != n_way or bool((counts != counts[0]).any()) or int(counts[0]) <= n_shot:
        raise ValueError(f"labels must hold every class in [0, {n_way}) equally often and more than "
                         f"n_shot={n_shot} times; got counts {counts.tolist()}")
    per_class = int(counts[0])
    order = torch.argsort(labels, stable=True).reshape(n_way, per_class)
    support_idx, query_idx = order[:, :n_shot].reshape(-1), order[:, n_shot:].reshape(-1)
    return Episode(data[support_idx], labels[support_idx], data[query_idx], labels[query_idx])


def sample_episodes(taskset: Taskset, batch_size: int, n_way: int, n_shot: int) -> Episode:
    """Sample ``batch_size`` tasks from ``taskset`` and stack them into a batched `Episode`."""
    episodes = [split_support_query(*taskset.sample(), n_way=n_way, n_shot=n_shot)
                for _ in range(batch_size)]
    return Episode(*(torch.stack(parts) for parts in zip(*episodes, strict=True)))
