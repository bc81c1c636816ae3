"""Random episodes of backbone-like features, for tests and benchmarks of the heads."""

from __future__ import annotations

import torch

__all__ = ["random_episodes"]


def random_episodes(batch: int, n_way: int, n_shot: int, n_query: int, dim: int, seed: int = 0,
                    dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    """Episodes of non-negative, backbone-like features: ReLU(class mean + noise), for tests and benchmarks.

    Each episode has its own class means (standard normal); every feature is a ReLU of its class mean plus
    standard normal noise, as after a backbone's last ReLU.

    Returns:
        ``(support (B, n_way*n_shot, dim), support_labels, query (B, n_way*n_query, dim), query_labels)``.

    Example:
        >>> support, labels, query, query_labels = random_episodes(8, 5, 1, 15, 64)
        >>> support.shape, labels.shape, query.shape, bool((support >= 0).all())
        (torch.Size([8, 5, 64]), torch.Size([8, 5]), torch.Size([8, 75, 64]), True)
    """
    generator = torch.Generator().manual_seed(seed)
    means = torch.randn(batch, n_way, dim, generator=generator, dtype=dtype)

    def draw(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(n_way).repeat(per_class).expand(batch, -1)
        noise = torch.randn(batch, n_way * per_class, dim, generator=generator, dtype=dtype)
        return torch.relu(means.gather(1, labels[..., None].expand(-1, -1, dim)) + noise), labels

    return (*draw(n_shot), *draw(n_query))
