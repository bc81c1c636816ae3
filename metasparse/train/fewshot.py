"""Episodic meta-training and evaluation of a backbone with any head, MetaOptNet's recipe by default.

Defaults follow MetaOptNet (Lee et al., 2019) and the paper's fork of it: SGD with Nesterov momentum 0.9,
lr 0.1 multiplied by 0.06, 0.012 and 0.0024 after 1/3, 2/3 and 5/6 of the steps (its epochs 20, 40 and
50 of 60), weight decay 5e-4, MetaOptNet's label smoothing 0.1, 8 episodes per batch of 5-way 15-shot
with 6 queries per class, validation on fixed 5-way 5-shot episodes with 15 queries. As in MetaOptNet,
support and query images go through the backbone in two batches and the head sees their features.

Example:
    >>> config = FewShotConfig(steps=20, validate_every=10, val_episodes=16)     # doctest: +SKIP
    >>> trainer = FewShotTrainer(config)                                         # doctest: +SKIP
    >>> run_training(trainer, config.to_dict(), config.run_options("runs/cnn4")) # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metasparse.heads import GroupLassoSVMHead, ProtoNetHead, RidgeHead, SVMHead
from metasparse.heads.base import EpisodicHead
from metasparse.metrics.fewshot import episode_accuracy
from metasparse.models import BACKBONES, build_backbone, feature_size
from metasparse.tasks import Episode, EpisodeSampler, classification_taskset, seed_everything
from metasparse.train.config import config_from_dict, option
from metasparse.train.distributed import (
    all_reduce_gradients,
    all_reduce_mean,
    init_distributed,
    rank_and_world_size,
    shard,
    sync_batch_norm,
)
from metasparse.train.run import RunOptions, resolve_device

__all__ = ["HEADS", "FewShotConfig", "FewShotTrainer", "evaluate_checkpoint", "evaluate_episodes",
           "make_head", "smoothed_cross_entropy", "train_and_evaluate"]

HEADS = ("group-lasso", "svm", "ridge", "protonet")
"""Head names of `FewShotConfig.head`."""


@dataclass(frozen=True)
class FewShotConfig:
    """Everything a few-shot run depends on; saved as the run's ``config.json``.

    Example:
        >>> config = FewShotConfig(head="svm", steps=100)
        >>> config.lr_multiplier(0), config.lr_multiplier(50), config.to_dict()["lr_milestones"][0]
        (1.0, 0.06, 0.333...)
    """

    dataset: str = option("shapes3d-fs", "few-shot benchmark (see metasparse.data.BENCHMARKS)")
    data_root: str | None = option(None, "folder holding the benchmark's files (not needed for shapes3d-fs)")
    download: bool = option(False, "let learn2learn download a missing benchmark into --data-root")
    image_size: int | None = option(None, "resize images to this size (None: the dataset's own)")
    class_factors: tuple[str, ...] | None = option(None, "shapes3d-fs: the factors whose combination is a "
                                                   "class (None: shape object_hue scale)")
    augment: bool = option(True, "MetaOptNet's augmentation of training images (its four natural-image "
                           "benchmarks only)")
    backbone: str = option("cnn4", "backbone", BACKBONES)
    hidden_size: int = option(64, "cnn4 channels per layer")
    dropblock_size: int = option(5, "resnet12 DropBlock size (MetaOptNet: 5, 2 for 32x32 images)")
    head: str = option("group-lasso", "episodic head", HEADS)
    lambda1_ratio: float = option(0.1, "group-lasso head: lambda1 as a fraction of the episode's lambda1_max")
    lambda2: float = option(10.0, "ridge weight of the group-lasso and SVM heads (SVM: C = 1 / lambda2)")
    dual_reg: float = option(1.0, "smoothing of the hinge (MetaOptNet's +1.0 * I)")
    ridge_lambda: float = option(50.0, "ridge head regularisation (MetaOptNet-RR: 50)")
    head_tol: float = option(1e-4, "native solver tolerance (relative duality gap)")
    head_max_iter: int = option(1000, "native solver iteration cap")
    n_way: int = option(5, "classes per episode")
    train_shot: int = option(15, "support examples per class in training")
    train_query: int = option(6, "query examples per class in training")
    episodes_per_batch: int = option(8, "episodes per optimisation step (the global batch)")
    val_shot: int = option(5, "support examples per class in validation")
    val_query: int = option(15, "query examples per class in validation")
    val_episodes: int = option(2000, "fixed validation episodes")
    steps: int = option(60000, "optimisation steps (MetaOptNet: 60 epochs of 1000)")
    validate_every: int = option(1000, "validate and checkpoint every this many steps")
    lr: float = option(0.1, "initial learning rate")
    lr_milestones: tuple[float, ...] = option((1 / 3, 2 / 3, 5 / 6), "fractions of the steps where lr drops")
    lr_factors: tuple[float, ...] = option((0.06, 0.012, 0.0024), "lr multipliers from each milestone on")
    momentum: float = option(0.9, "SGD Nesterov momentum")
    weight_decay: float = option(5e-4, "SGD weight decay")
    label_smoothing: float = option(0.1, "MetaOptNet's label smoothing epsilon")
    seed: int = option(0, "seed of the model, the episodes and everything else")
    device: str = option("auto", "cpu, cuda, cuda:N or auto (cuda when available)")
    amp: bool = option(True, "bfloat16 autocast of the backbone on CUDA (ignored on CPU)")

    def __post_init__(self) -> None:
        positive = ("n_way", "train_shot", "train_query", "episodes_per_batch", "val_shot", "val_query",
                    "val_episodes", "steps", "validate_every", "head_max_iter", "hidden_size",
                    "dropblock_size")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("lambda2", "dual_reg", "ridge_lambda", "head_tol", "lr"):
            if not (isinstance(getattr(self, name), (int, float)) and 0 < getattr(self, name) < math.inf):
                raise ValueError(f"{name} must be a finite number > 0, got {getattr(self, name)!r}")
        if not 0 < self.lambda1_ratio < 1:
            raise ValueError(f"lambda1_ratio must be in (0, 1), got {self.lambda1_ratio!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        milestones = list(self.lr_milestones)
        if len(milestones) != len(self.lr_factors) or milestones != sorted(milestones):
            raise ValueError(f"lr_milestones must be increasing and as many as lr_factors, got "
                             f"{self.lr_milestones} and {self.lr_factors}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready values (tuples become lists)."""
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self).items()}

    def run_options(self, out_dir: str | Path, resume: bool = False, progress: bool = True) -> RunOptions:
        """`RunOptions` of this config: best checkpoint by validation accuracy."""
        return RunOptions(Path(out_dir), self.steps, self.validate_every, best_metric="accuracy",
                          best_mode="max", resume=resume, progress=progress,
                          progress_keys=("loss", "accuracy", "features_used"))

    def lr_multiplier(self, step: int) -> float:
        """The learning-rate multiplier of step ``step`` (MetaOptNet's step schedule)."""
        factor = 1.0
        for milestone, milestone_factor in zip(self.lr_milestones, self.lr_factors, strict=True):
            if step >= milestone * self.steps:
                factor = milestone_factor
        return factor


def make_head(config: FewShotConfig) -> EpisodicHead:
    """The head ``config.head`` with the config's regularisation and solver settings.

    Example:
        >>> make_head(FewShotConfig(head="ridge"))
        RidgeHead(lam=50.0)
    """
    if config.head == "group-lasso":
        return GroupLassoSVMHead(lambda1_ratio=config.lambda1_ratio, lambda2=config.lambda2,
                                 dual_reg=config.dual_reg, max_iter=config.head_max_iter, tol=config.head_tol)
    if config.head == "svm":
        return SVMHead(C=1.0 / config.lambda2, dual_reg=config.dual_reg, max_iter=config.head_max_iter,
                       tol=config.head_tol)
    if config.head == "ridge":
        return RidgeHead(lam=config.ridge_lambda)
    return ProtoNetHead()


def smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, epsilon: float) -> torch.Tensor:
    """MetaOptNet's label-smoothed cross-entropy: the true class gets ``1 - epsilon``, each other class
    ``epsilon / (n_way - 1)`` (torch's ``label_smoothing`` gives every class ``epsilon / n_way``).

    Args:
        logits: (..., n_way).
        labels: (...) int64.
        epsilon: Smoothing in [0, 1).

    Returns:
        The mean loss.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0, 0.0]])
        >>> bool(torch.isclose(smoothed_cross_entropy(logits, torch.tensor([0]), 0.0),
        ...                    F.cross_entropy(logits, torch.tensor([0]))))
        True
    """
    n_way = logits.shape[-1]
    onehot = F.one_hot(labels, n_way).to(logits.dtype)
    target = onehot * (1 - epsilon) + (1 - onehot) * (epsilon / max(n_way - 1, 1))
    return -(target * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def _embed(backbone: nn.Module, images: torch.Tensor, amp: bool) -> torch.Tensor:
    """(B, n, C, H, W) images -> (B, n, d) float32 features."""
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp):
        features = backbone(images.flatten(0, 1))
    return features.float().reshape(*images.shape[:2], -1)


def _features_used(head: EpisodicHead) -> torch.Tensor:
    return 1.0 - head.last_info.sparsity.detach().float()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate_episodes(backbone: nn.Module, head: EpisodicHead, sampler: EpisodeSampler, episodes: int,
                      device: torch.device, amp: bool = False) -> dict[str, float]:
    """Accuracy (percent, mean +- 95% CI), loss and features used over ``episodes`` fixed episodes.

    Episode ``i`` is ``sampler.batch(0, [i])``'s, so every call (and every rank split) scores the same
    episodes. In a distributed run each rank scores every ``world``-th episode and the sums are reduced.

    Returns:
        ``{"accuracy", "ci95", "loss", "features_used", "episodes", "seconds"}``; ``features_used`` is
        the mean fraction of features each task's weights use (1 for dense heads).

    Example:
        >>> sampler = EpisodeSampler(taskset, batch_size=8, n_way=5, n_shot=5, seed=1)   # doctest: +SKIP
        >>> scores = evaluate_episodes(backbone, head, sampler, 1000, torch.device("cpu"))  # doctest: +SKIP
    """
    rank, world = rank_and_world_size()
    was_training = backbone.training
    backbone.eval()
    start = time.perf_counter()
    sums = torch.zeros(5, dtype=torch.float64)
    try:
        mine = list(range(rank, episodes, world))
        for first in range(0, len(mine), sampler.batch_size):
            batch = _to_device(sampler.batch(0, mine[first:first + sampler.batch_size]), device)
            with torch.no_grad():
                support = _embed(backbone, batch.support, amp)
                query = _embed(backbone, batch.query, amp)
                logits = head(query, support, batch.support_labels, sampler.n_way)
                accuracy = 100.0 * episode_accuracy(logits, batch.query_labels).double().cpu()
                losses = F.cross_entropy(logits.flatten(0, 1), batch.query_labels.flatten(), reduction="none")
                losses = losses.reshape(batch.query_labels.shape).mean(-1).double().cpu()
            sums += torch.stack([accuracy.sum(), (accuracy**2).sum(), losses.sum(),
                                 _features_used(head).double().cpu().sum(),
                                 torch.tensor(float(len(accuracy)), dtype=torch.float64)])
    finally:
        backbone.train(was_training)
    if world > 1:
        import torch.distributed as dist

        reduced = sums.to(device)
        dist.all_reduce(reduced)
        sums = reduced.cpu()
    total, count = sums, float(sums[4])
    mean = float(total[0] / count)
    std = math.sqrt(max(float(total[1] / count) - mean**2, 0.0))
    return {"accuracy": mean, "ci95": 1.96 * std / math.sqrt(count), "loss": float(total[2] / count),
            "features_used": float(total[3] / count), "episodes": int(count),
            "seconds": time.perf_counter() - start}


def _to_device(episode: Episode, device: torch.device) -> Episode:
    return Episode(*(part.to(device, non_blocking=True) for part in episode))


class FewShotTrainer:
    """Meta-trains ``backbone`` + ``head`` on episodes of ``config.dataset``; a `metasparse.train.Trainer`.

    Builds the datasets, tasksets, samplers, backbone, head, optimiser and schedule from ``config``.
    Under ``torchrun`` each rank takes its contiguous share of every global batch of episodes,
    gradients are averaged and batch-norm statistics are those of the global batch, so the steps equal
    a single process's up to floating point.

    Args:
        config: The run's settings.

    Attributes:
        backbone, head: The models.
        feature_dim: Features per image.
        device: Where the models run.

    Example:
        >>> trainer = FewShotTrainer(FewShotConfig(image_size=32, hidden_size=32))  # doctest: +SKIP
        >>> trainer.feature_dim, trainer.train_step(0)["loss"]                       # doctest: +SKIP
    """

    def __init__(self, config: FewShotConfig) -> None:
        from metasparse.data import benchmark_dataset, benchmark_info

        self.config = config
        self.device = init_distributed(resolve_device(config.device))
        distributed = rank_and_world_size()[1] > 1
        seed_everything(config.seed)
        common = {"data_root": config.data_root, "download": config.download, "image_size": config.image_size,
                  "class_factors": config.class_factors}
        augment = config.augment and benchmark_info(config.dataset).augmentable
        train_set = benchmark_dataset(config.dataset, "train", augment=augment, **common)
        val_set = benchmark_dataset(config.dataset, "validation", **common)
        self.train_sampler = EpisodeSampler(
            _taskset(train_set, config.n_way, config.train_shot, config.train_query),
            config.episodes_per_batch, config.n_way, config.train_shot, seed=config.seed)
        self.val_sampler = EpisodeSampler(
            _taskset(val_set, config.n_way, config.val_shot, config.val_query),
            config.episodes_per_batch, config.n_way, config.val_shot, seed=config.seed + 1)
        backbone = _backbone(config)
        self.feature_dim = feature_size(backbone, _image_shape(config))
        backbone = backbone.to(self.device)
        self.backbone = sync_batch_norm(backbone, self.device) if distributed else backbone
        self.head = make_head(config).to(self.device)
        self.amp = config.amp and self.device.type == "cuda"
        parameters = [*self.backbone.parameters(), *self.head.parameters()]
        self.optimizer = torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, nesterov=True,
                                         weight_decay=config.weight_decay)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, config.lr_multiplier)

    def train_step(self, step: int) -> dict[str, float]:
        """One SGD step on this rank's share of global batch ``step``; metrics are global means."""
        config, device = self.config, self.device
        self.backbone.train()
        self.optimizer.zero_grad(set_to_none=True)
        started = time.perf_counter()
        batch = _to_device(self.train_sampler.batch(step, shard(config.episodes_per_batch)), device)
        _synchronize(device)
        loaded = time.perf_counter()
        support = _embed(self.backbone, batch.support, self.amp)
        query = _embed(self.backbone, batch.query, self.amp)
        _synchronize(device)
        embedded = time.perf_counter()
        logits = self.head(query, support, batch.support_labels, config.n_way)
        loss = smoothed_cross_entropy(logits.flatten(0, 1), batch.query_labels.flatten(),
                                      config.label_smoothing)
        head_parameters = [p for p in self.head.parameters() if p.requires_grad]
        inputs = [support, query, *head_parameters]
        grads = torch.autograd.grad(loss, inputs)
        for parameter, grad in zip(head_parameters, grads[2:], strict=True):
            parameter.grad = grad
        _synchronize(device)
        head_done = time.perf_counter()
        torch.autograd.backward([support, query], grads[:2])
        all_reduce_gradients([*self.backbone.parameters(), *head_parameters])
        self.optimizer.step()
        self.schedule.step()
        _synchronize(device)
        finished = time.perf_counter()
        with torch.no_grad():
            local = torch.stack([loss.detach().double(),
                                 episode_accuracy(logits.detach(), batch.query_labels).double().mean() * 100,
                                 _features_used(self.head).double().mean()]).cpu()
        values = all_reduce_mean(local).tolist()
        return {"loss": values[0], "accuracy": values[1], "features_used": values[2],
                "lr": self.schedule.get_last_lr()[0], "time_data": loaded - started,
                "time_backbone": (embedded - loaded) + (finished - head_done),
                "time_head": head_done - embedded, "time_step": finished - started}

    def validate(self) -> dict[str, float]:
        """Accuracy +- CI, loss and features used on the fixed validation episodes."""
        return evaluate_episodes(self.backbone, self.head, self.val_sampler, self.config.val_episodes,
                                 self.device, self.amp)

    def state_dict(self) -> dict[str, Any]:
        """Backbone, head, optimiser, schedule and sampler states."""
        return {"backbone": self.backbone.state_dict(), "head": self.head.state_dict(),
                "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "sampler": self.train_sampler.state_dict(), "forward_counts": _forward_counts(self.backbone)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.backbone.load_state_dict(state["backbone"])
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.train_sampler.load_state_dict(state["sampler"])
        modules = dict(self.backbone.named_modules())
        for name, count in state["forward_counts"].items():
            modules[name].num_batches_tracked = count


def _forward_counts(module: nn.Module) -> dict[str, int]:
    """The forward-pass counters that learn2learn's ResNet-12 blocks keep in a plain ``int`` attribute
    (their DropBlock rate ramps up with it): ``state_dict`` misses them, and an exact resume needs them."""
    return {name: child.num_batches_tracked for name, child in module.named_modules()
            if type(getattr(child, "num_batches_tracked", None)) is int}


def _image_shape(config: FewShotConfig) -> tuple[int, int, int]:
    from metasparse.data import image_shape

    return image_shape(config.dataset, config.image_size)


def _backbone(config: FewShotConfig) -> nn.Module:
    options = ({"hidden_size": config.hidden_size} if config.backbone == "cnn4"
               else {"dropblock_size": config.dropblock_size})
    return build_backbone(config.backbone, channels=_image_shape(config)[0], **options)


def _taskset(dataset: Any, n_way: int, n_shot: int, n_query: int) -> Any:
    return classification_taskset(dataset, n_way, n_shot, n_query,
                                  labels_to_indices=getattr(dataset, "labels_to_indices", None))


def evaluate_checkpoint(checkpoint: str | Path, shots: tuple[int, ...] = (1, 5), episodes: int = 1000,
                        n_query: int = 15, split: str = "test", seed: int = 0, device: str | None = None,
                        data_root: str | None = None) -> dict[str, dict[str, float]]:
    """Score a trained run on fixed ``split`` episodes, as MetaOptNet's ``test.py`` does.

    Args:
        checkpoint: A run directory (its ``best.pt``) or a checkpoint file.
        shots: Support examples per class; one evaluation each.
        episodes: Episodes per evaluation (MetaOptNet: 1000).
        n_query: Queries per class (MetaOptNet: 15).
        split: ``"test"`` or ``"validation"``.
        seed: Seed of the evaluation episodes (the same seed gives the same episodes).
        device: Overrides the run's device.
        data_root: Overrides the run's data root.

    Returns:
        ``{"<n>-shot": {"accuracy", "ci95", "loss", "features_used", "episodes", "seconds"}}``, accuracy in
        percent over ``config.n_way``-way episodes.

    Example:
        >>> results = evaluate_checkpoint("runs/gl", shots=(1, 5), episodes=1000)  # doctest: +SKIP
        >>> results["5-shot"]["accuracy"], results["5-shot"]["ci95"]             # doctest: +SKIP
    """
    from metasparse.data import benchmark_dataset
    from metasparse.train.run import load_checkpoint

    saved = load_checkpoint(checkpoint)
    values = dict(saved["config"])
    values.update({key: value for key, value in (("device", device), ("data_root", data_root))
                   if value is not None})
    config = config_from_dict(FewShotConfig, values)
    target = resolve_device(config.device)
    dataset = benchmark_dataset(config.dataset, split, data_root=config.data_root, download=False,
                                image_size=config.image_size, class_factors=config.class_factors)
    backbone = _backbone(config)
    backbone.load_state_dict(saved["trainer"]["backbone"])
    head = make_head(config)
    head.load_state_dict(saved["trainer"]["head"])
    backbone, head = backbone.to(target), head.to(target)
    results = {}
    for n_shot in shots:
        sampler = EpisodeSampler(_taskset(dataset, config.n_way, n_shot, n_query), config.episodes_per_batch,
                                 config.n_way, n_shot, seed=seed)
        results[f"{n_shot}-shot"] = evaluate_episodes(backbone, head, sampler, episodes, target,
                                                      config.amp and target.type == "cuda")
    return results


def train_and_evaluate(config: FewShotConfig, run_dir: str | Path, shots: tuple[int, ...] = (1, 5),
                       episodes: int = 1000, n_query: int = 15, progress: bool = True) -> dict[str, Any]:
    """Train ``config`` in ``run_dir`` (resuming what is there) and evaluate its best checkpoint on test
    episodes; a finished run is not trained again and a finished evaluation is read back.

    Returns:
        ``{"summary": run summary, "evaluation": evaluate_checkpoint's result, "train_seconds",
        "eval_seconds", "step_times": mean seconds per step of data, backbone and head}``. The times are
        this call's (0 for work read back) except ``step_times``, from the run's log.

    Example:
        >>> result = train_and_evaluate(FewShotConfig(steps=300), "runs/gl")  # doctest: +SKIP
        >>> result["evaluation"]["1-shot"]["accuracy"], result["step_times"]  # doctest: +SKIP
    """
    import json

    from metasparse.atomic import write_atomically
    from metasparse.train.run import read_metrics, run_training

    run_dir = Path(run_dir)
    started = time.perf_counter()
    summary = run_training(FewShotTrainer(config), config.to_dict(),
                           config.run_options(run_dir, resume=True, progress=progress))
    trained = time.perf_counter()
    settings = {"shots": list(shots), "episodes": episodes, "n_query": n_query, "split": "test"}
    cache = run_dir / "evaluation-test.json"
    saved = json.loads(cache.read_text()) if cache.is_file() else {}
    if saved.get("settings") == settings and saved.get("step") == summary["best"]["step"]:
        evaluation = saved["results"]
    else:
        evaluation = evaluate_checkpoint(run_dir, shots=shots, episodes=episodes, n_query=n_query)
        record = {"settings": settings, "step": summary["best"]["step"], "results": evaluation}
        write_atomically(cache, lambda tmp: tmp.write_text(json.dumps(record, indent=2) + "\n"))
    train_records = [r for r in read_metrics(run_dir) if r["split"] == "train"][1:]  # the first warms up
    step_times = {key: sum(r[f"time_{key}"] for r in train_records) / max(len(train_records), 1)
                  for key in ("data", "backbone", "head", "step")}
    return {"summary": summary, "evaluation": evaluation, "train_seconds": trained - started,
            "eval_seconds": time.perf_counter() - trained, "step_times": step_times}
