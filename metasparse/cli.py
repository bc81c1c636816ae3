"""The ``metasparse`` command."""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

import metasparse

__all__ = ["main"]

BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def _info(args: argparse.Namespace) -> int:
    from metasparse.info import environment_report, format_report

    print(format_report(environment_report()))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from metasparse.demo import run_demo

    return run_demo(args.out, steps=args.steps, episodes=args.episodes, progress=not args.no_progress)


def _synthetic(args: argparse.Namespace) -> int:
    from metasparse.experiments import synthetic

    return synthetic.run(args)


def _disentangle(args: argparse.Namespace) -> int:
    from metasparse.experiments import disentangle

    return disentangle.run(args)


def _train(args: argparse.Namespace) -> int:
    from metasparse.train import FewShotConfig, FewShotTrainer, config_from_args, run_training

    config = config_from_args(FewShotConfig, args)
    summary = run_training(FewShotTrainer(config), config.to_dict(),
                           config.run_options(args.out, resume=args.resume, progress=not args.no_progress))
    best = summary["best"] or {}
    print(f"{args.out}: best validation accuracy {best.get('accuracy', float('nan')):.2f} +- "
          f"{best.get('ci95', float('nan')):.2f} % at step {best.get('step')} "
          f"(features used {100 * best.get('features_used', float('nan')):.1f}%)")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import json

    from metasparse.atomic import write_atomically
    from metasparse.train import evaluate_checkpoint

    results = evaluate_checkpoint(args.checkpoint, shots=tuple(args.shots), episodes=args.episodes,
                                  n_query=args.query, split=args.split, seed=args.seed, device=args.device,
                                  data_root=args.data_root)
    for name, result in results.items():
        print(f"{name}: accuracy {result['accuracy']:.2f} +- {result['ci95']:.2f} % over "
              f"{result['episodes']} episodes, features used {100 * result['features_used']:.1f}%")
    run_dir = args.checkpoint if args.checkpoint.is_dir() else args.checkpoint.parent
    out = args.out or run_dir / f"evaluation-{args.split}.json"
    write_atomically(out, lambda tmp: tmp.write_text(json.dumps(results, indent=2) + "\n"))
    print(f"wrote {out}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    script = BENCHMARKS_DIR / f"{args.name}.py"
    if not script.is_file():
        available = sorted(p.stem for p in BENCHMARKS_DIR.glob("*.py")) if BENCHMARKS_DIR.is_dir() else []
        raise SystemExit(f"metasparse bench: no benchmark {args.name!r} in {BENCHMARKS_DIR} "
                         f"(available: {', '.join(available) or 'none; run from a clone of the repository'})")
    sys.argv = [str(script), *args.bench_args]
    runpy.run_path(str(script), run_name="__main__")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``metasparse`` command."""
    parser = argparse.ArgumentParser(prog="metasparse", description=metasparse.__doc__)
    parser.add_argument("--version", action="version", version=f"metasparse {metasparse.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("info", help="versions, solvers, devices; checks learn2learn sampling"
                        ).set_defaults(run=_info)
    demo = commands.add_parser(
        "demo", help="the main job of `make demo`: meta-train the group-lasso and SVM heads on shapes3d-fs, "
                     "then compare them on test episodes",
        description="Meta-train a CNN4 on shapes3d-fs with the group-lasso head and with MetaOptNet's SVM "
                    "head, then score both on fixed 5-way 1- and 5-shot test episodes. Resumes a killed run.")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default: runs/demo)")
    demo.add_argument("--steps", type=int, default=150, help="training steps per head (default: 150)")
    demo.add_argument("--episodes", type=int, default=300, help="test episodes per shot (default: 300)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(run=_demo)

    from metasparse.experiments import synthetic

    synthetic_parser = commands.add_parser(
        "synthetic", help="the paper's synthetic generalisation experiment (lasso vs ridge)")
    synthetic.add_arguments(synthetic_parser)
    synthetic_parser.set_defaults(run=_synthetic)

    from metasparse.experiments import disentangle

    disentangle_parser = commands.add_parser(
        "disentangle", help="the paper's 3D Shapes disentanglement study: one run, or `disentangle sweep`")
    disentangle.add_arguments(disentangle_parser)
    disentangle_parser.set_defaults(run=_disentangle)

    from metasparse.train import FewShotConfig, add_config_arguments

    train = commands.add_parser(
        "train", help="episodic meta-training of a backbone with a head (MetaOptNet's recipe by default)",
        description="Meta-train a backbone with an episodic head; writes config.json, metrics.jsonl, "
                    "last.pt, best.pt and summary.json to --out. Run under torchrun for data parallelism.")
    train.add_argument("--out", type=Path, required=True, help="run directory")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(train, FewShotConfig)
    train.set_defaults(run=_train)

    evaluate = commands.add_parser(
        "evaluate", help="accuracy +- 95%% CI and features used on fixed test episodes",
        description="Score a trained run on fixed episodes, MetaOptNet's way: mean accuracy +- "
                    "1.96 std / sqrt(N) over N episodes, and the mean fraction of features each task uses.")
    evaluate.add_argument("checkpoint", metavar="RUN", type=Path,
                          help="run directory (uses its best.pt) or a checkpoint file")
    evaluate.add_argument("--shots", type=int, nargs="+", default=[1, 5], help="support shots (default: 1 5)")
    evaluate.add_argument("--episodes", type=int, default=1000, help="episodes per shot (default: 1000)")
    evaluate.add_argument("--query", type=int, default=15, help="queries per class (default: 15)")
    evaluate.add_argument("--split", choices=("test", "validation"), default="test", help="(default: test)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the episodes (default: 0)")
    evaluate.add_argument("--device", default=None, help="device (default: the run's)")
    evaluate.add_argument("--data-root", default=None, help="data folder (default: the run's)")
    evaluate.add_argument("--out", type=Path, default=None,
                          help="results JSON (default: RUN/evaluation-SPLIT.json)")
    evaluate.set_defaults(run=_evaluate)

    bench = commands.add_parser("bench", help="run benchmarks/NAME.py (from a clone of the repository)")
    bench.add_argument("name", help="benchmark name, e.g. heads, render, synthetic")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    bench.set_defaults(run=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``metasparse`` console script."""
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
