"""The synthetic generalisation experiment at its default configuration.

Runs ``metasparse synthetic`` (m = 100, l/m in {5 %, 20 %, 80 %}, n in {25, ..., 150}, 20 seeds) and writes
``results.json``, ``config.json`` and ``synthetic.png`` into ``benchmarks/results/synthetic/``; prints the
table. Takes the same options as ``metasparse synthetic``.

Example:
    From a clone of the repository::

        metasparse bench synthetic            # or: python benchmarks/synthetic.py
        metasparse bench synthetic --quick --out /tmp/synthetic
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from metasparse.experiments import synthetic

__all__ = ["RESULTS_DIR", "main"]

RESULTS_DIR = Path(__file__).resolve().parent / "results" / "synthetic"


def main(argv: list[str] | None = None) -> int:
    """Run the experiment; ``--out`` defaults to :data:`RESULTS_DIR`.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        0 on success.
    """
    parser = argparse.ArgumentParser(prog="metasparse bench synthetic", description=__doc__.splitlines()[0])
    synthetic.add_arguments(parser)
    parser.set_defaults(out=RESULTS_DIR)
    return synthetic.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
