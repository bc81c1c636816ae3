"""``shapes3d-fs``: few-shot classification on 3D Shapes, no download needed.

A class is a combination of object factors (by default shape x object_hue x scale: 320 classes of
1,500 images each); the other factors (floor hue, wall hue, orientation) vary freely within a class.
Classes are split into disjoint train / validation / test sets (60% / 20% / 20%) by a seeded
permutation. Items are ``(image, label)`` with ``label`` in ``[0, num_classes)`` of the split, so
learn2learn's ``MetaDataset`` and ``Taskset`` take the dataset as is.

Example:
    >>> train = Shapes3DFewShot("train")
    >>> train.num_classes, len(train)
    (192, 288000)
    >>> from metasparse.tasks import classification_taskset
    >>> taskset = classification_taskset(train, n_way=5, n_shot=1, n_query=15,
    ...                                  labels_to_indices=train.labels_to_indices)
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from metasparse.data.factors import (
    FACTOR_NAMES,
    FACTOR_SIZES,
    NUM_IMAGES,
    _as_indices,
    flat_to_factor_indices,
)
from metasparse.data.shapes3d import Shapes3D, _item_index

__all__ = ["DATASET_NAME", "DEFAULT_CLASS_FACTORS", "SPLITS", "Shapes3DFewShot", "split_classes"]

DATASET_NAME = "shapes3d-fs"
SPLITS = ("train", "validation", "test")
_SPLIT_FRACTIONS = (0.6, 0.2)  # train, validation; test gets the rest
DEFAULT_CLASS_FACTORS = ("shape", "object_hue", "scale")


def split_classes(num_classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Disjoint, sorted class ids of the train / validation / test splits (60% / 20% / rest).

    Args:
        num_classes: Number of classes, at least 3.
        seed: Seed of the permutation; the same seed gives the same splits on every machine.

    Returns:
        ``{split: int64 tensor of class ids}`` for each of `SPLITS`.

    Example:
        >>> {name: len(ids) for name, ids in split_classes(320).items()}
        {'train': 192, 'validation': 64, 'test': 64}
    """
    if num_classes < len(SPLITS):
        raise ValueError(f"num_classes must be at least {len(SPLITS)}, got {num_classes}")
    permutation = torch.randperm(num_classes, generator=torch.Generator().manual_seed(seed))
    n_train = max(1, round(_SPLIT_FRACTIONS[0] * num_classes))
    n_validation = max(1, min(round(_SPLIT_FRACTIONS[1] * num_classes), num_classes - n_train - 1))
    bounds = (0, n_train, n_train + n_validation, num_classes)
    return {name: permutation[bounds[k]:bounds[k + 1]].sort().values for k, name in enumerate(SPLITS)}


def _class_of_images(class_factors: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class id of every image (C order over ``class_factors``), and that order's sizes and strides."""
    columns = [FACTOR_NAMES.index(name) for name in class_factors]
    sizes = torch.tensor([FACTOR_SIZES[k] for k in columns])
    strides = torch.cat([sizes.flip(0).cumprod(0).flip(0)[1:], torch.ones(1, dtype=torch.long)])
    factor_indices = flat_to_factor_indices(torch.arange(NUM_IMAGES))[:, columns]
    return (factor_indices * strides).sum(1), sizes, strides


class Shapes3DFewShot(Dataset):
    """One split of ``shapes3d-fs``: 3D Shapes images labelled by a combination of object factors.

    Args:
        split: ``"train"``, ``"validation"`` or ``"test"``.
        source: The images; ``None`` uses ``Shapes3D()`` (the procedural renderer). Pass
            ``Shapes3D(path="3dshapes.h5")`` for the real images.
        seed: Seed of the class split.
        class_factors: Factors whose combination is the class; the others vary within a class.

    Attributes:
        num_classes: Classes in this split.
        class_ids: int64 (num_classes,) id of each label among all combinations of ``class_factors``
            (C order over them, in the order given).
        class_factor_indices: int64 (num_classes, len(class_factors)) factor indices of each label.
        flat_indices: int64 (len,) index into ``source`` of each item, grouped by label.
        labels: int64 (len,) label of each item.
        labels_to_indices: ``{label: [item indices]}``, for learn2learn's ``MetaDataset``.

    Example:
        >>> test = Shapes3DFewShot("test", seed=0)
        >>> image, label = test[0]
        >>> image.shape, label
        (torch.Size([3, 64, 64]), 0)
    """

    def __init__(self, split: str = "train", source: Shapes3D | None = None, seed: int = 0,
                 class_factors: tuple[str, ...] = DEFAULT_CLASS_FACTORS) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        class_factors = tuple(class_factors)
        unknown = [name for name in class_factors if name not in FACTOR_NAMES]
        if not class_factors or unknown or len(set(class_factors)) != len(class_factors):
            raise ValueError(f"class_factors must be distinct names from {FACTOR_NAMES}, got {class_factors}")
        self.split, self.seed, self.class_factors = split, seed, class_factors
        self.source = Shapes3D() if source is None else source

        class_of_image, sizes, strides = _class_of_images(class_factors)
        self.class_ids = split_classes(int(sizes.prod()), seed)[split]
        self.num_classes = len(self.class_ids)
        self.class_factor_indices = torch.div(self.class_ids[:, None], strides, rounding_mode="floor") % sizes
        label_of_class = torch.full((int(sizes.prod()),), -1, dtype=torch.long)
        label_of_class[self.class_ids] = torch.arange(self.num_classes)
        label_of_image = label_of_class[class_of_image]
        in_split = torch.nonzero(label_of_image >= 0).squeeze(1)
        order = torch.argsort(label_of_image[in_split], stable=True)
        self.flat_indices = in_split[order]
        self.labels = label_of_image[self.flat_indices]
        counts = torch.bincount(self.labels, minlength=self.num_classes).tolist()
        starts = [0, *torch.tensor(counts).cumsum(0).tolist()]
        self.labels_to_indices = {label: list(range(starts[label], starts[label + 1]))
                                  for label in range(self.num_classes)}

    def __len__(self) -> int:
        return len(self.flat_indices)

    def images(self, indices: object) -> torch.Tensor:
        """uint8 images (N, 64, 64, 3) of items ``indices`` (integers in ``[0, len(self))``)."""
        return self.source.images(self.flat_indices[_as_indices(indices, len(self))])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """``(image, label)``: float32 (3, 64, 64) in [0, 1] and an int in ``[0, num_classes)``."""
        index = _item_index(index, len(self))
        image = self.source.images([int(self.flat_indices[index])])[0].permute(2, 0, 1).float().div_(255)
        return image, int(self.labels[index])

    def __repr__(self) -> str:
        return (f"Shapes3DFewShot(split={self.split!r}, seed={self.seed}, classes={self.num_classes} of "
                f"{' x '.join(self.class_factors)}, items={len(self)}, source={self.source!r})")
