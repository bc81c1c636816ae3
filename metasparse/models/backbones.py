"""Few-shot backbones by name: learn2learn's ``CNN4Backbone`` and ``ResNet12Backbone``, not rewritten.

* ``"cnn4"``: four 3x3 conv / batch-norm / ReLU / 2x2 max-pool blocks of ``hidden_size`` channels
  (64 by default); on 84x84 images this is MetaOptNet's Conv4 with 1,600 features.
* ``"resnet12"``: MetaOptNet's ResNet-12 (64-160-320-640 channels, DropBlock in the last two stages);
  ``avg_pool=False`` (the default here, as in MetaOptNet) keeps the 5x5 maps, so 84x84 images give
  16,000 features. Use ``dropblock_size=2`` for 32x32 images (CIFAR-FS, FC100), as MetaOptNet does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from metasparse._optional import require

__all__ = ["BACKBONES", "build_backbone", "feature_size"]


def _cnn4(channels: int, hidden_size: int = 64) -> nn.Module:
    l2l = require("learn2learn")
    return l2l.vision.models.CNN4Backbone(hidden_size=hidden_size, channels=channels)


def _resnet12(channels: int, avg_pool: bool = False, dropblock_size: int = 5,
              dropblock_dropout: float = 0.1) -> nn.Module:
    l2l = require("learn2learn")
    return l2l.vision.models.ResNet12Backbone(avg_pool=avg_pool, channels=channels,
                                              dropblock_size=dropblock_size,
                                              dropblock_dropout=dropblock_dropout)


_FACTORIES: dict[str, Callable[..., nn.Module]] = {"cnn4": _cnn4, "resnet12": _resnet12}
BACKBONES: tuple[str, ...] = tuple(_FACTORIES)
"""The backbone names `build_backbone` knows."""


def build_backbone(name: str, channels: int = 3, **options: Any) -> nn.Module:
    """A backbone mapping images (N, channels, H, W) to flat features (N, d).

    Args:
        name: One of `BACKBONES`.
        channels: Input channels (3 for colour images, 1 for Omniglot).
        **options: ``hidden_size`` for ``"cnn4"``; ``avg_pool``, ``dropblock_size`` and
            ``dropblock_dropout`` for ``"resnet12"``.

    Returns:
        The learn2learn module; `feature_size` gives its d for an image size.

    Example:
        >>> backbone = build_backbone("cnn4", hidden_size=32)
        >>> feature_size(backbone, (3, 32, 32))
        128
    """
    if name not in _FACTORIES:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {name!r}")
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive int, got {channels!r}")
    try:
        return _FACTORIES[name](channels, **options)
    except TypeError as error:
        raise ValueError(f"unknown option for backbone {name!r}: {error}") from None


def feature_size(backbone: nn.Module, image_shape: tuple[int, int, int]) -> int:
    """Number of features ``backbone`` gives for one image of ``image_shape`` (C, H, W).

    Runs one zero image through an eval-mode forward without gradients, then restores the
    module's training flag.

    Example:
        >>> feature_size(build_backbone("resnet12"), (3, 84, 84))  # MetaOptNet's 16,000 features
        16000
    """
    parameter = next(backbone.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            features = backbone(torch.zeros(1, *image_shape, device=device))
    finally:
        backbone.train(was_training)
    return int(features.reshape(1, -1).shape[1])
