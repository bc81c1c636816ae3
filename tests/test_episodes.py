"""Episodes from learn2learn Tasksets: batched loading, the episode sampler, backbones and accuracy."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from metasparse.metrics import accuracy_with_ci, episode_accuracy
from metasparse.models import BACKBONES, build_backbone, feature_size
from metasparse.tasks import EpisodeSampler, classification_taskset


class Numbered(Dataset):
    """Item i is (a tensor filled with i, i // 6): 10 classes of 6 items; optionally batch-loadable."""

    def __init__(self, batched: bool) -> None:
        self.labels = torch.arange(60) // 6
        self.labels_to_indices = {c: list(range(6 * c, 6 * c + 6)) for c in range(10)}
        if batched:
            self.load_items = self._load_items
        self.loaded = 0

    def __len__(self) -> int:
        return 60

    def __getitem__(self, index: int):
        self.loaded += 1
        return torch.full((2,), float(index)), int(self.labels[index])

    def _load_items(self, indices):
        self.loaded += 1
        indices = torch.as_tensor(indices)
        return indices[:, None].float().expand(-1, 2).clone(), self.labels[indices]


def test_batched_loading_gives_learn2learns_episodes_in_one_call():
    episodes = {}
    for batched in (False, True):
        dataset = Numbered(batched)
        taskset = classification_taskset(dataset, n_way=3, n_shot=2, n_query=1,
                                         labels_to_indices=dataset.labels_to_indices)
        sampler = EpisodeSampler(taskset, batch_size=4, n_way=3, n_shot=2, seed=11)
        episodes[batched] = sampler.batch(5)
        assert dataset.loaded == (4 if batched else 4 * 9)
    for plain, batched in zip(episodes[False], episodes[True], strict=True):
        assert torch.equal(plain, batched)
    support, labels = episodes[True].support[0, :, 0].long(), episodes[True].support_labels[0]
    # every support item is of the class its remapped label stands for, and classes are distinct
    original = support // 6
    assert all(len(set(original[labels == k].tolist())) == 1 for k in range(3))
    assert len(set(original.tolist())) == 3


def test_episodes_do_not_depend_on_the_global_generators():
    dataset = Numbered(True)
    taskset = classification_taskset(dataset, 3, 2, 1, labels_to_indices=dataset.labels_to_indices)
    sampler = EpisodeSampler(taskset, batch_size=2, n_way=3, n_shot=2)
    random.seed(0)
    first = sampler.batch(3).support
    random.seed(1)
    np.random.seed(1)  # noqa: NPY002 (the legacy global generator is what the sampler must ignore)
    torch.manual_seed(1)
    assert torch.equal(sampler.batch(3).support, first)
    state = random.getstate()
    sampler.batch(4)
    assert random.getstate() == state


class CountingTaskset:
    """A stand-in Taskset: 2 classes x 3 items whose values come from Python's random module."""

    def sample(self):
        labels = torch.tensor([0, 1, 0, 1, 0, 1])
        return torch.tensor([random.random() for _ in range(6)]), labels


def test_episode_sampler_is_a_function_of_seed_step_and_index():
    sampler = EpisodeSampler(CountingTaskset(), batch_size=4, n_way=2, n_shot=1, seed=3)
    batch = sampler.batch(7)
    assert batch.support.shape == (4, 2) and batch.query.shape == (4, 4)
    random.seed(1234)  # the global stream does not matter
    halves = [sampler.batch(7, range(0, 2)), sampler.batch(7, range(2, 4))]
    assert torch.equal(torch.cat([h.support for h in halves]), batch.support)
    assert not torch.equal(sampler.batch(8).support, batch.support)
    other = EpisodeSampler(CountingTaskset(), batch_size=4, n_way=2, n_shot=1, seed=4)
    assert not torch.equal(other.batch(7).support, batch.support)
    other.load_state_dict(sampler.state_dict())
    assert torch.equal(other.batch(7).support, batch.support)
    with pytest.raises(ValueError, match="batch_size"):
        EpisodeSampler(CountingTaskset(), batch_size=0, n_way=2, n_shot=1)


@pytest.mark.parametrize("name", BACKBONES)
def test_backbones_by_name_report_their_feature_size(name):
    options = {"hidden_size": 8} if name == "cnn4" else {}
    backbone = build_backbone(name, channels=3, **options)
    shape = (3, 32, 32) if name == "cnn4" else (3, 84, 84)
    expected = 8 * 2 * 2 if name == "cnn4" else 640 * 5 * 5  # MetaOptNet's 16,000 without pooling
    assert feature_size(backbone, shape) == expected
    assert backbone.training
    with pytest.raises(ValueError, match="backbone must be one of"):
        build_backbone("vit")
    with pytest.raises(ValueError, match="unknown option"):
        build_backbone(name, width=3)


def test_accuracy_and_its_confidence_interval_match_metaoptnets_formula():
    logits = torch.tensor([[[3.0, 0.0], [0.0, 1.0], [2.0, 1.0]]])
    assert torch.allclose(episode_accuracy(logits, torch.tensor([[0, 1, 1]])), torch.tensor([2 / 3]))
    accuracies = np.random.default_rng(0).uniform(40, 90, size=1000)
    mean, ci95 = accuracy_with_ci(torch.tensor(accuracies))
    assert mean == pytest.approx(accuracies.mean())
    assert ci95 == pytest.approx(1.96 * np.std(accuracies) / np.sqrt(1000))  # MetaOptNet's test.py
    with pytest.raises(ValueError, match="at least one"):
        accuracy_with_ci([])
    with pytest.raises(ValueError, match="logits must be"):
        episode_accuracy(torch.zeros(3, 2), torch.zeros(3))
