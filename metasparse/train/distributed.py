"""Data parallelism through ``torch.distributed``, launched with ``torchrun`` (gloo on CPU, nccl on GPU).

Each rank computes the loss of its share of the global batch of episodes; `all_reduce_gradients`
averages the gradients, so every rank takes the same step as one process on the whole batch. Batch-norm
statistics are reduced across ranks too (`sync_batch_norm`): with per-rank statistics the features, and
so every head's solution, would depend on how the batch is split.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["CrossRankBatchNorm2d", "all_reduce_gradients", "all_reduce_mean", "init_distributed",
           "rank_and_world_size", "shard", "sync_batch_norm"]


def rank_and_world_size() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` when ``torch.distributed`` is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: torch.device) -> torch.device:
    """Join the process group that ``torchrun`` describes in the environment, if it describes one.

    Args:
        device: The kind of device to train on: gloo is used for the CPU, nccl for CUDA.

    Returns:
        This rank's device: ``cuda:LOCAL_RANK`` for a CUDA rank of a ``torchrun`` job, else ``device``.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda" and dist.is_initialized():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device


def shard(count: int) -> range:
    """This rank's contiguous share of ``count`` items (e.g. the episodes of a global batch).

    Raises:
        ValueError: If ``count`` does not split evenly: ranks must average equal-sized shares for the
            step to equal one process's.

    Example:
        >>> shard(8)  # a single process gets everything
        range(0, 8)
    """
    rank, world = rank_and_world_size()
    if count % world:
        raise ValueError(f"the batch of {count} episodes does not split evenly over {world} ranks")
    size = count // world
    return range(rank * size, (rank + 1) * size)


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over ranks (``values`` itself in a single process)."""
    _, world = rank_and_world_size()
    if world == 1:
        return values
    reduced = values.detach().clone()
    dist.all_reduce(reduced)
    return reduced / world


def all_reduce_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Average the gradients of ``parameters`` over ranks, in one flat all-reduce."""
    _, world = rank_and_world_size()
    grads = [p.grad for p in parameters if p.grad is not None]
    if world == 1 or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        offset += grad.numel()


class CrossRankBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics are those of the whole global batch, on any device.

    torch's ``SyncBatchNorm`` refuses CPU tensors; this reduces per-channel sums and sums of squares
    (in float64, with a differentiable all-reduce) over the ranks, so two CPU processes normalise exactly
    as one process on the concatenated batch. Outside training or in a single process it is plain
    ``BatchNorm2d``.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        _, world = rank_and_world_size()
        if not self.training or world == 1:
            return super().forward(input)
        from torch.distributed.nn.functional import all_reduce

        channels = input.shape[1]
        local = input.to(torch.float64)
        count = torch.tensor([input.numel() / channels], dtype=torch.float64, device=input.device)
        sums = all_reduce(torch.cat([local.sum((0, 2, 3)), (local * local).sum((0, 2, 3)), count]))
        total = sums[-1]
        mean = sums[:channels] / total
        var = sums[channels:2 * channels] / total - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                tracked = float(self.num_batches_tracked)
                momentum = self.momentum if self.momentum is not None else 1.0 / tracked
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_((var * total / (total - 1)).to(self.running_var.dtype), momentum)
        shape = (1, channels, 1, 1)
        normalised = (local - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        output = normalised.to(input.dtype)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        return output


def sync_batch_norm(module: nn.Module, device: torch.device) -> nn.Module:
    """Make every ``BatchNorm2d`` of ``module`` use global-batch statistics when training distributed.

    CUDA: torch's ``SyncBatchNorm``; CPU: `CrossRankBatchNorm2d`. Parameters and buffers are kept.
    Returns ``module`` (changed in place where possible).
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            replacement = CrossRankBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                               child.track_running_stats)
            replacement.load_state_dict(child.state_dict())
            setattr(module, name, replacement.to(device))
        else:
            sync_batch_norm(child, device)
    return module
