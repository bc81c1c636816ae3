"""Datasets: 3D Shapes (the real file or the procedural renderer) and its few-shot view ``shapes3d-fs``."""

from metasparse.data.factors import (
    FACTOR_NAMES,
    FACTOR_SIZES,
    NUM_IMAGES,
    SHAPE_NAMES,
    all_factor_values,
    factor_indices_to_flat,
    factor_indices_to_values,
    factor_values,
    factor_values_to_indices,
    flat_to_factor_indices,
    flat_to_factor_values,
)
from metasparse.data.fewshot import Shapes3DFewShot, split_classes
from metasparse.data.render import Shapes3DRenderer
from metasparse.data.shapes3d import Shapes3D, Shapes3DFile

__all__ = [
    "FACTOR_NAMES",
    "FACTOR_SIZES",
    "NUM_IMAGES",
    "SHAPE_NAMES",
    "Shapes3D",
    "Shapes3DFewShot",
    "Shapes3DFile",
    "Shapes3DRenderer",
    "all_factor_values",
    "factor_indices_to_flat",
    "factor_indices_to_values",
    "factor_values",
    "factor_values_to_indices",
    "flat_to_factor_indices",
    "flat_to_factor_values",
    "split_classes",
]
