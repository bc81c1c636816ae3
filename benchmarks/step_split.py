"""Where a few-shot training step's time goes (data / backbone / head), heads timed alternately in one run.

Builds one `metasparse.train.FewShotTrainer` per head on the same setting and seed, then runs their
training steps in turn (step 1 of each head, then step 2 of each, ...), so that a load change on a shared
machine hits every head alike. Reported per head: the median milliseconds of loading the episodes, the
backbone (forward and backward, optimiser step) and the head (solve and its gradient), and the head's
share of the step. Writes ``step_split.json`` and ``step_split.md`` into ``--out``.

The default setting is the package's own (`metasparse train`'s defaults: CNN4 of 64 channels on 64x64
``shapes3d-fs`` images, 8 episodes of 5-way 15-shot with 6 queries); ``--image-size 32 --hidden-size 32
--train-shot 5`` is the setting of ``bench fewshot``.

Example:
    From a clone of the repository::

        metasparse bench step_split --steps 10
        metasparse bench step_split --image-size 32 --hidden-size 32 --train-shot 5 --steps 40
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import torch

from metasparse.atomic import write_atomically
from metasparse.train import FewShotConfig
from metasparse.train.fewshot import FewShotTrainer

__all__ = ["RESULTS_DIR", "main", "split_of"]

RESULTS_DIR = Path(__file__).resolve().parent / "results" / "step_split"
PARTS = ("data", "backbone", "head", "step")


def split_of(records: list[dict[str, float]]) -> dict[str, float]:
    """Median seconds of each part of the step over ``records`` (`FewShotTrainer.train_step` outputs)."""
    return {part: statistics.median(r[f"time_{part}"] for r in records) for part in PARTS}


def _table(results: dict[str, dict[str, float]]) -> str:
    rows = ["| head | ms per step: data / backbone / head | step (ms) | head share of step |",
            "|---|---|---|---|"]
    for name, split in results.items():
        rows.append(f"| {name} | {1000 * split['data']:.0f} / {1000 * split['backbone']:.0f} / "
                    f"{1000 * split['head']:.0f} | {1000 * split['step']:.0f} | "
                    f"{100 * split['head'] / split['step']:.0f}% |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Time the heads' training steps alternately; print and write the split."""
    parser = argparse.ArgumentParser(prog="metasparse bench step_split", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder (default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=0, help="(default: 0 = the dataset's own, 64)")
    parser.add_argument("--hidden-size", type=int, default=64, help="cnn4 channels (default: 64)")
    parser.add_argument("--train-shot", type=int, default=15, help="(default: 15)")
    parser.add_argument("--lambda1-ratio", type=float, default=0.1,
                        help="group-lasso head's lambda1 / lambda1_max (default: 0.1)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per head (default: 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps per head (default: 2)")
    args = parser.parse_args(argv)
    for name in ("hidden_size", "train_shot", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive int, got {getattr(args, name)}")
    base = FewShotConfig(image_size=args.image_size or None, hidden_size=args.hidden_size,
                         train_shot=args.train_shot, lambda1_ratio=args.lambda1_ratio, device="cpu")
    heads = {"svm": dataclasses.replace(base, head="svm"),
             f"group-lasso {args.lambda1_ratio:g}": dataclasses.replace(base, head="group-lasso")}
    trainers = {name: FewShotTrainer(config) for name, config in heads.items()}
    records: dict[str, list[dict[str, float]]] = {name: [] for name in trainers}
    for step in range(args.warmup + args.steps):
        for name, trainer in trainers.items():
            record = trainer.train_step(step)
            if step >= args.warmup:
                records[name].append(record)
        print(f"step {step + 1}/{args.warmup + args.steps}", flush=True)
    results = {name: split_of(timed) for name, timed in records.items()}
    machine = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
               "torch_threads": torch.get_num_threads()}
    command = " ".join(["metasparse bench step_split", *(sys.argv[1:] if argv is None else argv)])
    table = _table(results)
    output = {"machine": machine, "command": command, "config": base.to_dict(), "steps": args.steps,
              "warmup": args.warmup, "median_seconds": results}
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomically(args.out / "step_split.json", lambda tmp: tmp.write_text(json.dumps(output, indent=1)))
    write_atomically(args.out / "step_split.md", lambda tmp: tmp.write_text(f"`{command}`\n\n{table}\n"))
    print(f"\n{table}\n\nwrote {args.out / 'step_split.json'} and step_split.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
