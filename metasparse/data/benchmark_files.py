"""The files of the five learn2learn benchmarks under a data root, and reading them with learn2learn.

`read_benchmark` checks that a benchmark's files are where learn2learn's dataset class looks for them,
lets that class read them (downloading only with ``download=True``), then checks what it read. A
missing file raises ``FileNotFoundError`` and a malformed one ``ValueError``; both name the path, the
expected format (`LAYOUTS`), the ``data_root`` argument (``--data-root``) and ``download=True``
(``--download``), and no learn2learn traceback comes with them. With ``download=True`` learn2learn
downloads the files that are missing (it never replaces a file that exists).

The pickles are unpickled: read only files from a source you trust.

Example:
    >>> LAYOUTS["fc100"].split(":")[0]
    'FC100_{train,val,test}.pickle'
    >>> source = read_benchmark("fc100", "~/data", "train")   # doctest: +SKIP
    >>> len(source.dataset) == len(source.labels)   # doctest: +SKIP
    True
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from metasparse._optional import require

__all__ = ["FILE_SPLITS", "LAYOUTS", "BenchmarkSource", "read_benchmark"]

# learn2learn's split names in file names (mini-ImageNet alone uses "validation").
FILE_SPLITS = {"train": "train", "validation": "val", "test": "test"}
MINI_IMAGENET_SHAPE = (84, 84, 3)
TIERED_IMAGENET_SIZE = (84, 84)
CIFAR_SHAPE = (32, 32, 3)
OMNIGLOT_PARTS = ("images_background", "images_evaluation")

LAYOUTS = {
    "omniglot": "omniglot-py/images_background.zip and omniglot-py/images_evaluation.zip (torchvision's "
                "Omniglot zips, checked against their md5), extracted beside them as "
                "omniglot-py/images_{background,evaluation}/<alphabet>/<character>/<image>.png (extracted "
                "from the zips when missing)",
    "mini-imagenet": "mini-imagenet-cache-{train,validation,test}.pkl: pickled dicts {'image_data': uint8 "
                     "array (N, 84, 84, 3), 'class_dict': {class name: [row indices]}}",
    "tiered-imagenet": "tiered-imagenet/{train,val,test}_images_png.pkl (pickled sequences of PNG-encoded "
                       "84x84 RGB images) and tiered-imagenet/{train,val,test}_labels.pkl (pickled dicts "
                       "whose 'label_specific' holds one int class per image)",
    "cifarfs": "cifarfs/cifar100/data/<class>/<image>.png (32x32 RGB) and "
               "cifarfs/cifar100/splits/bertinetto/{train,val,test}.txt (one class folder name per line), "
               "i.e. learn2learn's cifar100.zip extracted into cifarfs/; on first use learn2learn copies "
               "the classes into cifarfs/processed/{train,val,test}/<class>/",
    "fc100": "FC100_{train,val,test}.pickle: pickled dicts {'data': uint8 array (N, 32, 32, 3), "
             "'labels': [one CIFAR-100 class id per image]}",
}


class BenchmarkSource(NamedTuple):
    """One split as learn2learn's dataset class read it.

    Attributes:
        dataset: The learn2learn dataset, read with ``transform=None``: its items are ``(image, class)``
            with the image as that class returns it.
        labels: int64 (len(dataset),) class of each item as the files number them (not yet ``[0, K)``).
        order: int64 permutation of the items that is the same on every machine: the files' order, except
            for Omniglot, whose torchvision reader lists folders and files in ``os.listdir`` order; there
            it sorts the items by path, and ``labels`` number the characters in sorted path order.

    Example:
        >>> source = read_benchmark("mini-imagenet", "~/data", "test")  # doctest: +SKIP
        >>> len(source.dataset), int(source.labels.max()) + 1               # doctest: +SKIP
        (12000, 20)
    """

    dataset: Dataset
    labels: torch.Tensor
    order: torch.Tensor


def _how_to_fix(root: Path) -> str:
    return (f"Put the files under data_root={str(root)!r} (--data-root), or pass download=True "
            "(--download) to let learn2learn download the missing ones; see docs/datasets.md")


def _missing(name: str, paths: list[Path], root: Path) -> FileNotFoundError:
    listed = ", ".join(str(path) for path in paths)
    return FileNotFoundError(f"{name}: {listed} not found. Expected under data_root: {LAYOUTS[name]}. "
                             + _how_to_fix(root))


def _malformed(name: str, path: Path, problem: str) -> ValueError:
    return ValueError(f"{name}: {path} is malformed: {problem}. Expected under data_root: {LAYOUTS[name]}. "
                      "Replace it (or delete it and pass download=True / --download to fetch it again)")


def _require_files(name: str, paths: list[Path], root: Path, download: bool) -> None:
    absent = [path for path in paths if not path.is_file()]
    if absent and not download:
        raise _missing(name, absent, root)


@contextlib.contextmanager
def _reading(name: str, paths: list[Path], root: Path, download: bool) -> Iterator[None]:
    """Turn whatever learn2learn raises while it reads (or downloads) ``paths`` into one clear error."""
    try:
        yield
    except Exception as error:  # learn2learn raises anything from KeyError to UnpicklingError
        absent = [path for path in paths if not path.exists()]
        if absent:
            message = str(_missing(name, absent, root))
            if download:
                message = f"download=True failed ({type(error).__name__}: {error}); " + message
            raise FileNotFoundError(message) from None
        raise _malformed(name, paths[0] if len(paths) == 1 else paths[0].parent,
                         f"learn2learn could not read it ({type(error).__name__}: {error})") from None


def _described(array: object) -> str:
    if isinstance(array, np.ndarray):
        return f"{array.dtype} array {array.shape}"
    return type(array).__name__


def _class_ids(name: str, path: Path, values: object, length: int) -> torch.Tensor:
    """int64 (length,) tensor of the per-image class ids ``values``, checked."""
    ids = np.asarray(values)
    if ids.shape != (length,) or not np.issubdtype(ids.dtype, np.integer):
        raise _malformed(name, path, f"expected {length} integer class ids (one per image), "
                                     f"got {_described(ids)}")
    return torch.from_numpy(ids.astype(np.int64))


def _first_image_size(name: str, path: Path, dataset: Dataset, expected: tuple[int, int]) -> None:
    """Decode item 0 (a PIL image) and check its size: the other images are decoded only when used."""
    if len(dataset) == 0:
        raise _malformed(name, path, "it holds no images")
    try:
        image, _ = dataset[0]
    except Exception as error:
        raise _malformed(name, path, f"its first image does not decode ({type(error).__name__}: "
                                     f"{error})") from None
    if image.size != expected:
        raise _malformed(name, path, f"its first image is {image.size[0]}x{image.size[1]}, "
                                     f"expected {expected[0]}x{expected[1]}")


def _mini_imagenet(root: Path, split: str, download: bool) -> BenchmarkSource:
    name = "mini-imagenet"
    path = root / f"mini-imagenet-cache-{split}.pkl"
    _require_files(name, [path], root, download)
    datasets = require("learn2learn.vision.datasets")
    with _reading(name, [path], root, download):
        dataset = datasets.MiniImagenet(root=str(root), mode=split, download=download)
    images, class_dict = dataset.data["image_data"], dataset.data["class_dict"]
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8
            and images.shape[1:] == MINI_IMAGENET_SHAPE):
        raise _malformed(name, path, f"'image_data' is {_described(images)}, expected uint8 (N, 84, 84, 3)")
    labels = torch.full((len(images),), -1, dtype=torch.long)
    counted = 0
    for label, indices in enumerate(class_dict.values()):
        indices = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        if bool(((indices < 0) | (indices >= len(images))).any()):
            raise _malformed(name, path, f"'class_dict' has a row index outside [0, {len(images)})")
        labels[indices] = label
        counted += len(indices)
    if counted != len(images) or bool((labels < 0).any()):
        raise _malformed(name, path, f"'class_dict' must list each of the {len(images)} rows exactly once, "
                                     f"it lists {counted} entries")
    return BenchmarkSource(dataset, labels, torch.arange(len(labels)))


def _tiered_imagenet(root: Path, split: str, download: bool) -> BenchmarkSource:
    name = "tiered-imagenet"
    folder = root / "tiered-imagenet"
    images_path = folder / f"{FILE_SPLITS[split]}_images_png.pkl"
    labels_path = folder / f"{FILE_SPLITS[split]}_labels.pkl"
    _require_files(name, [images_path, labels_path], root, download)
    datasets = require("learn2learn.vision.datasets")
    with _reading(name, [images_path, labels_path], root, download):
        dataset = datasets.TieredImagenet(root=str(root), mode=split, download=download)
    labels = _class_ids(name, labels_path, dataset.labels, len(dataset.images))
    _first_image_size(name, images_path, dataset, TIERED_IMAGENET_SIZE)
    return BenchmarkSource(dataset, labels, torch.arange(len(labels)))


def _check_cifarfs_classes(root: Path, download: bool) -> None:
    """The raw layout learn2learn copies from: it copies all three splits at once and stops at the first
    missing class folder, leaving a partial processed/ that it would then take as complete."""
    name = "cifarfs"
    raw = root / "cifarfs" / "cifar100"
    split_files = [raw / "splits" / "bertinetto" / f"{short}.txt" for short in FILE_SPLITS.values()]
    if download and not (root / "cifarfs").exists():
        return  # learn2learn downloads and extracts the zip
    _require_files(name, split_files, root, download=False)
    for split_file in split_files:
        classes = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
        if not classes:
            raise _malformed(name, split_file, "it lists no class")
        absent = [label for label in classes if not (raw / "data" / label).is_dir()]
        if absent:
            raise _malformed(name, split_file, f"it lists classes with no folder under {raw / 'data'}: "
                                               f"{', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''}")


def _cifarfs(root: Path, split: str, download: bool) -> BenchmarkSource:
    name = "cifarfs"
    processed = root / "cifarfs" / "processed"
    split_folder = processed / FILE_SPLITS[split]
    if processed.exists():
        if not split_folder.is_dir():
            raise _malformed(name, processed, f"it has no {FILE_SPLITS[split]}/ folder; delete {processed} "
                                              "so that learn2learn rebuilds it from cifarfs/cifar100/")
    else:
        _check_cifarfs_classes(root, download)
    datasets = require("learn2learn.vision.datasets")
    with _reading(name, [split_folder], root, download):
        dataset = datasets.CIFARFS(root=str(root), mode=split, download=download)
    labels = _class_ids(name, split_folder, dataset.targets, len(dataset.samples))
    _first_image_size(name, split_folder, dataset, CIFAR_SHAPE[:2])
    return BenchmarkSource(dataset, labels, torch.arange(len(labels)))


def _fc100(root: Path, split: str, download: bool) -> BenchmarkSource:
    name = "fc100"
    path = root / f"FC100_{FILE_SPLITS[split]}.pickle"
    _require_files(name, [path], root, download)
    datasets = require("learn2learn.vision.datasets")
    with _reading(name, [path], root, download):
        dataset = datasets.FC100(root=str(root), mode=split, download=download)
    images = dataset.images
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.shape[1:] == CIFAR_SHAPE):
        raise _malformed(name, path, f"'data' is {_described(images)}, expected uint8 (N, 32, 32, 3)")
    labels = _class_ids(name, path, dataset.labels, len(images))
    return BenchmarkSource(dataset, labels, torch.arange(len(labels)))


def _omniglot(root: Path, split: str, download: bool) -> BenchmarkSource:
    """Both Omniglot parts (all 1623 characters): the split by character happens above this reader."""
    name = "omniglot"
    folder = root / "omniglot-py"
    zips = [folder / f"{part}.zip" for part in OMNIGLOT_PARTS]
    _require_files(name, zips, root, download)
    torchvision_datasets = require("torchvision.datasets")
    from torchvision.datasets.utils import check_integrity

    for part, zip_path in zip(OMNIGLOT_PARTS, zips, strict=True):
        if not zip_path.is_file():
            continue  # download=True: torchvision downloads and extracts it
        if not check_integrity(zip_path, torchvision_datasets.Omniglot.zips_md5[part]):
            raise _malformed(name, zip_path, "its md5 is not the one of torchvision's Omniglot zip (the "
                                             "file is incomplete or another archive)")
        if not (folder / part).is_dir():
            try:
                with zipfile.ZipFile(zip_path) as archive:
                    archive.extractall(folder)
            except (zipfile.BadZipFile, OSError) as error:
                raise _malformed(name, zip_path, f"it does not extract ({error})") from None
            if not (folder / part).is_dir():
                raise _malformed(name, zip_path, f"it has no {part}/ folder")
    datasets = require("learn2learn.vision.datasets")
    with _reading(name, zips, root, download):
        dataset = datasets.FullOmniglot(root=str(root), download=download)
    # torchvision keeps each item's character and file name in _flat_character_images: reading them avoids
    # loading every image (as learn2learn's MetaDataset would) just to learn its label.
    paths = [(f"{part}/{part_dataset._characters[character]}", file_name)
             for part, part_dataset in zip(OMNIGLOT_PARTS, dataset.dataset.datasets, strict=True)
             for file_name, character in part_dataset._flat_character_images]
    if not paths:
        raise _malformed(name, folder, "it holds no character images")
    character_rank = {character: rank for rank, character in enumerate(sorted({c for c, _ in paths}))}
    labels = torch.tensor([character_rank[character] for character, _ in paths], dtype=torch.long)
    order = torch.tensor(sorted(range(len(paths)), key=paths.__getitem__), dtype=torch.long)
    return BenchmarkSource(dataset, labels, order)


_READERS = {"omniglot": _omniglot, "mini-imagenet": _mini_imagenet, "tiered-imagenet": _tiered_imagenet,
            "cifarfs": _cifarfs, "fc100": _fc100}


def read_benchmark(name: str, data_root: str | os.PathLike, split: str,
                   download: bool = False) -> BenchmarkSource:
    """Read one split of a learn2learn benchmark from ``data_root``, checking its files.

    Args:
        name: A key of `LAYOUTS`: ``"omniglot"``, ``"mini-imagenet"``, ``"tiered-imagenet"``,
            ``"cifarfs"`` or ``"fc100"``.
        data_root: The folder holding the files as `LAYOUTS` describes (``~`` is expanded).
        split: ``"train"``, ``"validation"`` or ``"test"``; Omniglot ignores it and returns all characters.
        download: Let learn2learn download the files that are missing (the folder is created).

    Returns:
        The `BenchmarkSource`: learn2learn's dataset and each item's class as the files number it.

    Raises:
        FileNotFoundError: A file is missing (and ``download`` is False, or the download failed).
        ValueError: A file is malformed, or ``name`` / ``split`` is unknown.

    Example:
        >>> read_benchmark("mini-imagenet", "/no/such/root", "train")
        Traceback (most recent call last):
        ...
        FileNotFoundError: mini-imagenet: /no/such/root/mini-imagenet-cache-train.pkl not found. ...
    """
    if name not in _READERS:
        raise ValueError(f"name must be one of {tuple(_READERS)}, got {name!r}")
    if split not in FILE_SPLITS:
        raise ValueError(f"split must be one of {tuple(FILE_SPLITS)}, got {split!r}")
    root = Path(data_root).expanduser()
    if download:
        root.mkdir(parents=True, exist_ok=True)
    return _READERS[name](root, split, download)
