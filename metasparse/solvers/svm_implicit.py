r"""Implicit differentiation of the group-lasso SVM dual solution in the support features.

On the face of the simplices that holds $\alpha^\star$ (support S, one multiplier per row), the
optimality conditions $\nabla_\alpha D(\alpha^\star, X) + E\mu = 0$ define $\alpha^\star(X)$; the
vector-Jacobian product solves one KKT system on the face and differentiates $\nabla_\alpha D$ in X
through the active features only.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from metasparse.solvers.svm_face import face_of, reduced_dual_hessian, solve_on_face
from metasparse.solvers.svm_objective import (
    SVMParameters,
    feature_correlation,
    weights_from_dual_residual,
    without_group_lasso,
)

__all__ = ["dual_residual_with_implicit_gradient", "dual_vjp"]


def dual_residual_with_implicit_gradient(support: torch.Tensor, onehot: torch.Tensor, exact: torch.Tensor,
                                         parameters: SVMParameters) -> torch.Tensor:
    """``Y - alpha*`` in the dtype of ``support``, differentiable in ``support`` by the implicit function
    theorem at ``exact``, the solver's float64 ``alpha*`` (B, n, K). ``support`` may be the columns of
    the features active at ``exact`` only (with ``lambda1 > 0``): the others do not enter the dual there.

    The difference is taken in float64 before the cast: with large features ``alpha*`` is close to Y
    and ``Y - alpha*`` in float32 would keep only its rounding error.
    """
    residual = (onehot.double() - exact).to(support.dtype)
    if not support.requires_grad:
        return residual
    return _ImplicitDualResidual.apply(support, residual, onehot, parameters, exact)


class _ImplicitDualResidual(torch.autograd.Function):
    """Identity on Y - alpha* whose backward is minus the implicit derivative of alpha* in the features,
    taken at ``exact``."""

    @staticmethod
    def forward(ctx, support, residual, onehot, parameters, exact):
        ctx.save_for_backward(support, exact, onehot)
        ctx.parameters = parameters
        return residual.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_residual):
        support, alpha, onehot = ctx.saved_tensors
        grad_support = dual_vjp(support, alpha, onehot, ctx.parameters, -grad_residual)
        return grad_support, None, None, None, None


def dual_vjp(support: torch.Tensor, alpha: torch.Tensor, onehot: torch.Tensor, parameters: SVMParameters,
             grad_alpha: torch.Tensor) -> torch.Tensor:
    r"""Vector-Jacobian product of $\alpha^\star(X)$ by the implicit function theorem.

    On the face of the simplices that holds $\alpha^\star$ (support S, one multiplier per row),
    solve the KKT system $[H_S\ E; E^\top\ 0][u; \mu] = [\bar\alpha_S; 0]$, then
    $\bar X = -\partial_X \langle \nabla_\alpha D(\alpha^\star, X), u\rangle$. Computed in float64;
    the Hessian is positive definite (``dual_reg > 0``), so the product is finite at any alpha. The
    features inactive at alpha get a zero gradient.
    """
    x, a, y = support.double(), alpha.double(), onehot.double()
    lambda1 = parameters.lambda1
    residual = y - a
    correlation = None if without_group_lasso(lambda1) else feature_correlation(x, residual)
    face = face_of(a > 0)
    u = solve_on_face(reduced_dual_hessian(x, correlation, parameters, face), face, grad_alpha.double())
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        kernel_term = x @ weights_from_dual_residual(x, residual, lambda1, 1.0)
        (grad_x,) = torch.autograd.grad(kernel_term, x, grad_outputs=u / parameters.lambda2)
    return grad_x.to(support.dtype)
