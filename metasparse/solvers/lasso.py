r"""Lasso and multi-output group lasso least squares: batched FISTA with implicit differentiation.

Per task, with features $\Phi \in \mathbb{R}^{n \times d}$ and targets
$Y \in \mathbb{R}^{n \times K}$:

$$
\min_W \frac{1}{2n}\|\Phi W - Y\|_F^2 + \lambda \sum_j \|W_{j,:}\|_2
$$

which is the lasso when $K = 1$. $\lambda_{\max} = \max_j \|\Phi_j^\top Y\|_2 / n$ is the
smallest $\lambda$ with $W = 0$. Gradients in $\Phi$ and $Y$ come from the
implicit function theorem on the optimality conditions restricted to the active rows A of W:
$H = \Phi_A^\top\Phi_A / n \otimes I +
\lambda\,\mathrm{blockdiag}_j (I - \hat w_j \hat w_j^\top)/\|w_j\|$,
so the backward pass costs grow with the support, not with d. $\lambda$ gets no gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

from metasparse.solvers.diagnostics import SolverInfo, row_sparsity
from metasparse.solvers.fista import FistaResult, fista
from metasparse.solvers.linear_solve import solve_symmetric_pseudo_inverse
from metasparse.solvers.prox import block_soft_threshold

__all__ = ["GroupLasso", "group_lasso_lambda_max", "group_lasso_relative_gap"]


def group_lasso_lambda_max(features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    r"""(B,) smallest $\lambda$ whose solution is zero, without gradient.

    $\lambda_{\max} = \max_j \|\Phi_j^\top Y\|_2 / n$.

    Args:
        features: (B, n, d).
        targets: (B, n, K).

    Example:
        >>> features, targets = torch.eye(2)[None], torch.tensor([[[3.0], [4.0]]])
        >>> group_lasso_lambda_max(features, targets)  # max(|3|, |4|) / n
        tensor([2.])
    """
    with torch.no_grad():
        correlations = features.transpose(1, 2) @ targets
        return torch.linalg.vector_norm(correlations, dim=-1).amax(dim=-1) / features.shape[1]


def group_lasso_relative_gap(weights: torch.Tensor, features: torch.Tensor, targets: torch.Tensor,
                             lam: torch.Tensor) -> torch.Tensor:
    r"""(B,) duality gap divided by $P(0) = \|Y\|^2 / (2n)$.

    The dual point is the residual rescaled into the dual feasible set,
    $u = R / \max(n, \max_j\|\Phi_j^\top R\|_2 / \lambda)$ with $R = Y - \Phi W$, and
    $D(u) = \langle u, Y\rangle - \tfrac{n}{2}\|u\|^2$.
    """
    n = features.shape[1]
    residual = targets - features @ weights
    primal = (residual**2).sum(dim=(1, 2)) / (2 * n) + lam * torch.linalg.vector_norm(weights, dim=-1).sum(-1)
    dual_norm = torch.linalg.vector_norm(features.transpose(1, 2) @ residual, dim=-1).amax(dim=-1)
    scale = torch.maximum(torch.full_like(lam, n), dual_norm / lam)
    u = residual / scale[:, None, None]
    dual = (u * targets).sum(dim=(1, 2)) - n / 2 * (u**2).sum(dim=(1, 2))
    reference = ((targets**2).sum(dim=(1, 2)) / (2 * n)).clamp_min(torch.finfo(targets.dtype).tiny)
    return (primal - dual).clamp_min(0) / reference


@dataclass(eq=False)
class GroupLasso:
    """Batched native lasso / group-lasso least-squares solver, differentiable in features and targets.

    Attributes:
        max_iter: FISTA iteration cap.
        tol: Stop a task when its duality gap is at most ``tol * ||Y||^2 / (2n)``; ``None`` runs exactly
            ``max_iter`` iterations and reports ``converged=False``.
        check_every: Iterations between two duality-gap evaluations.

    Example:
        >>> features = torch.randn(4, 50, 6); targets = features[..., :1] * 2.0
        >>> lam = 0.1 * group_lasso_lambda_max(features, targets)
        >>> W, info = GroupLasso().solve(features, targets, lam)
        >>> W.shape, info.active.tolist()
        (torch.Size([4, 6, 1]), [1, 1, 1, 1])
    """

    max_iter: int = 1000
    tol: float | None = 1e-6
    check_every: int = 10

    def __post_init__(self) -> None:
        if not (isinstance(self.max_iter, int) and self.max_iter >= 1):
            raise ValueError(f"max_iter must be a positive int, got {self.max_iter!r}")
        if self.tol is not None and not self.tol > 0:
            raise ValueError(f"tol must be > 0 or None (fixed iterations), got {self.tol!r}")

    def solve(self, features: torch.Tensor, targets: torch.Tensor, lam: torch.Tensor,
              init: torch.Tensor | None = None) -> tuple[torch.Tensor, SolverInfo]:
        """Weights (B, d, K), differentiable in ``features`` and ``targets``, and diagnostics.

        Args:
            features: (B, n, d).
            targets: (B, n, K).
            lam: (B,) positive penalty weights (detached).
            init: Optional (B, d, K) warm start; zero by default.
        """
        lam = lam.detach().to(features.dtype)
        with torch.no_grad():
            phi, y = features.detach(), targets.detach()
            batch, n, d = phi.shape
            # lam >= lambda_max (zero targets, zero features, a large ratio): the solution is exactly zero
            closed_form = lam >= group_lasso_lambda_max(phi, y)
            weights = torch.zeros(batch, d, y.shape[-1], dtype=phi.dtype, device=phi.device)
            iterations = torch.zeros(batch, dtype=torch.long, device=phi.device)
            converged = closed_form & (self.tol is not None)
            residual = torch.zeros(batch, dtype=phi.dtype, device=phi.device)
            if not bool(closed_form.all()):
                tasks = (~closed_form).nonzero()[:, 0]
                start = None if init is None else init.detach()[tasks]
                result = self._fista(phi[tasks], y[tasks], lam[tasks], start)
                weights[tasks], iterations[tasks] = result.solution, result.iterations
                converged[tasks], residual[tasks] = result.converged, result.residual
            active, sparsity = row_sparsity(weights)
        # beyond n active rows the solution is not unique and the implicit derivative is not defined
        trusted = converged & (active <= n)
        info = SolverInfo(iterations, converged, residual, active, sparsity, self.tol, self.max_iter,
                          "native", gradient_trusted=trusted)
        if features.requires_grad or targets.requires_grad:
            weights = _ImplicitGroupLassoSolution.apply(features, targets, weights, lam)
        return weights, info

    def _fista(self, phi: torch.Tensor, y: torch.Tensor, lam: torch.Tensor,
               init: torch.Tensor | None) -> FistaResult:
        """FISTA on tasks with ``0 < lam < lambda_max``."""
        phi_t = phi.transpose(1, 2).contiguous()
        n, d = phi.shape[1:]
        gram = phi @ phi_t if n <= d else phi_t @ phi
        lipschitz = torch.linalg.eigvalsh(gram)[..., -1].clamp_min(torch.finfo(phi.dtype).tiny) / n
        correlation = phi_t @ y

        def gradient(w: torch.Tensor) -> torch.Tensor:
            return (phi_t @ (phi @ w) - correlation) / n

        def prox(w: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
            return block_soft_threshold(w, step * lam[:, None, None])

        def gap(w: torch.Tensor) -> torch.Tensor:
            return group_lasso_relative_gap(w, phi, y, lam)

        start = torch.zeros(phi.shape[0], d, y.shape[-1], dtype=phi.dtype, device=phi.device)
        return fista(start if init is None else init, gradient, prox, 1 / lipschitz, gap, self.max_iter,
                     self.tol, self.check_every)


class _ImplicitGroupLassoSolution(torch.autograd.Function):
    """Identity on W* whose backward is the implicit derivative of W* in features and targets."""

    @staticmethod
    def forward(ctx, features, targets, weights, lam):
        ctx.save_for_backward(features, targets, weights, lam)
        return weights.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_weights):
        features, targets, weights, lam = ctx.saved_tensors
        grad_features, grad_targets = _group_lasso_vjp(features, targets, weights, lam, grad_weights)
        return grad_features, grad_targets, None, None


def _group_lasso_vjp(features: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                     lam: torch.Tensor, grad_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Solve $H U_A = \bar W_A$ on the active rows, then
    $\bar\Phi = -(R U^\top + \Phi U W^\top)/n$ and $\bar Y = \Phi U / n$ with
    $R = \Phi W - Y$, with the pseudo-inverse of H where it is singular. Computed in float64."""
    phi, y, w = features.double(), targets.double(), weights.double()
    batch, n, _ = phi.shape
    k = w.shape[-1]
    norms = torch.linalg.vector_norm(w, dim=-1)
    active = norms > 0
    width = max(1, int(active.sum(dim=-1).max()))
    rows = torch.argsort((~active).to(torch.int8), dim=-1, stable=True)[:, :width]
    is_active = active.gather(1, rows)
    phi_active = phi.gather(2, rows[:, None, :].expand(batch, n, width)) * is_active[:, None, :]
    w_active = w.gather(1, rows[..., None].expand(batch, width, k))
    norms_active = norms.gather(1, rows).clamp_min(torch.finfo(phi.dtype).tiny)
    directions = w_active / norms_active[..., None]
    eye_k = torch.eye(k, dtype=phi.dtype, device=phi.device)
    curvature = (eye_k - directions[..., :, None] * directions[..., None, :]) / norms_active[..., None, None]
    curvature = lam.double()[:, None, None, None] * curvature * is_active[..., None, None]
    gram = phi_active.transpose(1, 2) @ phi_active / n
    hessian = gram[:, :, None, :, None] * eye_k[None, None, :, None, :]
    hessian = hessian.reshape(batch, width * k, width * k)
    blocks = torch.diag_embed(curvature.permute(0, 2, 3, 1))  # (B, k, k, width, width)
    hessian = hessian + blocks.permute(0, 3, 1, 4, 2).reshape(batch, width * k, width * k)
    padding = (~is_active)[..., None].expand(batch, width, k).reshape(batch, width * k)
    hessian = hessian + torch.diag_embed(padding.to(phi.dtype))
    rhs = grad_weights.double().gather(1, rows[..., None].expand(batch, width, k)) * is_active[..., None]
    # H is singular where the solution is not unique: collinear active columns (duplicated features), or
    # more active rows than samples (an unconverged solve); its pseudo-inverse gives the minimum-norm
    # derivative there, finite and of the order of the converged one, and the inverse elsewhere
    u_active = solve_symmetric_pseudo_inverse(hessian, rhs.reshape(batch, width * k)).reshape(batch, width, k)
    u_active = u_active * is_active[..., None]
    u = torch.zeros_like(w).scatter(1, rows[..., None].expand(batch, width, k), u_active)
    residual = phi @ w - y
    grad_features = -(residual @ u.transpose(1, 2) + (phi @ u) @ w.transpose(1, 2)) / n
    grad_targets = phi @ u / n
    return grad_features.to(features.dtype), grad_targets.to(targets.dtype)
