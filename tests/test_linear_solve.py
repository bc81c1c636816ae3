"""Cholesky-based solves against numpy's dense solver, and the batch sizes where torch's LU hangs."""

import subprocess
import sys

import numpy as np
import torch

from metasparse.solvers.linear_solve import solve_spd, solve_spd_with_row_sums


def test_solve_spd_matches_numpy():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(3, 20, 20, generator=generator, dtype=torch.float64)
    a = a @ a.transpose(1, 2) + torch.eye(20, dtype=torch.float64)
    b = torch.randn(3, 20, generator=generator, dtype=torch.float64)
    expected = np.linalg.solve(a.numpy(), b.numpy()[..., None])[..., 0]
    np.testing.assert_allclose(solve_spd(a, b).numpy(), expected, rtol=1e-10)


def test_solve_with_row_sums_matches_the_dense_kkt_system():
    generator = torch.Generator().manual_seed(1)
    batch, n, k = 2, 4, 3
    h = torch.randn(batch, n * k, n * k, generator=generator, dtype=torch.float64)
    h = h @ h.transpose(1, 2) + 0.1 * torch.eye(n * k, dtype=torch.float64)
    free = torch.rand(batch, n, k, generator=generator) > 0.4
    free[:, :, 0] = True
    rhs = torch.randn(batch, n, k, generator=generator, dtype=torch.float64)
    u = solve_spd_with_row_sums(h, free, rhs)
    for b in range(batch):
        f = free[b].reshape(-1).numpy()
        idx = np.flatnonzero(f)
        rows = np.repeat(np.arange(n), k)[idx]
        e = (rows[:, None] == np.arange(n)[None]).astype(float)
        kkt = np.block([[h[b].numpy()[np.ix_(idx, idx)], e], [e.T, np.zeros((n, n))]])
        sol = np.linalg.solve(kkt, np.concatenate([rhs[b].reshape(-1).numpy()[idx], np.zeros(n)]))
        expected = np.zeros(n * k)
        expected[idx] = sol[: idx.size]
        np.testing.assert_allclose(u[b].reshape(-1).numpy(), expected, atol=1e-10)
    assert bool((u[~free] == 0).all())
    torch.testing.assert_close(u.sum(-1), torch.zeros(batch, n, dtype=torch.float64), atol=1e-10, rtol=0)


def test_backward_at_metaoptnet_sizes_finishes_with_two_threads():
    # batched torch.linalg.solve hangs on this torch build for matrices above ~130 with 2 threads;
    # 5-way 15-shot gives KKT systems of 375 + 75 rows
    code = (
        "import torch; torch.set_num_threads(2)\n"
        "from metasparse.heads import GroupLassoSVMHead, LassoHead\n"
        "from metasparse.demo import random_episodes\n"
        "s, y, q, _ = random_episodes(8, 5, 15, 15, 64, dtype=torch.float64)\n"
        "s.requires_grad_(True)\n"
        "GroupLassoSVMHead(0.5, 10.0)(q, s, y, 5).sum().backward()\n"
        "f = torch.randn(8, 300, 200, dtype=torch.float64, requires_grad=True)\n"
        "LassoHead(0.05).solve(f, f[..., :3].sum(-1).detach()).sum().backward()\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
    assert "MKL ERROR" not in out.stderr
