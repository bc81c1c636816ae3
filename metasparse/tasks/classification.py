"""Episodic classification tasks built with learn2learn's ``Taskset``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from metasparse._optional import require
from metasparse.tasks.seeding import derive_seed, seeded

if TYPE_CHECKING:
    from learn2learn.data import Taskset
    from torch.utils.data import Dataset

__all__ = ["Episode", "EpisodeSampler", "classification_taskset", "sample_episodes", "split_support_query"]


class Episode(NamedTuple):
    """A batch of episodes, support and query split by label.

    Shapes: ``support`` (B, n_way * n_shot, ...), ``support_labels`` (B, n_way * n_shot),
    ``query`` (B, n_way * n_query, ...), ``query_labels`` (B, n_way * n_query); labels in [0, n_way).

    Example:
        >>> episode = split_support_query(torch.arange(6.0), torch.tensor([1, 0, 1, 0, 1, 0]), 2, 1)
        >>> episode.support.tolist(), episode.support_labels.tolist(), episode.query.tolist()
        ([1.0, 0.0], [0, 1], [3.0, 5.0, 2.0, 4.0])
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
        A dataset with a ``load_items(indices) -> (images, labels)`` method is read one whole episode at
        a time (the task transforms carry indices, the task's collate loads them in one call) instead
        of item by item through learn2learn's ``LoadData``.

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
    batched = callable(getattr(dataset, "load_items", None))
    transforms = [
        # One transform for both: NWays + KShots builds a description of every item of the n_way classes.
        l2l.data.transforms.FusedNWaysKShots(meta, n=n_way, k=n_shot + n_query),
        _LoadIndex(meta) if batched else l2l.data.transforms.LoadData(meta),
        l2l.data.transforms.RemapLabels(meta),
    ]
    collate = _BatchedLoad(dataset) if batched else None
    return l2l.data.Taskset(meta, task_transforms=transforms, num_tasks=num_tasks, task_collate=collate)


class _LoadIndex:
    """Task transform in place of ``LoadData``: each item becomes ``(index, label)``, loaded later."""

    def __init__(self, meta: Any) -> None:
        self.meta = meta

    def __call__(self, task_description: list) -> list:
        for description in task_description:
            description.transforms.append(self._index_and_label)
        return task_description

    def _index_and_label(self, index: int) -> tuple[int, int]:
        return index, self.meta.indices_to_labels[index]


class _BatchedLoad:
    """Task collate that loads a whole episode of ``(index, label)`` items with ``load_items``."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __call__(self, items: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        indices = [int(item[0]) for item in items]
        images, _ = self.dataset.load_items(indices)
        return images, torch.tensor([int(item[1]) for item in items])


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

    Example:
        >>> x, y = torch.arange(6.0), torch.tensor([0, 1, 0, 1, 0, 1])
        >>> support, support_labels, query, query_labels = split_support_query(x, y, n_way=2, n_shot=2)
        >>> support.tolist(), support_labels.tolist(), query_labels.tolist()
        ([0.0, 2.0, 1.0, 3.0], [0, 0, 1, 1], [0, 1])
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
    """Sample ``batch_size`` tasks from ``taskset`` and stack them into a batched `Episode`.

    Draws from Python's global ``random`` (learn2learn's); `EpisodeSampler` makes each episode a fixed
    function of a seed and its position instead, for resumable and distributed training.

    Example:
        >>> data = torch.utils.data.TensorDataset(torch.randn(40, 3), torch.arange(40) // 4)
        >>> taskset = classification_taskset(data, n_way=5, n_shot=1, n_query=3)
        >>> sample_episodes(taskset, batch_size=2, n_way=5, n_shot=1).query.shape
        torch.Size([2, 15, 3])
    """
    return _stack([split_support_query(*taskset.sample(), n_way=n_way, n_shot=n_shot)
                   for _ in range(batch_size)])


def _stack(episodes: Sequence[Episode]) -> Episode:
    if not episodes:
        raise ValueError("indices must select at least one episode")
    return Episode(*(torch.stack(parts) for parts in zip(*episodes, strict=True)))


class EpisodeSampler:
    """Meta-batches of episodes from a learn2learn ``Taskset``, each a fixed function of its position.

    Episode ``i`` of batch ``step`` is sampled with every global generator (Python's ``random``, which
    learn2learn uses, numpy and torch, which augmentations use) seeded by ``derive_seed(seed, step, i)``
    and then restored. So the episodes do not depend on what ran before them: a run resumed at ``step``
    sees exactly the episodes the uninterrupted run saw, ``batch(step, indices)`` lets each distributed
    rank sample only its share of a global batch, and a fixed evaluation set is ``batch(0, range(N))``
    of a sampler with its own seed. The whole sampler state is ``seed``.

    Args:
        taskset: Any ``Taskset`` whose ``sample()`` returns ``(data, labels)`` with every label in
            ``[0, n_way)`` present ``n_shot + n_query`` times (e.g. from `classification_taskset`).
        batch_size: Episodes per meta-batch.
        n_way: Classes per episode.
        n_shot: Support examples per class; the rest are queries.
        seed: Seed of the episode stream.

    Example:
        >>> sampler = EpisodeSampler(taskset, batch_size=8, n_way=5, n_shot=15, seed=0)  # doctest: +SKIP
        >>> episodes = sampler.batch(step=0)          # an Episode with B = 8         # doctest: +SKIP
        >>> mine = sampler.batch(step=0, indices=range(4, 8))  # rank 1 of 2          # doctest: +SKIP
    """

    def __init__(self, taskset: Taskset, batch_size: int, n_way: int, n_shot: int, seed: int = 0) -> None:
        for name, value in (("batch_size", batch_size), ("n_way", n_way), ("n_shot", n_shot)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.taskset, self.batch_size, self.n_way, self.n_shot = taskset, batch_size, n_way, n_shot
        self.seed = int(seed)

    def episode(self, step: int, index: int) -> Episode:
        """Episode ``index`` of batch ``step``, unbatched."""
        with seeded(derive_seed(self.seed, step, index)):
            data, labels = self.taskset.sample()
        return split_support_query(data, labels, self.n_way, self.n_shot)

    def batch(self, step: int, indices: Sequence[int] | range | None = None) -> Episode:
        """The episodes ``indices`` (default: all ``batch_size``) of batch ``step``, stacked."""
        indices = range(self.batch_size) if indices is None else indices
        return _stack([self.episode(step, index) for index in indices])

    def state_dict(self) -> dict[str, int]:
        """``{"seed": seed}``: all a resumed run needs to see the same episodes."""
        return {"seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore the seed from `state_dict`."""
        self.seed = int(state["seed"])
