"""The main job of ``make demo``."""

from __future__ import annotations

__all__ = ["run_demo"]


def run_demo() -> int:
    """Print the environment report."""
    from metasparse.info import environment_report, format_report

    print(format_report(environment_report()))
    return 0
