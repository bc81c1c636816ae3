"""Cholesky-based solves against numpy's dense solver, and the batch sizes where torch's LU hangs."""

import subprocess
import sys

import numpy as np
import torch

from metasparse.solvers.linear_solve import solve_spd, solve_spd_with_group_sums


def test_solve_spd_matches_numpy():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(3, 20, 20, generator=generator, dtype=torch.float64)
    a = a @ a.transpose(1, 2) + torch.eye(20, dtype=torch.float64)
    b = torch.randn(3, 20, generator=generator, dtype=torch.float64)
    expected = np.linalg.solve(a.numpy(), b.numpy()[..., None])[..., 0]
    np.testing.assert_allclose(solve_spd(a, b).numpy(), expected, rtol=1e-10)


def test_solve_with_group_sums_matches_the_dense_kkt_system():
    generator = torch.Generator().manual_seed(1)
    batch, m, n_groups = 3, 9, 4
    h = torch.randn(batch, m, m, generator=generator, dtype=torch.float64)
    h = h @ h.transpose(1, 2) + 0.1 * torch.eye(m, dtype=torch.float64)
    groups = torch.randint(0, n_groups, (batch, m), generator=generator)
    groups[:, -2:] = -1  # padding
    groups[0, groups[0] == 3] = 2  # a group without entries
    rhs = torch.randn(batch, m, generator=generator, dtype=torch.float64)
    u = solve_spd_with_group_sums(h, groups, rhs, n_groups)
    for b in range(batch):
        idx = np.flatnonzero(groups[b].numpy() >= 0)
        used = np.unique(groups[b].numpy()[idx])
        e = (groups[b].numpy()[idx][:, None] == used[None]).astype(float)
        kkt = np.block([[h[b].numpy()[np.ix_(idx, idx)], e], [e.T, np.zeros((used.size, used.size))]])
        sol = np.linalg.solve(kkt, np.concatenate([rhs[b].numpy()[idx], np.zeros(used.size)]))
        expected = np.zeros(m)
        expected[idx] = sol[: idx.size]
        np.testing.assert_allclose(u[b].numpy(), expected, atol=1e-10)
    assert bool((u[:, -2:] == 0).all())
    sums = torch.zeros(batch, n_groups, dtype=torch.float64).scatter_add(1, groups.clamp_min(0), u)
    torch.testing.assert_close(sums, torch.zeros_like(sums), atol=1e-10, rtol=0)


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
