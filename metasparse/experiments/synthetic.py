"""The synthetic generalisation experiment (placeholder until issue 5 lands)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``metasparse synthetic`` options to ``parser``."""


def run(args: argparse.Namespace) -> int:
    """Run the experiment from parsed arguments."""
    raise SystemExit("metasparse synthetic is not implemented yet")
