"""The 3D Shapes factor grid and conversions between flat indices, factor indices and factor values.

The grid is exactly the one of DeepMind's ``3dshapes.h5``: six factors, flat index in C order over
`FACTOR_SIZES` (``orientation`` varies fastest), so flat index ``i`` here is row ``i`` of the
real file.

Example:
    >>> flat_to_factor_indices(torch.tensor([0, 1, 479999])).tolist()
    [[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1], [9, 9, 9, 7, 3, 14]]
    >>> factor_indices_to_flat(torch.tensor([[9, 9, 9, 7, 3, 14]])).tolist()
    [479999]
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "FACTOR_NAMES",
    "FACTOR_SIZES",
    "NUM_IMAGES",
    "SHAPE_NAMES",
    "all_factor_values",
    "factor_indices_to_flat",
    "factor_indices_to_values",
    "factor_values",
    "factor_values_to_indices",
    "flat_to_factor_indices",
    "flat_to_factor_values",
]

FACTOR_NAMES: tuple[str, ...] = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
FACTOR_SIZES: tuple[int, ...] = (10, 10, 10, 8, 4, 15)
NUM_IMAGES: int = int(np.prod(FACTOR_SIZES))
SHAPE_NAMES: tuple[str, ...] = ("cube", "cylinder", "sphere", "capsule")

# np.linspace, as the real file was written: the values match its labels to the last bit.
_FACTOR_VALUES = (
    np.linspace(0.0, 0.9, 10),
    np.linspace(0.0, 0.9, 10),
    np.linspace(0.0, 0.9, 10),
    np.linspace(0.75, 1.25, 8),
    np.arange(4, dtype=np.float64),
    np.linspace(-30.0, 30.0, 15),
)
_STRIDES = tuple(int(np.prod(FACTOR_SIZES[k + 1:])) for k in range(len(FACTOR_SIZES)))
# Labels of the real file equal the grid values up to float rounding; anything further off is not on the grid.
_VALUE_TOLERANCE = 1e-6


def factor_values(name: str) -> torch.Tensor:
    """The values one factor takes, in index order.

    Args:
        name: One of `FACTOR_NAMES`.

    Returns:
        float64 tensor of ``FACTOR_SIZES[k]`` values (hues in [0, 0.9], scale in [0.75, 1.25], shape
        0..3 for `SHAPE_NAMES`, orientation in [-30, 30] degrees).

    Example:
        >>> factor_values("scale")[[0, -1]].tolist()
        [0.75, 1.25]
    """
    if name not in FACTOR_NAMES:
        raise ValueError(f"name must be one of {FACTOR_NAMES}, got {name!r}")
    return torch.from_numpy(_FACTOR_VALUES[FACTOR_NAMES.index(name)].copy())


def _as_int64(values: object, argument: str) -> torch.Tensor:
    tensor = torch.as_tensor(values)
    if tensor.numel() == 0:  # torch.as_tensor([]) is float32
        return tensor.long()
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"{argument} must hold integers, got dtype {tensor.dtype}")
    return tensor.long()


def _check_range(indices: torch.Tensor, size: int, argument: str) -> None:
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= size):
        raise IndexError(f"{argument} must be in [0, {size}), got values in "
                         f"[{int(indices.min())}, {int(indices.max())}]")


def _as_indices(values: object, size: int, argument: str = "indices") -> torch.Tensor:
    """Integer array-like -> 1-D int64 CPU tensor, checked against ``[0, size)``."""
    indices = _as_int64(values, argument).reshape(-1).cpu()
    _check_range(indices, size, argument)
    return indices


def _check_factor_indices(factor_indices: torch.Tensor, argument: str) -> None:
    if factor_indices.shape[-1:] != (len(FACTOR_SIZES),):
        raise ValueError(f"{argument} must have shape (..., {len(FACTOR_SIZES)}), "
                         f"got {tuple(factor_indices.shape)}")
    sizes = torch.tensor(FACTOR_SIZES, device=factor_indices.device)
    bad = (factor_indices < 0) | (factor_indices >= sizes)
    if bool(bad.any()):
        column = int(bad.reshape(-1, len(FACTOR_SIZES)).any(0).nonzero()[0])
        raise IndexError(f"{argument}[..., {column}] ({FACTOR_NAMES[column]}) must be in "
                         f"[0, {FACTOR_SIZES[column]})")


def flat_to_factor_indices(flat: object) -> torch.Tensor:
    """Factor indices of flat indices.

    Args:
        flat: Integer array-like of any shape, values in ``[0, NUM_IMAGES)``.

    Returns:
        int64 tensor of shape ``flat.shape + (6,)``, on ``flat``'s device.

    Example:
        >>> flat_to_factor_indices(15).tolist()
        [0, 0, 0, 0, 1, 0]
    """
    flat = _as_int64(flat, "flat")
    _check_range(flat, NUM_IMAGES, "flat")
    strides = torch.tensor(_STRIDES, device=flat.device)
    sizes = torch.tensor(FACTOR_SIZES, device=flat.device)
    return torch.div(flat.unsqueeze(-1), strides, rounding_mode="floor") % sizes


def factor_indices_to_flat(factor_indices: object) -> torch.Tensor:
    """Flat indices (rows of the real file) of factor indices.

    Args:
        factor_indices: Integer array-like of shape ``(..., 6)``; column ``k`` in ``[0, FACTOR_SIZES[k])``.

    Returns:
        int64 tensor of shape ``factor_indices.shape[:-1]``.

    Example:
        >>> factor_indices_to_flat([0, 0, 0, 0, 1, 0]).tolist()
        15
    """
    factor_indices = _as_int64(factor_indices, "factor_indices")
    _check_factor_indices(factor_indices, "factor_indices")
    return (factor_indices * torch.tensor(_STRIDES, device=factor_indices.device)).sum(-1)


def factor_indices_to_values(factor_indices: object) -> torch.Tensor:
    """Factor values of factor indices.

    Args:
        factor_indices: Integer array-like of shape ``(..., 6)``.

    Returns:
        float64 tensor of the same shape.

    Example:
        >>> factor_indices_to_values([9, 0, 0, 7, 2, 0]).tolist()
        [0.9, 0.0, 0.0, 1.25, 2.0, -30.0]
    """
    factor_indices = _as_int64(factor_indices, "factor_indices")
    _check_factor_indices(factor_indices, "factor_indices")
    columns = [torch.from_numpy(values).to(factor_indices.device)[factor_indices[..., k]]
               for k, values in enumerate(_FACTOR_VALUES)]
    return torch.stack(columns, dim=-1)


def factor_values_to_indices(values: object) -> torch.Tensor:
    """Factor indices of factor values that lie on the grid (within 1e-6).

    Args:
        values: Array-like of shape ``(..., 6)``, e.g. rows of the real file's ``labels``.

    Returns:
        int64 tensor of the same shape.

    Raises:
        ValueError: A value is not one of its factor's grid values.

    Example:
        >>> factor_values_to_indices([0.9, 0.0, 0.0, 1.25, 2.0, -30.0]).tolist()
        [9, 0, 0, 7, 2, 0]
    """
    values = torch.as_tensor(values, dtype=torch.float64)
    if values.shape[-1:] != (len(FACTOR_SIZES),):
        raise ValueError(f"values must have shape (..., {len(FACTOR_SIZES)}), got {tuple(values.shape)}")
    columns = []
    for k, grid in enumerate(_FACTOR_VALUES):
        grid = torch.from_numpy(grid).to(values.device)
        distance = (values[..., k].unsqueeze(-1) - grid).abs()
        nearest = distance.argmin(-1)
        off_grid = distance.gather(-1, nearest.unsqueeze(-1)).squeeze(-1) > _VALUE_TOLERANCE
        if bool(off_grid.any()):
            example = float(values[..., k][off_grid].reshape(-1)[0])
            raise ValueError(f"values[..., {k}] ({FACTOR_NAMES[k]}) must be one of {grid.tolist()}, "
                             f"got {example}")
        columns.append(nearest)
    return torch.stack(columns, dim=-1)


def flat_to_factor_values(flat: object) -> torch.Tensor:
    """Factor values of flat indices: ``factor_indices_to_values(flat_to_factor_indices(flat))``.

    Example:
        >>> flat_to_factor_values(479999).tolist()
        [0.9, 0.9, 0.9, 1.25, 3.0, 30.0]
    """
    return factor_indices_to_values(flat_to_factor_indices(flat))


def all_factor_values() -> torch.Tensor:
    """Factor values of all images, row ``i`` for flat index ``i``, as the real file's ``labels``.

    Returns:
        float64 tensor of shape ``(NUM_IMAGES, 6)``.

    Example:
        >>> all_factor_values().shape
        torch.Size([480000, 6])
    """
    return flat_to_factor_values(torch.arange(NUM_IMAGES))
