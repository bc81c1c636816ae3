"""The named few-shot benchmarks: the offline ``shapes3d-fs`` and five datasets read through learn2learn.

``benchmark_dataset(name, split)`` gives one split as a dataset of ``(image, label)`` items: a float
``(C, H, W)`` image and an int label in ``[0, num_classes)`` of the split. Every split knows its labels
up front: pass ``labels_to_indices`` to learn2learn's ``MetaDataset`` (which would otherwise load every
image once to find them), and use ``load_items`` to load many items at once.

``omniglot``, ``mini-imagenet``, ``tiered-imagenet``, ``cifarfs`` and ``fc100`` are read by learn2learn's
dataset classes from the files under ``data_root`` (`metasparse.data.benchmark_files`, and
docs/datasets.md, describe them), with ``download=False`` unless you pass ``download=True``: learn2learn's
own ``get_tasksets`` always downloads, so it is never called. Images of the four MetaOptNet benchmarks
are normalised with MetaOptNet's per-dataset mean and std, and ``augment=True`` adds MetaOptNet's
augmentation to their training split (`metasparse.data.transforms`).

Example:
    >>> test = benchmark_dataset("shapes3d-fs", "test", image_size=32)
    >>> images, labels = test.load_items([0, 1, 2])
    >>> images.shape, labels.tolist(), test.num_classes
    (torch.Size([3, 3, 32, 32]), [0, 0, 0], 64)
    >>> image_shape("mini-imagenet"), image_shape("omniglot"), image_shape("shapes3d-fs", image_size=32)
    ((3, 84, 84), (1, 28, 28), (3, 32, 32))
    >>> from metasparse.tasks import classification_taskset
    >>> taskset = classification_taskset(test, n_way=5, n_shot=1, n_query=15,
    ...                                  labels_to_indices=test.labels_to_indices)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from metasparse.data.benchmark_files import LAYOUTS, read_benchmark
from metasparse.data.factors import _as_indices
from metasparse.data.fewshot import DEFAULT_CLASS_FACTORS, SPLITS, Shapes3DFewShot
from metasparse.data.render import IMAGE_SIZE as SHAPES3D_IMAGE_SIZE
from metasparse.data.shapes3d import Shapes3D, _item_index
from metasparse.data.transforms import (
    METAOPTNET_MEAN_STD,
    metaoptnet_augmentation,
    metaoptnet_normalization,
    omniglot_preprocessing,
    scale_to_unit,
)

__all__ = [
    "BENCHMARKS",
    "DEFAULT_DATA_ROOT",
    "OMNIGLOT_ROTATIONS",
    "BenchmarkInfo",
    "FewShotSplit",
    "Learn2LearnSplit",
    "OmniglotSplit",
    "Shapes3DSplit",
    "benchmark_dataset",
    "benchmark_info",
    "image_shape",
    "split_omniglot_characters",
]

BENCHMARKS = ("shapes3d-fs", "omniglot", "mini-imagenet", "tiered-imagenet", "cifarfs", "fc100")
DEFAULT_DATA_ROOT = "~/data"  # learn2learn's default root
SHAPES3D_FILE_NAME = "3dshapes.h5"
OMNIGLOT_ROTATIONS = 4  # quarter turns: 0, 90, 180 and 270 degrees
# learn2learn's Omniglot benchmark: 1100 / 100 / 423 of the 1623 characters.
_OMNIGLOT_SPLIT_SIZES = (1100, 100, 423)


@dataclass(frozen=True)
class BenchmarkInfo:
    """What a trainer needs to know of a benchmark before reading it (to build its backbone, say).

    Attributes:
        name: One of `BENCHMARKS`.
        channels: Image channels (1 for Omniglot, 3 otherwise).
        image_size: Side of the (square) images `benchmark_dataset` returns by default.
        num_classes: Classes of the (train, validation, test) splits of the full benchmark.
        crop_padding: MetaOptNet's random-crop padding at ``image_size``; ``None`` where
            ``augment=True`` is refused (Omniglot, shapes3d-fs).
        layout: The files expected under ``data_root`` (``""`` for shapes3d-fs, which needs none).

    Example:
        >>> info = benchmark_info("cifarfs")
        >>> info.image_shape(), info.num_classes, info.augmentable
        ((3, 32, 32), (64, 16, 20), True)
    """

    name: str
    channels: int
    image_size: int
    num_classes: tuple[int, int, int]
    crop_padding: int | None = None
    layout: str = ""

    @property
    def augmentable(self) -> bool:
        """Whether ``benchmark_dataset(..., augment=True)`` applies MetaOptNet's augmentation."""
        return self.crop_padding is not None

    def image_shape(self, image_size: int | None = None) -> tuple[int, int, int]:
        """``(channels, size, size)`` of the images at ``image_size`` (default: `image_size`)."""
        size = self.image_size if image_size is None else _checked_image_size(image_size, self)
        return (self.channels, size, size)


_INFO = {
    "shapes3d-fs": BenchmarkInfo("shapes3d-fs", 3, SHAPES3D_IMAGE_SIZE, (192, 64, 64)),
    "omniglot": BenchmarkInfo("omniglot", 1, 28, tuple(OMNIGLOT_ROTATIONS * n for n in _OMNIGLOT_SPLIT_SIZES),
                              layout=LAYOUTS["omniglot"]),
    "mini-imagenet": BenchmarkInfo("mini-imagenet", 3, 84, (64, 16, 20), 8, LAYOUTS["mini-imagenet"]),
    "tiered-imagenet": BenchmarkInfo("tiered-imagenet", 3, 84, (351, 97, 160), 8, LAYOUTS["tiered-imagenet"]),
    "cifarfs": BenchmarkInfo("cifarfs", 3, 32, (64, 16, 20), 4, LAYOUTS["cifarfs"]),
    "fc100": BenchmarkInfo("fc100", 3, 32, (60, 20, 20), 4, LAYOUTS["fc100"]),
}


def benchmark_info(name: str) -> BenchmarkInfo:
    """The `BenchmarkInfo` of ``name``, one of `BENCHMARKS`.

    Example:
        >>> benchmark_info("mini-imagenet").num_classes
        (64, 16, 20)
    """
    if name not in _INFO:
        raise ValueError(f"name must be one of {BENCHMARKS}, got {name!r}")
    return _INFO[name]


def image_shape(name: str, image_size: int | None = None) -> tuple[int, int, int]:
    """``(channels, height, width)`` of the images of benchmark ``name`` at ``image_size``.

    Example:
        >>> image_shape("tiered-imagenet"), image_shape("fc100", image_size=64)
        ((3, 84, 84), (3, 64, 64))
    """
    return benchmark_info(name).image_shape(image_size)


def _checked_image_size(image_size: object, info: BenchmarkInfo) -> int:
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
    if info.name == "shapes3d-fs" and image_size > SHAPES3D_IMAGE_SIZE:
        raise ValueError(f"image_size must be at most {SHAPES3D_IMAGE_SIZE} for shapes3d-fs (its images are "
                         f"{SHAPES3D_IMAGE_SIZE}x{SHAPES3D_IMAGE_SIZE}, and it only downsamples), "
                         f"got {image_size}")
    return image_size


def _labels_to_indices(labels: torch.Tensor, num_classes: int) -> dict[int, list[int]]:
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels, minlength=num_classes).tolist()
    return {label: chunk.tolist() for label, chunk in enumerate(order.split(counts))}


class FewShotSplit(Dataset):
    """One split of a few-shot benchmark: ``(image, label)`` items whose labels are all known up front.

    Subclasses load the images (`_image`, and `load_items` where a batch loads faster).

    Args:
        name: The benchmark, one of `BENCHMARKS`.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        labels: int64 (len,) label of each item; every value in ``[0, labels.max()]`` must occur.
        image_shape: ``(C, H, W)`` of every image.
        labels_to_indices: The map below, when the caller already has it.

    Attributes:
        num_classes: Classes in this split.
        labels_to_indices: ``{label: [item indices]}``, for learn2learn's ``MetaDataset``.

    Example:
        >>> class Constant(FewShotSplit):
        ...     def _image(self, index):
        ...         return torch.full((1, 2, 2), float(index))
        >>> split = Constant("toy", "train", torch.tensor([1, 0, 1]), (1, 2, 2))
        >>> split.num_classes, split.labels_to_indices
        (2, {0: [1], 1: [0, 2]})
        >>> images, labels = split.load_items([2, 0])
        >>> images[:, 0, 0, 0].tolist(), labels.tolist(), split[1][1]
        ([2.0, 0.0], [1, 1], 0)
    """

    def __init__(self, name: str, split: str, labels: torch.Tensor, image_shape: tuple[int, int, int],
                 labels_to_indices: dict[int, list[int]] | None = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.name, self.split, self.image_shape = name, split, image_shape
        self.labels = labels
        self.num_classes = int(labels.max()) + 1 if len(labels) else 0
        if bool((torch.bincount(labels, minlength=self.num_classes) == 0).any()):
            raise ValueError(f"labels must use every value in [0, {self.num_classes}) at least once")
        self.labels_to_indices = (_labels_to_indices(labels, self.num_classes) if labels_to_indices is None
                                  else labels_to_indices)

    def __len__(self) -> int:
        return len(self.labels)

    def _image(self, index: int) -> torch.Tensor:
        """Float (C, H, W) image of item ``index`` (in ``[0, len(self))``)."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """``(image, label)``: float32 (C, H, W) and an int in ``[0, num_classes)``."""
        index = _item_index(index, len(self))
        return self._image(index), int(self.labels[index])

    def load_items(self, indices: object) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of many items at once, as the same items one by one would give them.

        Args:
            indices: Integer array-like of item indices in ``[0, len(self))``, any order, repeats allowed.

        Returns:
            float32 (N, C, H, W) images and int64 (N,) labels.
        """
        indices = _as_indices(indices, len(self))
        if len(indices) == 0:
            return torch.empty((0, *self.image_shape)), self.labels[indices]
        return torch.stack([self._image(int(index)) for index in indices]), self.labels[indices]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, "
                f"classes={self.num_classes}, items={len(self)}, image_shape={self.image_shape})")


class Learn2LearnSplit(FewShotSplit):
    """A split of a benchmark read by one of learn2learn's dataset classes.

    Item ``i`` is ``transform(source[source_indices[i]][0])`` with label ``labels[i]``.

    Args:
        name: The benchmark.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        source: learn2learn's dataset, read with ``transform=None``.
        source_indices: int64 (len,) item of ``source`` behind each item.
        labels: int64 (len,) labels in ``[0, num_classes)``.
        transform: Image of a ``source`` item -> float (C, H, W) tensor.
        image_shape: ``(C, H, W)`` of the transformed images.

    Example:
        >>> test = benchmark_dataset("fc100", "test", data_root="~/data")   # doctest: +SKIP
        >>> test.num_classes, test.load_items([0, 1])[0].shape   # doctest: +SKIP
        (20, torch.Size([2, 3, 32, 32]))
    """

    def __init__(self, name: str, split: str, source: Dataset, source_indices: torch.Tensor,
                 labels: torch.Tensor, transform: Callable[[object], torch.Tensor],
                 image_shape: tuple[int, int, int]) -> None:
        if source_indices.shape != labels.shape:
            raise ValueError(f"source_indices {tuple(source_indices.shape)} and labels "
                             f"{tuple(labels.shape)} must have the same shape")
        super().__init__(name, split, labels, image_shape)
        self.source, self.source_indices, self.transform = source, source_indices, transform

    def _image(self, index: int) -> torch.Tensor:
        image, _ = self.source[int(self.source_indices[index])]
        return self.transform(image)


def split_omniglot_characters(num_characters: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Disjoint, sorted character ids of the Omniglot splits, in learn2learn's proportions 1100 / 100 / 423.

    learn2learn's benchmark draws its split with the unseeded global ``random``; a seed here gives every
    run (and machine) the same split.

    Args:
        num_characters: Characters to split (1623 in Omniglot), at least 3.
        seed: Seed of the permutation.

    Returns:
        ``{split: int64 tensor of character ids}`` for each of ``"train"``, ``"validation"``, ``"test"``.

    Example:
        >>> {split: len(ids) for split, ids in split_omniglot_characters(1623).items()}
        {'train': 1100, 'validation': 100, 'test': 423}
    """
    if num_characters < len(SPLITS):
        raise ValueError(f"num_characters must be at least {len(SPLITS)}, got {num_characters}")
    total = sum(_OMNIGLOT_SPLIT_SIZES)
    n_train = max(1, round(num_characters * _OMNIGLOT_SPLIT_SIZES[0] / total))
    n_validation = max(1, min(round(num_characters * _OMNIGLOT_SPLIT_SIZES[1] / total),
                              num_characters - n_train - 1))
    n_train = min(n_train, num_characters - n_validation - 1)
    permutation = torch.randperm(num_characters, generator=torch.Generator().manual_seed(seed))
    bounds = (0, n_train, n_train + n_validation, num_characters)
    return {split: permutation[bounds[k]:bounds[k + 1]].sort().values for k, split in enumerate(SPLITS)}


class OmniglotSplit(Learn2LearnSplit):
    """A split of Omniglot, each character at each quarter turn a class of its own.

    Omniglot has 1623 characters of 20 drawings each (``FullOmniglot`` joins torchvision's background
    and evaluation parts). The characters are split 1100 / 100 / 423 by `split_omniglot_characters`
    (learn2learn's sizes); every character of a split then gives `OMNIGLOT_ROTATIONS` classes, its
    drawings turned by 0, 90, 180 and 270 degrees, so the splits have 4400 / 400 / 1692 classes. This is
    the protocol of Vinyals et al. (2016) and Snell et al. (2017): a turned character is as different
    from the upright one as another character is, so the turns multiply the classes without new drawings.
    The turns of a character stay in its split, so no test character is seen in training at any angle.
    learn2learn's benchmark instead turns a whole class by a random angle in each task (its
    ``RandomClassRotation`` task transform); as classes of the dataset the turns need no special task
    transform and keep ``labels_to_indices`` exact. Images are grayscale 28x28 by default (Lanczos
    resizing, strokes 1 on 0), as in learn2learn's benchmark; labels follow the turns:
    ``label = turns * characters_in_split + character_label``.

    Args:
        split: ``"train"``, ``"validation"`` or ``"test"``.
        source: ``FullOmniglot`` read with ``transform=None`` (PIL images).
        source_items: int64 items of ``source`` in the order to use (`BenchmarkSource.order`).
        characters: int64 character id of each of ``source_items`` (ids the same on every machine).
        image_size: Side of the returned images.
        seed: Seed of the character split.

    Attributes:
        character_ids: int64 sorted ids of this split's characters (label ``k`` of turn 0 is
            ``character_ids[k]``).
        quarter_turns: int64 (len,) counter-clockwise quarter turns of each item.

    Example:
        >>> train = benchmark_dataset("omniglot", "train", data_root="~/data")   # doctest: +SKIP
        >>> train.num_classes, len(train.character_ids), train[0][0].shape   # doctest: +SKIP
        (4400, 1100, torch.Size([1, 28, 28]))
    """

    def __init__(self, split: str, source: Dataset, source_items: torch.Tensor, characters: torch.Tensor,
                 image_size: int = 28, seed: int = 0) -> None:
        present = torch.unique(characters)
        self.character_ids = present[split_omniglot_characters(len(present), seed)[split]]
        in_split = torch.isin(characters, self.character_ids)
        character_labels = torch.searchsorted(self.character_ids, characters[in_split])
        turns = torch.arange(OMNIGLOT_ROTATIONS).repeat_interleave(len(character_labels))
        labels = turns * len(self.character_ids) + character_labels.repeat(OMNIGLOT_ROTATIONS)
        self.quarter_turns = turns
        super().__init__("omniglot", split, source, source_items[in_split].repeat(OMNIGLOT_ROTATIONS),
                         labels, omniglot_preprocessing(image_size), (1, image_size, image_size))

    def _image(self, index: int) -> torch.Tensor:
        return torch.rot90(super()._image(index), int(self.quarter_turns[index]), dims=(1, 2))


class Shapes3DSplit(FewShotSplit):
    """A split of ``shapes3d-fs`` (`metasparse.data.fewshot.Shapes3DFewShot`), optionally downsampled.

    `load_items` renders (or reads) a whole batch at once: that is the fast way to load an episode.

    Args:
        split: ``"train"``, ``"validation"`` or ``"test"``.
        source: The 3D Shapes images; ``None`` uses the procedural renderer.
        image_size: Side of the returned images, at most 64 (area averaging: 32 averages 2x2 blocks).
        seed: Seed of the class split.
        class_factors: Factors whose combination is a class (`Shapes3DFewShot`).

    Attributes:
        few_shot: The wrapped `Shapes3DFewShot` (its class factors, class ids and flat indices).

    Example:
        >>> train = Shapes3DSplit("train", image_size=16)
        >>> images, labels = train.load_items(train.labels_to_indices[3][:5])
        >>> images.shape, labels.tolist()
        (torch.Size([5, 3, 16, 16]), [3, 3, 3, 3, 3])
    """

    def __init__(self, split: str, source: Shapes3D | None = None, image_size: int = SHAPES3D_IMAGE_SIZE,
                 seed: int = 0, class_factors: tuple[str, ...] = DEFAULT_CLASS_FACTORS) -> None:
        image_size = _checked_image_size(image_size, _INFO["shapes3d-fs"])
        self.few_shot = Shapes3DFewShot(split, source=source, seed=seed, class_factors=class_factors)
        self.image_size = image_size
        super().__init__("shapes3d-fs", split, self.few_shot.labels, (3, image_size, image_size),
                         self.few_shot.labels_to_indices)

    def load_items(self, indices: object) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of many items, rendered in one batch.

        Args:
            indices: Integer array-like of item indices in ``[0, len(self))``, any order, repeats allowed.

        Returns:
            float32 (N, 3, image_size, image_size) images in [0, 1] (on the source's device) and int64
            (N,) labels.
        """
        indices = _as_indices(indices, len(self))
        images = self.few_shot.images(indices).permute(0, 3, 1, 2).float().div_(255)
        if self.image_size != SHAPES3D_IMAGE_SIZE:
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="area")
        return images, self.labels[indices]

    def _image(self, index: int) -> torch.Tensor:
        return self.load_items([index])[0][0]


def _shapes3d_source(data_root: str | os.PathLike | None) -> Shapes3D:
    """The real file if ``data_root`` is one (or a folder holding ``3dshapes.h5``), else the renderer."""
    if data_root is None:
        return Shapes3D()
    path = Path(data_root).expanduser()
    if path.suffix == ".h5":
        return Shapes3D(path=path)
    candidate = path / SHAPES3D_FILE_NAME
    return Shapes3D(path=candidate) if candidate.is_file() else Shapes3D()


def _rgb_tensor(image: object) -> torch.Tensor:
    """A PIL image (learn2learn's tiered-ImageNet, CIFAR-FS and FC100 items) as float (3, H, W) in [0, 1]."""
    from torchvision.transforms import functional

    return functional.to_tensor(image.convert("RGB"))


def _metaoptnet_transform(info: BenchmarkInfo, split: str, augment: bool,
                          image_size: int) -> Callable[[object], torch.Tensor]:
    """Decode, resize (if asked), augment (training split, if asked), normalise."""
    from torchvision import transforms

    # learn2learn's MiniImagenet items are float tensors in [0, 255]; the others' are PIL images.
    steps: list[Callable] = [scale_to_unit if info.name == "mini-imagenet" else _rgb_tensor]
    if image_size != info.image_size:
        steps.append(transforms.Resize((image_size, image_size), antialias=True))
    if augment and split == "train":
        padding = round(info.crop_padding * image_size / info.image_size)  # MetaOptNet's, scaled
        steps.append(metaoptnet_augmentation(image_size, padding))
    steps.append(metaoptnet_normalization(info.name))
    return transforms.Compose(steps)


def benchmark_dataset(name: str, split: str, data_root: str | os.PathLike | None = None,
                      download: bool = False, augment: bool = False, image_size: int | None = None,
                      class_factors: tuple[str, ...] | None = None) -> FewShotSplit:
    """One split of a named few-shot benchmark, as ``(image, label)`` items with ``labels_to_indices``.

    Args:
        name: One of `BENCHMARKS`.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        data_root: Folder of the benchmark files (`metasparse.data.benchmark_files.LAYOUTS`);
            ``None`` means `DEFAULT_DATA_ROOT`. For ``shapes3d-fs``: a ``3dshapes.h5`` file, or a folder
            holding one, gives the real images; otherwise (and by default) they are rendered.
        download: Let learn2learn download missing files (``shapes3d-fs`` never downloads).
        augment: Add MetaOptNet's augmentation to the training split of mini-imagenet, tiered-imagenet,
            cifarfs and fc100 (the other splits are never augmented); refused for shapes3d-fs (colour
            jitter would change the hues its classes are made of) and omniglot (its classes are already
            turned drawings).
        image_size: Side of the returned images; ``None`` keeps the benchmark's (`BenchmarkInfo`).
        class_factors: ``shapes3d-fs`` only: the factors whose combination is a class (names of
            `metasparse.data.FACTOR_NAMES`); ``None`` means ``("shape", "object_hue", "scale")``.

    Returns:
        A `FewShotSplit`: items ``(float32 (C, H, W) image, int label in [0, num_classes))``, with
        ``labels``, ``num_classes``, ``labels_to_indices`` and ``load_items(indices)``.

    Raises:
        FileNotFoundError: A file of the benchmark is missing (the message names it and the layout).
        ValueError: A file is malformed, or an argument is invalid.

    Example:
        >>> benchmark_dataset("cifarfs", "train", data_root="/no/such/root")
        Traceback (most recent call last):
        ...
        FileNotFoundError: cifarfs: /no/such/root/cifarfs/cifar100/splits/bertinetto/train.txt, ...
    """
    info = benchmark_info(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    size = info.image_size if image_size is None else _checked_image_size(image_size, info)
    if augment and not info.augmentable:
        raise ValueError(f"augment=True is not available for {name}: MetaOptNet's augmentation is for its "
                         f"natural-image benchmarks {tuple(METAOPTNET_MEAN_STD)} (colour jitter changes the "
                         "hues that make shapes3d-fs classes; Omniglot's classes are already its turns)")
    if class_factors is not None and name != "shapes3d-fs":
        raise ValueError(f"class_factors is a shapes3d-fs option; {name}'s classes are fixed, "
                         f"got {class_factors}")
    if name == "shapes3d-fs":
        factors = DEFAULT_CLASS_FACTORS if class_factors is None else tuple(class_factors)
        return Shapes3DSplit(split, _shapes3d_source(data_root), image_size=size, class_factors=factors)
    source = read_benchmark(name, DEFAULT_DATA_ROOT if data_root is None else data_root, split, download)
    classes = source.labels[source.order]
    if name == "omniglot":
        return OmniglotSplit(split, source.dataset, source.order, classes, image_size=size)
    labels = torch.unique(classes, return_inverse=True)[1]
    return Learn2LearnSplit(name, split, source.dataset, source.order, labels,
                            _metaoptnet_transform(info, split, augment, size), info.image_shape(size))
