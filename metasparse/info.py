"""The environment report printed by ``metasparse info``."""

from __future__ import annotations

import importlib.metadata
import platform
import random

import torch

__all__ = ["environment_report", "format_report", "learn2learn_check"]

_PACKAGES = ("torch", "torchvision", "learn2learn", "cvxpy", "cvxpylayers", "diffcp", "numpy", "scipy")


def learn2learn_check() -> str:
    """Sample one 5-way 2-shot task from an in-memory dataset through learn2learn's ``Taskset``.

    Returns:
        ``"ok: ..."`` with the task's shapes, or ``"FAILED: ..."`` with the reason.
    """
    try:
        from metasparse.tasks import classification_taskset, split_support_query

        x = torch.randn(10 * 6, 3, 8, 8)
        y = torch.arange(10).repeat_interleave(6)
        taskset = classification_taskset(torch.utils.data.TensorDataset(x, y), 5, 2, 3)
        random.seed(0)
        episode = split_support_query(*taskset.sample(), n_way=5, n_shot=2)
        labels = sorted(set(episode.support_labels.tolist()))
        if labels != list(range(5)):
            return f"FAILED: support labels {labels}, expected 0..4"
        return (f"ok: support {tuple(episode.support.shape)}, query {tuple(episode.query.shape)}, "
                f"labels 0..4")
    except Exception as error:  # the report must say what broke, not stop
        return f"FAILED: {type(error).__name__}: {error}"


def environment_report() -> dict[str, object]:
    """Versions, solvers, devices and threads that metasparse runs with."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    try:
        import cvxpy

        solvers = ", ".join(cvxpy.installed_solvers())
    except ImportError:
        solvers = "cvxpy not installed"
    devices = ["cpu"] + [f"cuda:{i} ({torch.cuda.get_device_name(i)})"
                         for i in range(torch.cuda.device_count())]
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        **versions,
        "cvxpy solvers": solvers,
        "torch devices": ", ".join(devices),
        "torch threads": torch.get_num_threads(),
        "learn2learn Taskset": learn2learn_check(),
    }


def format_report(report: dict[str, object]) -> str:
    """Two aligned columns, one line per entry."""
    width = max(map(len, report))
    return "\n".join(f"{key:<{width}}  {value}" for key, value in report.items())
