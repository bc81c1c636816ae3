"""Factor traversal grids of 3D Shapes: one row per factor, through all its values, the others fixed.

Run ``python -m metasparse.data.visualize --out docs/img/shapes3d_traversals.png`` for the renderer's
grid, or add ``--path 3dshapes.h5`` for the real images.

Example:
    >>> rows = traversal_indices()
    >>> tuple(len(row) for row in rows)
    (10, 10, 10, 8, 4, 15)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from metasparse._optional import require
from metasparse.data.factors import (
    FACTOR_NAMES,
    FACTOR_SIZES,
    SHAPE_NAMES,
    factor_indices_to_flat,
    factor_values,
)
from metasparse.data.shapes3d import Shapes3D

__all__ = ["DEFAULT_ANCHOR", "main", "save_traversal_grid", "traversal_indices"]

DEFAULT_ANCHOR: tuple[int, ...] = (3, 6, 0, 4, 0, 7)
"""Factor indices of the grid's anchor: green floor, blue wall, red cube of scale 1.04, orientation 0."""


def traversal_indices(anchor: Sequence[int] = DEFAULT_ANCHOR) -> list[torch.Tensor]:
    """Flat indices of each factor's traversal through ``anchor``.

    Args:
        anchor: Factor indices (6,) of the image every row passes through.

    Returns:
        One int64 tensor per factor, row ``k`` of length ``FACTOR_SIZES[k]``: factor ``k`` takes each of
        its values, the other factors keep the anchor's.

    Example:
        >>> traversal_indices((0, 0, 0, 0, 0, 0))[4].tolist()
        [0, 15, 30, 45]
    """
    anchor_tensor = torch.as_tensor(anchor, dtype=torch.long)
    factor_indices_to_flat(anchor_tensor)  # checks the anchor
    rows = []
    for k, size in enumerate(FACTOR_SIZES):
        grid = anchor_tensor.repeat(size, 1)
        grid[:, k] = torch.arange(size)
        rows.append(factor_indices_to_flat(grid))
    return rows


def _value_label(factor: int, index: int) -> str:
    if FACTOR_NAMES[factor] == "shape":
        return SHAPE_NAMES[index]
    value = float(factor_values(FACTOR_NAMES[factor])[index])
    return f"{value:.0f}°" if FACTOR_NAMES[factor] == "orientation" else f"{value:.2f}"


def save_traversal_grid(out: str | Path, dataset: Shapes3D | None = None,
                        anchor: Sequence[int] = DEFAULT_ANCHOR) -> Path:
    """Save a PNG with one row per factor traversal (needs matplotlib).

    Args:
        out: PNG path; parent folders are created.
        dataset: Source of the images; ``None`` uses the renderer.
        anchor: Factor indices of the image all rows pass through.

    Returns:
        The written path.

    Example:
        >>> save_traversal_grid("traversals.png")  # doctest: +SKIP
    """
    matplotlib = require("matplotlib")
    matplotlib.use("Agg")
    pyplot = require("matplotlib.pyplot")
    dataset = Shapes3D() if dataset is None else dataset
    rows = traversal_indices(anchor)
    columns = max(FACTOR_SIZES)
    figure, axes = pyplot.subplots(len(rows), columns, figsize=(columns * 0.8 + 0.9, len(rows) * 0.92),
                                   squeeze=False)
    for k, row in enumerate(rows):
        images = dataset.images(row).cpu().numpy()
        for j in range(columns):
            ax = axes[k, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(row):
                ax.set_axis_off()
                continue
            ax.imshow(images[j], interpolation="nearest")
            ax.set_xlabel(_value_label(k, j), fontsize=6, labelpad=1)
        axes[k, 0].set_ylabel(FACTOR_NAMES[k], fontsize=7, rotation=0, ha="right", va="center")
    figure.subplots_adjust(left=0.09, right=0.995, top=0.99, bottom=0.03, wspace=0.06, hspace=0.32)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    pyplot.close(figure)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m metasparse.data.visualize``: write the traversal grid PNG."""
    parser = argparse.ArgumentParser(prog="python -m metasparse.data.visualize", description=__doc__)
    parser.add_argument("--out", default="docs/img/shapes3d_traversals.png", help="PNG to write")
    parser.add_argument("--path", default=None, help="the real 3dshapes.h5 (default: the renderer)")
    parser.add_argument("--anchor", type=int, nargs=len(FACTOR_SIZES), default=list(DEFAULT_ANCHOR),
                        metavar="I", help=f"factor indices of the anchor image ({', '.join(FACTOR_NAMES)})")
    args = parser.parse_args(argv)
    written = save_traversal_grid(args.out, Shapes3D(args.path), args.anchor)
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
