"""Datasets: 3D Shapes (the real file or the procedural renderer) and its few-shot view ``shapes3d-fs``."""

from metasparse.data.benchmark_files import LAYOUTS, BenchmarkSource, read_benchmark
from metasparse.data.benchmarks import (
    BENCHMARKS,
    DEFAULT_DATA_ROOT,
    BenchmarkInfo,
    FewShotSplit,
    Learn2LearnSplit,
    OmniglotSplit,
    Shapes3DSplit,
    benchmark_dataset,
    benchmark_info,
    image_shape,
    split_omniglot_characters,
)
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
from metasparse.data.transforms import (
    METAOPTNET_MEAN_STD,
    metaoptnet_augmentation,
    metaoptnet_normalization,
    omniglot_preprocessing,
)

__all__ = [
    "BENCHMARKS",
    "DEFAULT_DATA_ROOT",
    "FACTOR_NAMES",
    "FACTOR_SIZES",
    "LAYOUTS",
    "METAOPTNET_MEAN_STD",
    "NUM_IMAGES",
    "SHAPE_NAMES",
    "BenchmarkInfo",
    "BenchmarkSource",
    "FewShotSplit",
    "Learn2LearnSplit",
    "OmniglotSplit",
    "Shapes3D",
    "Shapes3DFewShot",
    "Shapes3DFile",
    "Shapes3DRenderer",
    "Shapes3DSplit",
    "all_factor_values",
    "benchmark_dataset",
    "benchmark_info",
    "factor_indices_to_flat",
    "factor_indices_to_values",
    "factor_values",
    "factor_values_to_indices",
    "flat_to_factor_indices",
    "flat_to_factor_values",
    "image_shape",
    "metaoptnet_augmentation",
    "metaoptnet_normalization",
    "omniglot_preprocessing",
    "read_benchmark",
    "split_classes",
    "split_omniglot_characters",
]
