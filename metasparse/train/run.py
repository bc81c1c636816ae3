"""The run machinery both trainers share: config, checkpoints with RNG states, exact resume, log, progress.

A run lives in one directory:

* ``config.json``: the full configuration, written before the first step;
* ``metrics.jsonl``: one JSON record per training step (``"split": "train"``) and per validation
  (``"split": "validation"``), each with its ``step`` (the number of steps done);
* ``last.pt`` and ``best.pt``: checkpoints written atomically at every validation: the trainer's
  `Trainer.state_dict` (model, optimiser, schedule, sampler), every rank's random-generator state, the
  step and the best validation record so far;
* ``summary.json``: the best and last validation records, written when the run ends.

A run killed at any point and started again with ``resume=True`` reloads ``last.pt``, drops the log
records after it, and redoes the steps since: with the generators restored, it ends exactly where the
uninterrupted run ends. In a ``torchrun`` job only rank 0 writes and shows progress.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from metasparse.atomic import write_atomically
from metasparse.tasks.seeding import rng_state, set_rng_state
from metasparse.train.distributed import rank_and_world_size

__all__ = ["CHECKPOINT_FILES", "RunOptions", "Trainer", "load_checkpoint", "read_metrics", "resolve_device",
           "run_training"]

CONFIG_FILE, METRICS_FILE, SUMMARY_FILE = "config.json", "metrics.jsonl", "summary.json"
CHECKPOINT_FILES = {"last": "last.pt", "best": "best.pt"}
_FORMAT = 1


class Trainer(Protocol):
    """What `run_training` drives: one optimisation step at a time, validation, and a state to save.

    Example:
        See `metasparse.train.FewShotTrainer` and `metasparse.train.BilevelTrainer`; any object with
        these four methods works:

        >>> class Counter:
        ...     def __init__(self): self.count = 0
        ...     def train_step(self, step): self.count += 1; return {"loss": 1.0 / self.count}
        ...     def validate(self): return {"loss": 1.0 / self.count}
        ...     def state_dict(self): return {"count": self.count}
        ...     def load_state_dict(self, state): self.count = state["count"]
    """

    def train_step(self, step: int) -> Mapping[str, float]:
        """Take optimisation step ``step`` (0-based); return its metrics, e.g. ``{"loss": ...}``."""

    def validate(self) -> Mapping[str, float]:
        """Metrics on the fixed validation tasks (the same on every rank)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue: model, optimiser, schedule, sampler."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""


@dataclass(frozen=True)
class RunOptions:
    """How `run_training` runs a trainer.

    Attributes:
        out_dir: The run directory.
        steps: Total optimisation steps.
        validate_every: Validate and checkpoint every this many steps (and after the last one).
        best_metric: Key of the validation record that picks ``best.pt``.
        best_mode: ``"min"`` or ``"max"`` of ``best_metric``.
        resume: Continue from ``out_dir/last.pt`` if there is one. Without it an existing run is an
            error, so a typo never overwrites results.
        progress: Show a tqdm bar (rank 0 only).
        progress_keys: Training metrics shown on the bar.

    Example:
        >>> options = RunOptions("runs/a", steps=1000, validate_every=100, best_metric="accuracy",
        ...                      best_mode="max")
        >>> options.out_dir
        PosixPath('runs/a')
    """

    out_dir: Path
    steps: int
    validate_every: int
    best_metric: str = "loss"
    best_mode: Literal["min", "max"] = "min"
    resume: bool = False
    progress: bool = True
    progress_keys: tuple[str, ...] = ("loss",)

    def __post_init__(self) -> None:
        for name in ("steps", "validate_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', got {self.best_mode!r}")
        object.__setattr__(self, "out_dir", Path(self.out_dir))


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else the CPU; other names as torch reads them.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available here; use --device cpu")
    return device


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `run_training` (``last.pt`` or ``best.pt``, or the run directory,
    meaning its ``best.pt``).

    Returns:
        ``{"step", "trainer", "rng", "best", "config", ...}``; ``"trainer"`` is the trainer's state dict.

    Raises:
        FileNotFoundError: Naming the path, when there is no checkpoint there.

    Example:
        >>> checkpoint = load_checkpoint("runs/gl")          # its best.pt  # doctest: +SKIP
        >>> checkpoint["step"], checkpoint["best"]["accuracy"]              # doctest: +SKIP
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILES["best"]
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: expected a run directory or a .pt file "
                                "written by `metasparse train`")
    checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a metasparse checkpoint (format {_FORMAT})")
    return checkpoint


def read_metrics(out_dir: str | Path) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl``, in order.

    Example:
        >>> losses = [r["loss"] for r in read_metrics("runs/gl") if r["split"] == "train"]  # doctest: +SKIP
    """
    path = Path(out_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_json(path: Path, value: Any) -> None:
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n"))


def _improved(value: float, best: dict[str, Any] | None, metric: str, mode: str) -> bool:
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best[metric] if mode == "min" else value > best[metric]


def _gather_rng_states() -> list[dict[str, Any]]:
    _, world = rank_and_world_size()
    if world == 1:
        return [rng_state()]
    states: list[Any] = [None] * world
    dist.all_gather_object(states, rng_state())
    return states


def _check_resumable(out_dir: Path, config: Mapping[str, Any], resume: bool) -> None:
    saved_path = out_dir / CONFIG_FILE
    if not saved_path.is_file():
        return
    if not resume:
        raise FileExistsError(f"{out_dir} already holds a run: pass resume=True (--resume) to continue it, "
                              "or choose another output directory")
    saved = json.loads(saved_path.read_text())
    differing = sorted(key for key in set(saved) | set(config)
                       if key != "steps" and saved.get(key) != config.get(key))
    if differing:
        raise ValueError(f"cannot resume {out_dir}: its config differs in {differing} "
                         f"(saved {[saved.get(key) for key in differing]}, "
                         f"given {[config.get(key) for key in differing]})")


def run_training(trainer: Trainer, config: Mapping[str, Any], options: RunOptions) -> dict[str, Any]:
    """Train ``trainer`` for ``options.steps`` steps in ``options.out_dir``, resuming if asked.

    Args:
        trainer: Implements the `Trainer` protocol.
        config: JSON-serialisable settings of the run, saved as ``config.json``; resuming checks that
            they match the saved ones (``steps`` may grow, to extend a run).
        options: Where and how to run.

    Returns:
        The summary: ``{"steps", "best", "last"}`` with the best and last validation records.

    Example:
        >>> summary = run_training(trainer, vars(args), RunOptions("runs/a", 1000, 100))  # doctest: +SKIP
    """
    rank, world = rank_and_world_size()
    writer = rank == 0
    out_dir = options.out_dir
    config = json.loads(json.dumps(dict(config)))  # what will be saved, for comparisons on resume
    _check_resumable(out_dir, config, options.resume)
    if world > 1:  # every rank has looked at the directory before rank 0 writes into it
        dist.barrier()

    start, best, last = 0, None, None
    last_path = out_dir / CHECKPOINT_FILES["last"]
    if options.resume and last_path.is_file():
        checkpoint = load_checkpoint(last_path)
        states = checkpoint["rng"]
        if len(states) != world:
            raise ValueError(f"{last_path} was written by {len(states)} ranks; resume with as many, "
                             f"not {world}")
        trainer.load_state_dict(checkpoint["trainer"])
        set_rng_state(states[rank])
        start, best, last = checkpoint["step"], checkpoint["best"], checkpoint["last"]
    if writer:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_json(out_dir / CONFIG_FILE, config)
        kept = [record for record in read_metrics(out_dir) if record["step"] <= start]
        write_atomically(out_dir / METRICS_FILE,
                         lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in kept)))

    bar = tqdm(total=options.steps, initial=start, disable=not (writer and options.progress),
               desc=out_dir.name, dynamic_ncols=True)
    log = open(out_dir / METRICS_FILE, "a") if writer else None
    try:
        for step in range(start, options.steps):
            metrics = dict(trainer.train_step(step))
            done = step + 1
            if log is not None:
                log.write(json.dumps({"step": done, "split": "train", **metrics}) + "\n")
                log.flush()
            bar.update(1)
            bar.set_postfix({key: f"{metrics[key]:.4g}" for key in options.progress_keys if key in metrics},
                            refresh=False)
            if done % options.validate_every and done != options.steps:
                continue
            last = {"step": done, "split": "validation", **trainer.validate()}
            is_best = _improved(float(last[options.best_metric]), best, options.best_metric,
                                options.best_mode)
            if is_best:
                best = last
            checkpoint = {"format": _FORMAT, "step": done, "trainer": trainer.state_dict(),
                          "rng": _gather_rng_states(), "best": best, "last": last, "config": config}
            if log is not None:
                log.write(json.dumps(last) + "\n")
                log.flush()
                for name in ("last", "best") if is_best else ("last",):
                    write_atomically(out_dir / CHECKPOINT_FILES[name],
                                     lambda tmp, c=checkpoint: torch.save(c, tmp))
    finally:
        bar.close()
        if log is not None:
            log.close()
    summary = {"steps": options.steps, "best": best, "last": last}
    if writer:
        _write_json(out_dir / SUMMARY_FILE, summary)
    return summary
