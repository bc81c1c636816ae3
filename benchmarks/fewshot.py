"""Few-shot heads compared: ProtoNet, ridge, SVM and the group-lasso head over a lambda1_ratio sweep.

Each head meta-trains the same backbone on the same episodes (``metasparse train`` runs that differ in
the head only), then is scored on the same 1000 fixed test episodes each of 5-way 1-shot and 5-shot
(15 queries per class). Reported per head: accuracy +- 95% CI, the fraction of features each task's
weights use, and the training step's time split into data, backbone (forward and backward) and head
(solve and gradient). Writes ``fewshot.json``, ``fewshot.md`` and ``fewshot.png`` (accuracy against
features used) into ``--out``; the runs go in ``--out/runs/``. Every run and evaluation is resumable
and finished ones are skipped, so a long benchmark continues across sittings: run the same command again.

The default setting (``shapes3d-fs`` at 32x32, CNN4 of 32 channels = 128 features, 5-shot training,
300 steps) keeps the whole benchmark within about 2 hours on a 2-core CPU (each run 3-8 minutes); the
dense heads reach 96-99% there, so ``--class-factors scale orientation`` (classes that differ in scale
and angle only, 91-96%) is the harder variant. Pass ``--dataset mini-imagenet --data-root DIR`` (and e.g.
``--backbone resnet12 --device cuda``) for a real benchmark.

Example:
    From a clone of the repository::

        metasparse bench fewshot                      # or: python benchmarks/fewshot.py
        metasparse bench fewshot --quick --out /tmp/fewshot
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
from pathlib import Path

import torch

from metasparse.atomic import write_atomically
from metasparse.train import FewShotConfig, train_and_evaluate

__all__ = ["RESULTS_DIR", "head_specs", "main"]

RESULTS_DIR = Path(__file__).resolve().parent / "results" / "fewshot"
RATIOS = (0.1, 0.12, 0.15, 0.2, 0.3, 0.5, 0.7, 0.9)


def head_specs(ratios: tuple[float, ...]) -> dict[str, dict[str, object]]:
    """Run name -> the config fields that make the head: the dense heads, then the group-lasso sweep."""
    specs: dict[str, dict[str, object]] = {"protonet": {"head": "protonet"}, "ridge": {"head": "ridge"},
                                           "svm": {"head": "svm"}}
    for ratio in ratios:
        specs[f"group-lasso-{ratio:g}"] = {"head": "group-lasso", "lambda1_ratio": ratio}
    return specs


def _table(records: list[dict]) -> str:
    columns = ["head", "lambda1 / lambda1_max", "1-shot accuracy", "features used", "5-shot accuracy",
               "features used", "ms per step: data / backbone / head", "head share of step"]
    rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in records:
        one, five, t = r["evaluation"]["1-shot"], r["evaluation"]["5-shot"], r["step_times"]
        rows.append(f"| {r['head']} | {r['lambda1_ratio'] if r['head'] == 'group-lasso' else '-'} "
                    f"| {one['accuracy']:.2f} +- {one['ci95']:.2f} | {100 * one['features_used']:.1f}% "
                    f"| {five['accuracy']:.2f} +- {five['ci95']:.2f} | {100 * five['features_used']:.1f}% "
                    f"| {1000 * t['data']:.0f} / {1000 * t['backbone']:.0f} / {1000 * t['head']:.0f} "
                    f"| {100 * t['head'] / t['step']:.0f}% |")
    return "\n".join(rows)


def _plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    for axis, shots in zip(axes, ("1-shot", "5-shot"), strict=True):
        sweep = [r for r in records if r["head"] == "group-lasso"]
        axis.errorbar([100 * r["evaluation"][shots]["features_used"] for r in sweep],
                      [r["evaluation"][shots]["accuracy"] for r in sweep],
                      yerr=[r["evaluation"][shots]["ci95"] for r in sweep], marker="o", capsize=3,
                      label="group-lasso SVM")
        for r in sweep:
            axis.annotate(f"{r['lambda1_ratio']:g}", (100 * r["evaluation"][shots]["features_used"],
                                                     r["evaluation"][shots]["accuracy"]),
                          textcoords="offset points", xytext=(4, 4), fontsize=8)
        for r in records:
            if r["head"] != "group-lasso":
                score = r["evaluation"][shots]
                axis.errorbar([100 * score["features_used"]], [score["accuracy"]], yerr=[score["ci95"]],
                              marker="s", linestyle="none", capsize=3, label=r["head"])
        axis.set(title=f"5-way {shots}", xlabel="features used per task (%)", ylabel="test accuracy (%)")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    write_atomically(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    """Run (or continue) the benchmark; print and write the table."""
    parser = argparse.ArgumentParser(prog="metasparse bench fewshot", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder (default: %(default)s)")
    parser.add_argument("--dataset", default="shapes3d-fs", help="benchmark (default: shapes3d-fs)")
    parser.add_argument("--data-root", default=None, help="folder of the benchmark's files")
    parser.add_argument("--backbone", default="cnn4", help="cnn4 or resnet12 (default: cnn4)")
    parser.add_argument("--image-size", type=int, default=32, help="(default: 32; 0 = the dataset's own)")
    parser.add_argument("--hidden-size", type=int, default=32, help="cnn4 channels (default: 32)")
    parser.add_argument("--class-factors", nargs="+", default=None,
                        help="shapes3d-fs factors that make a class (default: shape object_hue scale)")
    parser.add_argument("--steps", type=int, default=300, help="training steps per head (default: 300)")
    parser.add_argument("--episodes", type=int, default=1000, help="test episodes per shot (default: 1000)")
    parser.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS),
                        help="group-lasso lambda1 / lambda1_max values (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="(default: cpu)")
    parser.add_argument("--quick", action="store_true", help="30 steps, 50 episodes, ratios 0.3 and 0.7")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.episodes, args.ratios = 30, 50, [0.3, 0.7]
    base = FewShotConfig(dataset=args.dataset, data_root=args.data_root, backbone=args.backbone,
                         image_size=args.image_size or None, hidden_size=args.hidden_size, train_shot=5,
                         class_factors=tuple(args.class_factors) if args.class_factors else None,
                         steps=args.steps, validate_every=max(args.steps // 3, 1), val_episodes=200,
                         device=args.device)
    machine = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
               "torch_threads": torch.get_num_threads(), "device": args.device,
               "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None}
    command = " ".join(["metasparse bench fewshot", *(sys.argv[1:] if argv is None else argv)])
    records = []
    for name, fields in head_specs(tuple(args.ratios)).items():
        config = dataclasses.replace(base, **fields)
        print(f"== {name}", flush=True)
        result = train_and_evaluate(config, args.out / "runs" / name, episodes=args.episodes)
        records.append({"name": name, "head": config.head, "lambda1_ratio": config.lambda1_ratio,
                        "evaluation": result["evaluation"], "step_times": result["step_times"],
                        "best_validation": result["summary"]["best"]})
        results = {"machine": machine, "command": command, "config": base.to_dict(), "records": records}
        write_atomically(args.out / "fewshot.json",
                         lambda tmp, r=results: tmp.write_text(json.dumps(r, indent=1)))
    table = _table(records)
    write_atomically(args.out / "fewshot.md", lambda tmp: tmp.write_text(f"`{command}`\n\n{table}\n"))
    _plot(records, args.out / "fewshot.png")
    print(f"\n{table}\n\nwrote {args.out / 'fewshot.json'}, fewshot.md and fewshot.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
