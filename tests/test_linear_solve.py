"""Cholesky-based solves against numpy's dense solver, and the batch sizes where torch's LU hangs."""

import subprocess
import sys

import numpy as np
import torch

from metasparse.solvers.linear_solve import solve_spd


def test_solve_spd_matches_numpy():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(3, 20, 20, generator=generator, dtype=torch.float64)
    a = a @ a.transpose(1, 2) + torch.eye(20, dtype=torch.float64)
    b = torch.randn(3, 20, generator=generator, dtype=torch.float64)
    expected = np.linalg.solve(a.numpy(), b.numpy()[..., None])[..., 0]
    np.testing.assert_allclose(solve_spd(a, b).numpy(), expected, rtol=1e-10)


def test_backward_at_metaoptnet_sizes_finishes_with_two_threads():
    # batched torch.linalg.solve hangs on this torch build for matrices above ~130 with 2 threads;
    # 5-way 15-shot gives KKT systems of 375 + 75 rows
    code = (
        "import torch; torch.set_num_threads(2)\n"
        "from metasparse.heads import GroupLassoSVMHead, LassoHead\n"
        "from metasparse.tasks import random_episodes\n"
        "s, y, q, _ = random_episodes(8, 5, 15, 15, 64, dtype=torch.float64)\n"
        "s.requires_grad_(True)\n"
        "GroupLassoSVMHead(0.5, 10.0)(q, s, y, 5).sum().backward()\n"
        "f = torch.randn(8, 300, 200, dtype=torch.float64, requires_grad=True)\n"
        "LassoHead(0.05).solve(f, f[..., :3].sum(-1).detach()).sum().backward()\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
    assert "MKL ERROR" not in out.stderr
