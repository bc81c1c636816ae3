"""Checks that catch a broken install: imports, the command, learn2learn sampling, cvxpylayers."""

import importlib
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import metasparse
from metasparse.cli import main


@pytest.mark.parametrize("name", ["metasparse", "torch", "torchvision", "cvxpy", "cvxpylayers.torch",
                                  "diffcp", "tqdm", "numpy", "scipy", "learn2learn"])
def test_required_dependency_imports(name):
    importlib.import_module(name)


def test_import_metasparse_stays_light():
    code = ("import sys, metasparse, metasparse.heads, metasparse.solvers, metasparse.tasks; "
            "heavy = {'cvxpy', 'cvxpylayers', 'learn2learn', 'h5py', 'sklearn', 'matplotlib'}; "
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert metasparse.__version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "info" in capsys.readouterr().out


def test_cli_info_reports_versions_and_a_sampled_task(capsys):
    assert main(["info"]) == 0
    report = capsys.readouterr().out
    for key in ("torch", "learn2learn", "cvxpylayers", "cvxpy solvers", "torch threads"):
        assert key in report
    assert "learn2learn Taskset  ok:" in report


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("metasparse")
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("metasparse ")


def test_learn2learn_taskset_samples_a_valid_task():
    from metasparse.tasks import classification_taskset, sample_episodes

    x = torch.arange(12 * 7, dtype=torch.float32).reshape(12 * 7, 1)
    y = torch.arange(12).repeat_interleave(7)
    taskset = classification_taskset(torch.utils.data.TensorDataset(x, y), n_way=5, n_shot=2, n_query=4)
    random.seed(0)
    episode = sample_episodes(taskset, batch_size=3, n_way=5, n_shot=2)
    assert episode.support.shape == (3, 10, 1) and episode.query.shape == (3, 20, 1)
    for b in range(3):
        assert torch.equal(torch.bincount(episode.support_labels[b]), torch.full((5,), 2))
        assert torch.equal(torch.bincount(episode.query_labels[b]), torch.full((5,), 4))
        # each remapped label is one original class, in support and query alike
        original = y[(episode.support[b, :, 0]).long()]
        original_query = y[(episode.query[b, :, 0]).long()]
        for label in range(5):
            classes = set(original[episode.support_labels[b] == label].tolist())
            classes |= set(original_query[episode.query_labels[b] == label].tolist())
            assert len(classes) == 1
        # no item appears twice within a task
        items = torch.cat([episode.support[b, :, 0], episode.query[b, :, 0]])
        assert items.unique().numel() == 30


def test_cvxpylayers_solves_and_differentiates_a_tiny_problem():
    import cvxpy as cp
    from cvxpylayers.torch import CvxpyLayer

    # min_x ||x - a||^2  s.t.  x >= 0: solution relu(a), Jacobian diag(a > 0).
    a = cp.Parameter(3)
    x = cp.Variable(3)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x - a)), [x >= 0])
    layer = CvxpyLayer(problem, parameters=[a], variables=[x])
    a_t = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    (solution,) = layer(a_t, solver_args={"eps": 1e-10, "mode": "lsmr"})
    torch.testing.assert_close(solution, torch.relu(a_t.detach()), atol=1e-6, rtol=0)
    solution.sum().backward()
    torch.testing.assert_close(a_t.grad, torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64), atol=1e-5,
                               rtol=0)


def test_missing_optional_dependency_names_the_fix(monkeypatch):
    from metasparse._optional import require

    monkeypatch.setitem(sys.modules, "learn2learn", None)
    with pytest.raises(ImportError, match="make setup"):
        require("learn2learn")
