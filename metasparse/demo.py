"""The main job of ``make demo``: a short meta-training on ``shapes3d-fs`` with the group-lasso head and
MetaOptNet's SVM head, then both evaluated side by side on fixed test episodes.

Both runs share every setting but the head (CNN4 backbone of 32 channels on 32x32 images, so 128
features; MetaOptNet's optimiser and schedule, shortened), so the comparison is paired. They are
ordinary `metasparse train` runs under ``runs/demo/``: a killed demo resumes where it stopped, and a
finished one is only evaluated again.
"""

from __future__ import annotations

import json
from pathlib import Path

from metasparse.atomic import write_atomically

__all__ = ["DEMO_HEADS", "demo_config", "run_demo"]

DEMO_HEADS = {"group-lasso": "group-lasso SVM", "svm": "SVM (MetaOptNet)"}
"""The heads the demo trains: config name -> name in the report."""


def demo_config(head: str, steps: int = 150):
    """The demo's `metasparse.train.FewShotConfig` for ``head``."""
    from metasparse.train import FewShotConfig

    return FewShotConfig(dataset="shapes3d-fs", image_size=32, hidden_size=32, head=head, train_shot=5,
                         train_query=6, steps=steps, validate_every=max(steps // 2, 1), val_episodes=100,
                         lr_milestones=(0.5, 0.75, 0.9), device="cpu")


def run_demo(out_dir: str | Path = "runs/demo", steps: int = 150, episodes: int = 300,
             progress: bool = True) -> int:
    """Train and evaluate the `DEMO_HEADS`; print the comparison and write ``out_dir/demo.json``.

    Args:
        out_dir: Where the runs go (one subfolder per head).
        steps: Training steps per head.
        episodes: Test episodes per shot count (5-way, 1- and 5-shot, 15 queries per class).
        progress: Show progress bars.

    Returns:
        0 (the exit status of ``metasparse demo``).
    """
    from metasparse.train import train_and_evaluate

    out_dir = Path(out_dir)
    report = {head: train_and_evaluate(demo_config(head, steps), out_dir / head, episodes=episodes,
                                       progress=progress) for head in DEMO_HEADS}
    write_atomically(out_dir / "demo.json", lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n"))
    print(format_report(report, steps, episodes))
    return 0


def format_report(report: dict, steps: int, episodes: int) -> str:
    """The demo's table: per shot count, accuracy +- 95% CI and the fraction of features used; the
    training step's time split into data, backbone (forward and backward) and head (solve and its
    gradient); this call's train and test seconds."""
    columns = ["head", "1-shot accuracy", "features used", "5-shot accuracy", "features used",
               "ms per step: data / backbone / head", "train s", "test s"]
    lines = [f"shapes3d-fs, CNN4 (128 features), {steps} training steps of 8 episodes (5-way 5-shot); "
             f"test: {episodes} episodes of 5-way, 15 queries per class; chance = 20%", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for head, result in report.items():
        cells = [DEMO_HEADS[head]]
        for shots in ("1-shot", "5-shot"):
            score = result["evaluation"][shots]
            cells += [f"{score['accuracy']:.2f} +- {score['ci95']:.2f} %",
                      f"{100 * score['features_used']:.1f}%"]
        times = result["step_times"]
        cells += [" / ".join(f"{1000 * times[key]:.0f}" for key in ("data", "backbone", "head")),
                  f"{result['train_seconds']:.0f}", f"{result['eval_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
