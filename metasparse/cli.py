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

    return run_demo()


def _synthetic(args: argparse.Namespace) -> int:
    from metasparse.experiments import synthetic

    return synthetic.run(args)


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
    commands.add_parser("demo", help="the main job of `make demo`").set_defaults(run=_demo)

    from metasparse.experiments import synthetic

    synthetic_parser = commands.add_parser(
        "synthetic", help="the paper's synthetic generalisation experiment (lasso vs ridge)")
    synthetic.add_arguments(synthetic_parser)
    synthetic_parser.set_defaults(run=_synthetic)

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
