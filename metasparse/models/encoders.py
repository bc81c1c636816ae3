"""The paper's 3D Shapes encoder: four convolutions, two linear layers, batch norm without affine parameters.

The architecture of the paper's code (``sparsemeta/conv.py``, Haiku defaults: SAME padding, biases):

    Conv(32, 4x4, stride 2) - ReLU - Conv(32, 4x4, s2) - ReLU - Conv(64, 2x2, s2) - ReLU - Conv(64, 2x2, s2)
    - ReLU - flatten (4 * 4 * 64 = 1024 for 64x64 images) - Linear(256) - ReLU - Linear(z_dim)
    - BatchNorm(momentum 0.1, i.e. Haiku's decay 0.9; no scale, no offset)

The output normalisation standardises every coordinate, so the inner lasso's l1 penalty cannot be
evaded by shrinking the representation. The paper vmaps the model over tasks, so in training the batch
statistics are those of each task's samples: `TaskBatchNorm` does the same for (B, n, z) inputs, and
keeps running statistics (the mean over tasks of each task's statistics) for evaluation.

Example:
    >>> encoder = Shapes3DEncoder(z_dim=6)
    >>> encoder(torch.rand(2, 50, 3, 64, 64)).shape       # two tasks of 50 images
    torch.Size([2, 50, 6])
    >>> encoder.eval()(torch.rand(5, 3, 64, 64)).shape    # images without a task axis
    torch.Size([5, 6])
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Shapes3DEncoder", "TaskBatchNorm"]


class TaskBatchNorm(nn.Module):
    """Batch norm without affine parameters whose training statistics are taken per task.

    Inputs (N, d) are one group; (B, n, d) are B groups of n (tasks), each standardised with its own
    mean and biased variance in training. Evaluation uses running statistics, updated in training with
    the mean over groups of the group statistics (the unbiased variance, as ``nn.BatchNorm1d``).

    Args:
        num_features: d.
        momentum: Weight of the new statistics in the running ones.
        eps: Added to the variance.

    Example:
        >>> norm = TaskBatchNorm(3)
        >>> out = norm(torch.randn(4, 10, 3) * 5 + 2)
        >>> bool(out.mean(1).abs().max() < 1e-5), bool((out.std(1, unbiased=False) - 1).abs().max() < 1e-3)
        (True, True)
    """

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum, self.eps = float(momentum), float(eps)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        grouped = features if features.ndim == 3 else features.unsqueeze(0)
        if self.training:
            mean = grouped.mean(dim=1, keepdim=True)
            var = grouped.var(dim=1, unbiased=False, keepdim=True)
            with torch.no_grad():
                n = grouped.shape[1]
                unbiased = var.mean(dim=(0, 1)) * (n / max(n - 1, 1))
                self.running_mean.lerp_(mean.mean(dim=(0, 1)), self.momentum)
                self.running_var.lerp_(unbiased, self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        normalised = (grouped - mean) / torch.sqrt(var + self.eps)
        return normalised if features.ndim == 3 else normalised.squeeze(0)


class Shapes3DEncoder(nn.Module):
    """The paper's 3D Shapes encoder (see the module docstring).

    Args:
        z_dim: Representation size (the paper: 6, the number of true factors).
        image_size: Input height and width (divisible by 16).
        channels: Input channels.
        normalise: End with `TaskBatchNorm` (the paper's ``--rep_norm batch_norm``).

    Inputs are float images (..., C, H, W) in [0, 1]: (N, C, H, W) gives (N, z_dim); (B, n, C, H, W)
    gives (B, n, z_dim) with per-task normalisation statistics in training.

    Example:
        >>> Shapes3DEncoder().conv[0]
        Conv2d(3, 32, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1))
    """

    def __init__(self, z_dim: int = 6, image_size: int = 64, channels: int = 3,
                 normalise: bool = True) -> None:
        super().__init__()
        for name, value in (("z_dim", z_dim), ("channels", channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(image_size, int) or image_size < 16 or image_size % 16:
            raise ValueError(f"image_size must be a positive multiple of 16, got {image_size!r}")
        self.z_dim = z_dim
        # SAME padding: 4x4 stride-2 kernels pad one pixel on each side, 2x2 stride-2 ones none.
        self.conv = nn.Sequential(
            nn.Conv2d(channels, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 2, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 2, stride=2), nn.ReLU(),
            nn.Flatten())
        flat = 64 * (image_size // 16) ** 2
        self.mlp = nn.Sequential(nn.Linear(flat, 256), nn.ReLU(), nn.Linear(256, z_dim))
        self.norm = TaskBatchNorm(z_dim) if normalise else nn.Identity()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim not in (4, 5):
            raise ValueError("images must have shape (N, C, H, W) or (B, n, C, H, W), "
                             f"got {tuple(images.shape)}")
        leading = images.shape[:-3]
        features = self.mlp(self.conv(images.reshape(-1, *images.shape[-3:])))
        return self.norm(features.reshape(*leading, self.z_dim))
