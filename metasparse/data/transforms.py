"""Image transforms of the few-shot benchmarks: MetaOptNet's normalisation and augmentation, Omniglot's.

MetaOptNet (Lee et al., CVPR 2019; ``kjunelee/MetaOptNet``, ``data/*.py``) normalises every split with a
per-dataset mean and std and, on the training split only, augments each image with a random crop with
zero padding (8 pixels at 84x84, 4 at 32x32), a colour jitter (brightness, contrast and saturation 0.4)
and a horizontal flip, in that order. The factories below build those steps as torchvision transforms on
float ``(C, H, W)`` tensors in [0, 1]; MetaOptNet applies them to PIL images, which differs only by the
uint8 rounding of the jittered image. The random steps draw from torch's global generator, so
``torch.manual_seed`` makes them repeatable.

torchvision is imported inside the factories: its import costs seconds.

Example:
    >>> import torch
    >>> augment = metaoptnet_augmentation(image_size=32, padding=4)
    >>> normalize = metaoptnet_normalization("cifarfs")
    >>> _ = torch.manual_seed(0)
    >>> normalize(augment(torch.rand(3, 32, 32))).shape
    torch.Size([3, 32, 32])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torchvision import transforms

__all__ = [
    "METAOPTNET_MEAN_STD",
    "invert",
    "metaoptnet_augmentation",
    "metaoptnet_normalization",
    "omniglot_preprocessing",
    "scale_to_unit",
]

_IMAGENET_MEAN_STD = (tuple(value / 255.0 for value in (120.39586422, 115.59361427, 104.54012653)),
                      tuple(value / 255.0 for value in (70.68188272, 68.27635443, 72.54505529)))
_CIFAR_MEAN_STD = (tuple(value / 255.0 for value in (129.37731888, 124.10583864, 112.47758569)),
                   tuple(value / 255.0 for value in (68.20947949, 65.43124043, 70.45866994)))
# (mean, std) per channel, for images in [0, 1], as in MetaOptNet's data/*.py.
METAOPTNET_MEAN_STD: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mini-imagenet": _IMAGENET_MEAN_STD,
    "tiered-imagenet": _IMAGENET_MEAN_STD,
    "cifarfs": _CIFAR_MEAN_STD,
    "fc100": _CIFAR_MEAN_STD,
}
_JITTER_STRENGTH = 0.4


def scale_to_unit(image: torch.Tensor) -> torch.Tensor:
    """A float image with values in [0, 255] (learn2learn's mini-ImageNet items) scaled to [0, 1].

    Example:
        >>> scale_to_unit(torch.full((1, 2, 2), 255.0)).tolist()
        [[[1.0, 1.0], [1.0, 1.0]]]
    """
    return image / 255.0


def invert(image: torch.Tensor) -> torch.Tensor:
    """``1 - image``: Omniglot's black strokes on white become 1 on a background of 0.

    Example:
        >>> invert(torch.tensor([0.0, 1.0])).tolist()
        [1.0, 0.0]
    """
    return 1.0 - image


def metaoptnet_normalization(name: str) -> transforms.Normalize:
    """MetaOptNet's per-channel normalisation of benchmark ``name`` (a key of `METAOPTNET_MEAN_STD`).

    Args:
        name: ``"mini-imagenet"``, ``"tiered-imagenet"`` (ImageNet statistics), ``"cifarfs"`` or
            ``"fc100"`` (CIFAR-100 statistics).

    Returns:
        A ``torchvision.transforms.Normalize`` for float (C, H, W) images in [0, 1].

    Example:
        >>> metaoptnet_normalization("mini-imagenet")(torch.zeros(3, 1, 1)).flatten().tolist()
        [-1.7033..., -1.6930..., -1.4410...]
    """
    if name not in METAOPTNET_MEAN_STD:
        raise ValueError(f"name must be one of {tuple(METAOPTNET_MEAN_STD)}, got {name!r}")
    from torchvision import transforms

    mean, std = METAOPTNET_MEAN_STD[name]
    return transforms.Normalize(mean=list(mean), std=list(std))


def metaoptnet_augmentation(image_size: int, padding: int) -> transforms.Compose:
    """MetaOptNet's training augmentation: random crop with zero padding, colour jitter, horizontal flip.

    Args:
        image_size: Side of the (square) images, which the crop keeps.
        padding: Zero padding on each side before the crop (MetaOptNet: 8 at 84x84, 4 at 32x32).

    Returns:
        A ``torchvision.transforms.Compose`` of ``RandomCrop(image_size, padding)``,
        ``ColorJitter(0.4, 0.4, 0.4)`` and ``RandomHorizontalFlip()`` for float (3, H, W) images in [0, 1].

    Example:
        >>> [type(step).__name__ for step in metaoptnet_augmentation(84, 8).transforms]
        ['RandomCrop', 'ColorJitter', 'RandomHorizontalFlip']
    """
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be a non-negative int, got {padding!r}")
    from torchvision import transforms

    return transforms.Compose([
        transforms.RandomCrop(image_size, padding=padding),
        transforms.ColorJitter(brightness=_JITTER_STRENGTH, contrast=_JITTER_STRENGTH,
                               saturation=_JITTER_STRENGTH),
        transforms.RandomHorizontalFlip(),
    ])


def omniglot_preprocessing(image_size: int = 28) -> transforms.Compose:
    """Omniglot's usual preprocessing: a 105x105 grayscale PIL image to a float (1, s, s) tensor, strokes 1.

    Lanczos resizing, then ``ToTensor`` and `invert`, as learn2learn's Omniglot benchmark does.

    Args:
        image_size: Side ``s`` of the output (28 in the usual benchmark).

    Returns:
        A ``torchvision.transforms.Compose`` taking a PIL image.

    Example:
        >>> from PIL import Image
        >>> omniglot_preprocessing()(Image.new("L", (105, 105), color=255)).shape
        torch.Size([1, 28, 28])
    """
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    from torchvision import transforms

    return transforms.Compose([
        transforms.Resize((image_size, image_size), interpolation=transforms.InterpolationMode.LANCZOS),
        transforms.ToTensor(),
        invert,
    ])
