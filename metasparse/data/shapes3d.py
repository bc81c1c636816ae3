"""The 3D Shapes dataset: DeepMind's ``3dshapes.h5`` when you have it, the procedural renderer otherwise.

Both sources have the same interface, the same 480,000 indices and the same factor grid (see
`metasparse.data.factors`).

Example:
    >>> ds = Shapes3D()                       # procedural renderer, no download
    >>> len(ds), ds.factor_sizes
    (480000, (10, 10, 10, 8, 4, 15))
    >>> image, factors = ds[0]
    >>> image.shape, factors.tolist()
    (torch.Size([3, 64, 64]), [0.0, 0.0, 0.0, 0.75, 0.0, -30.0])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from metasparse._optional import require
from metasparse.data.factors import (
    FACTOR_NAMES,
    FACTOR_SIZES,
    NUM_IMAGES,
    _as_indices,
    all_factor_values,
)
from metasparse.data.render import IMAGE_SIZE, Shapes3DRenderer

if TYPE_CHECKING:
    import h5py

__all__ = ["IMAGES_SHAPE", "LABELS_SHAPE", "Shapes3D", "Shapes3DFile"]

IMAGES_SHAPE = (NUM_IMAGES, IMAGE_SIZE, IMAGE_SIZE, 3)  # of the real file's datasets
LABELS_SHAPE = (NUM_IMAGES, len(FACTOR_NAMES))
# The real labels are np.linspace values stored as float64; allow for a float32 copy of the file.
_LABEL_TOLERANCE = 1e-5
_CHUNK_CACHE_BYTES = 64 * 2**20


def _item_index(index: object, length: int) -> int:
    """A Python int in ``[0, length)`` from a sequence-style index (negative counts from the end)."""
    if not isinstance(index, int | np.integer) or isinstance(index, bool):
        raise TypeError(f"index must be an int, got {type(index).__name__}; use images() for batches")
    if not -length <= index < length:
        raise IndexError(f"index must be in [-{length}, {length}), got {index}")
    return int(index) % length


class Shapes3DFile:
    """Reader of DeepMind's ``3dshapes.h5``: checks its structure, then reads images on demand.

    Contiguous uncompressed ``images`` are memory-mapped; chunked (e.g. compressed, as distributed)
    ones are read through h5py with a 64 MiB chunk cache. ``in_memory`` reads all images (5.9 GB)
    into RAM once. The HDF5 file is reopened in each process, so the reader works in DataLoader workers.

    Args:
        path: The ``.h5`` file.
        in_memory: Load all images into memory now.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is not an HDF5 file with the real file's datasets, shapes, dtypes and
            label grid.

    Example:
        >>> source = Shapes3DFile("3dshapes.h5")   # doctest: +SKIP
        >>> source.read(np.array([0, 479999])).shape   # doctest: +SKIP
        (2, 64, 64, 3)
    """

    def __init__(self, path: str | os.PathLike, in_memory: bool = False) -> None:
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise FileNotFoundError(f"path={str(path)!r}: no such file; download 3dshapes.h5 from "
                                    "https://github.com/google-deepmind/3d-shapes or use Shapes3D() "
                                    "for the procedural renderer")
        self._file = None
        self._pid: int | None = None
        self._memmap: np.ndarray | None = None
        self._loaded: np.ndarray | None = None
        images, labels = self._datasets()
        self.labels = torch.from_numpy(np.asarray(labels[()], dtype=np.float64))
        self._check_labels()
        contiguous = images.chunks is None and images.compression is None
        self._images_offset: int | None = images.id.get_offset() if contiguous else None
        if in_memory:
            self._loaded = np.empty(IMAGES_SHAPE, dtype=np.uint8)
            images.read_direct(self._loaded)

    def _open(self) -> h5py.File:
        """The h5py file, opened once per process (h5py handles must not cross a fork)."""
        if self._file is None or self._pid != os.getpid():
            h5py = require("h5py")
            try:
                self._file = h5py.File(self.path, "r", rdcc_nbytes=_CHUNK_CACHE_BYTES)
            except OSError as error:
                raise ValueError(f"path={str(self.path)!r} is not a readable HDF5 file ({error})") from error
            self._pid = os.getpid()
        return self._file

    def _datasets(self) -> tuple[h5py.Dataset, h5py.Dataset]:
        """``images`` and ``labels``, after checking their shapes and dtypes."""
        file = self._open()
        found = {name: (getattr(file.get(name), "shape", None), getattr(file.get(name), "dtype", None))
                 for name in ("images", "labels")}
        images_ok = found["images"] == (IMAGES_SHAPE, np.dtype(np.uint8))
        labels_ok = found["labels"][0] == LABELS_SHAPE and np.issubdtype(found["labels"][1], np.floating)
        if not (images_ok and labels_ok):
            raise ValueError(f"path={str(self.path)!r} does not have the structure of 3dshapes.h5: expected "
                             f"datasets images {IMAGES_SHAPE} uint8 and labels {LABELS_SHAPE} float, found "
                             + ", ".join(f"{name} {shape} {dtype}" if shape else f"no {name}"
                                         for name, (shape, dtype) in found.items()))
        return file["images"], file["labels"]

    def _check_labels(self) -> None:
        expected = all_factor_values()
        off_grid = (self.labels - expected).abs() > _LABEL_TOLERANCE
        if bool(off_grid.any()):
            row, column = (int(i) for i in off_grid.nonzero()[0])
            raise ValueError(f"path={str(self.path)!r}: labels[{row}, {column}] = "
                             f"{float(self.labels[row, column])} but row {row} of 3dshapes.h5 has "
                             f"{FACTOR_NAMES[column]} = {float(expected[row, column])}; the file's rows "
                             "must follow the real factor order (orientation fastest)")

    @property
    def memory_mapped(self) -> bool:
        """Whether images are read through a memory map (contiguous, uncompressed ``images``)."""
        return self._loaded is None and self._images_offset is not None

    def read(self, indices: np.ndarray) -> np.ndarray:
        """uint8 images (N, 64, 64, 3) at flat ``indices`` (int64, checked by the caller; any order)."""
        if self._loaded is not None:
            return self._loaded[indices]
        if self.memory_mapped:
            if self._memmap is None:
                self._memmap = np.memmap(self.path, dtype=np.uint8, mode="r", offset=self._images_offset,
                                         shape=IMAGES_SHAPE)
            return np.asarray(self._memmap[indices])
        if indices.size == 0:
            return np.empty((0, *IMAGES_SHAPE[1:]), dtype=np.uint8)
        # h5py fancy selections must be increasing and unique
        unique, inverse = np.unique(indices, return_inverse=True)
        return self._open()["images"][unique][inverse]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None, "_pid": None, "_memmap": None}


class Shapes3D(Dataset):
    """3D Shapes: 480,000 images 64x64x3 with six known factors, from the real file or the renderer.

    ``Shapes3D()`` renders the images procedurally (`metasparse.data.render.Shapes3DRenderer`);
    ``Shapes3D(path="3dshapes.h5")`` reads DeepMind's file. Index ``i`` is row ``i`` of the real file,
    with the same factor values.

    Args:
        path: The real ``3dshapes.h5``; ``None`` uses the renderer.
        in_memory: With ``path``: read all images into memory (5.9 GB) instead of on demand.
        device: Where `images` and items are returned (and, for the renderer, computed).
        cache: Renderer only: ``True`` keeps its coverage maps in a file under
            `metasparse.data.render.default_cache_dir`, a path keeps it in that directory.

    Attributes:
        factor_names: ``("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")``.
        factor_sizes: ``(10, 10, 10, 8, 4, 15)``.
        path: The file, or ``None`` for the renderer.

    Example:
        >>> ds = Shapes3D()
        >>> ds.images([0, 1, 2]).shape, ds.images([0]).dtype
        (torch.Size([3, 64, 64, 3]), torch.uint8)
        >>> ds.factors.shape
        torch.Size([480000, 6])
    """

    factor_names: tuple[str, ...] = FACTOR_NAMES
    factor_sizes: tuple[int, ...] = FACTOR_SIZES

    def __init__(self, path: str | os.PathLike | None = None, *, in_memory: bool = False,
                 device: str | torch.device = "cpu", cache: bool | str | os.PathLike = False) -> None:
        self.device = torch.device(device)
        if path is None:
            if in_memory:
                raise ValueError("in_memory=True needs path= (the renderer always works from memory)")
            self.path = None
            self._file = None
            self._renderer: Shapes3DRenderer | None = Shapes3DRenderer(self.device, cache=cache)
        else:
            if cache is not False:
                raise ValueError("cache= applies to the renderer only; with path= the file is the data")
            self._file = Shapes3DFile(path, in_memory=in_memory)
            self.path = self._file.path
            self._renderer = None
        self._factors: torch.Tensor | None = None

    def __len__(self) -> int:
        return NUM_IMAGES

    @property
    def factors(self) -> torch.Tensor:
        """float64 (480000, 6) CPU tensor of factor values, row ``i`` for index ``i`` (the file's labels)."""
        if self._factors is None:
            self._factors = self._file.labels if self._file is not None else all_factor_values()
        return self._factors

    def images(self, indices: object) -> torch.Tensor:
        """Images at flat indices.

        Args:
            indices: Integer array-like (int, list, numpy array or tensor) of values in ``[0, 480000)``.

        Returns:
            uint8 tensor (N, 64, 64, 3) on `device`, N = number of indices.

        Raises:
            IndexError: An index is out of range.
            TypeError: ``indices`` are not integers.

        Example:
            >>> Shapes3D().images(range(4)).shape
            torch.Size([4, 64, 64, 3])
        """
        flat = _as_indices(indices, NUM_IMAGES)
        if self._renderer is not None:
            return self._renderer.images(flat.to(self.device))
        return torch.from_numpy(self._file.read(flat.numpy())).to(self.device)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image, factors)``: float32 (3, 64, 64) in [0, 1] and float64 (6,) factor values."""
        index = _item_index(index, NUM_IMAGES)
        image = self.images([index])[0].permute(2, 0, 1).float().div_(255)
        return image, self.factors[index].to(self.device, copy=True)

    def __repr__(self) -> str:
        source = f"path={str(self.path)!r}" if self.path is not None else "renderer"
        return f"Shapes3D({source}, device={str(self.device)!r})"
