"""The group-lasso SVM dual of a batch on given feature columns: gradient, objective, gap, Newton step."""

from __future__ import annotations

import copy

import torch

from metasparse.solvers.prox import project_simplex
from metasparse.solvers.svm_face import face_of, reduced_dual_hessian, solve_on_face
from metasparse.solvers.svm_objective import (
    SVMParameters,
    dual_from_kernel,
    gap_from_gram,
    per_task,
    smoothed_hinge,
    without_group_lasso,
)

__all__ = ["NEWTON_STEP_FRACTIONS", "DualProblem"]

NEWTON_STEP_FRACTIONS = (1.0, 0.5, 0.25, 1 / 8, 1 / 32, 1 / 128)
"""The fractions of a Newton step tried: the full step, then, where it raises D (far from the optimum it
overshoots), the others in one pass."""


class DualProblem:
    """The dual of one batch on given feature columns: gradient, gap and a safeguarded Newton step.

    `gradient` and `dual` also take several points per task, stacked as (B, n, F, K): the Newton step
    evaluates all its candidate step lengths in one pass.

    Args:
        parameters: lambda1, lambda2 and dual_reg.
        support: (B, n, p) the feature columns the problem sees (all d, or a working set).
        onehot: (B, n, K) one-hot labels.

    Example:
        >>> from metasparse.solvers import GroupLassoSVM
        >>> X = torch.randn(2, 6, 4).double(); Y = torch.eye(3).double().repeat(2, 2, 1)
        >>> problem, alpha = DualProblem(GroupLassoSVM(0.1), X, Y), torch.full_like(Y, 1 / 3)
        >>> problem.gradient(alpha).shape, problem.gap(alpha).shape
        (torch.Size([2, 6, 3]), torch.Size([2]))
    """

    def __init__(self, parameters: SVMParameters, support: torch.Tensor, onehot: torch.Tensor) -> None:
        self.parameters, self.support, self.onehot = parameters, support, onehot
        self.gram = support @ support.mT
        lambda2, dual_reg = parameters.lambda2, parameters.dual_reg
        self.lipschitz = (torch.linalg.eigvalsh(self.gram)[..., -1] + dual_reg) / lambda2
        # grad D = (dual_reg alpha - K(alpha)) / lambda2 + (1 - dual_reg / lambda2) Y, with
        # K(alpha) = X BST(X^T Y - X^T alpha): the constant parts once, two fused ops per gradient
        self.smoothing = dual_reg / lambda2
        self.offset = (1 - self.smoothing) * onehot
        self.quadratic = without_group_lasso(parameters.lambda1)
        if self.quadratic:  # BST is the identity: K(alpha) = G Y - G alpha with the n x n Gram
            self.offset = self.offset - self.gram @ onehot / lambda2
        # FISTA's forward step alpha - grad D(alpha) / L (`gradient_step`) is decay * alpha + constant
        # + matrix @ (-alpha, or BST(.)^T): the step 1 / L folded into its three parts
        step = 1 / self.lipschitz[:, None, None]
        self.step_decay, self.step_constant = 1 - step * self.smoothing, -step * self.offset
        self.step_matrix = (self.gram if self.quadratic else support) * (step / lambda2)
        if not self.quadratic:
            # class-major: the correlations of every iteration are (Y - alpha)^T X, (B, K, p); with K = 5,
            # n = 5-75 and p = 64-300 this product runs 1.5-3x faster than X^T (Y - alpha)
            self.correlation_y = onehot.mT @ support
            self.offset_t = self.offset.mT.contiguous()

    @staticmethod
    def _stacked(tensor: torch.Tensor, alpha: torch.Tensor, dim: int) -> torch.Tensor:
        """(B, r, c) ``tensor`` for (B, n, K) ``alpha``; for (B, n, F, K), repeated F times along ``dim``."""
        if alpha.ndim == 3:
            return tensor
        return tensor.repeat(*(alpha.shape[2] if axis == dim else 1 for axis in range(3)))

    def _correlation(self, alpha: torch.Tensor) -> torch.Tensor:
        """(Y - alpha)^T X: (B, K, p) for (B, n, K) ``alpha``; (B, F, K, p) for (B, n, F, K)."""
        flat = alpha.reshape(*alpha.shape[:2], -1)
        correlation_y = self._stacked(self.correlation_y, alpha, 1)
        correlation = torch.baddbmm(correlation_y, flat.mT, self.support, alpha=-1)
        if alpha.ndim == 4:
            correlation = correlation.reshape(alpha.shape[0], alpha.shape[2], alpha.shape[3], -1)
        return correlation

    def _shrink_factor(self, correlation: torch.Tensor) -> torch.Tensor:
        """(B, [F,] 1, p) ``(1 - lambda1 / ||v_j||)_+`` for each feature's column v_j of ``correlation``:
        BST(v_j) = v_j times it. (From 1 / ||v_j||, two operations fewer than from ||v_j|| - lambda1.)"""
        inverse_norms = correlation.square().sum(dim=-2, keepdim=True).rsqrt_()
        lambda1 = self.parameters.lambda1
        if isinstance(lambda1, torch.Tensor):  # a zero row's 1 / 0 = inf would meet a lambda1 of 0: clamped
            inverse_norms.clamp_max_(torch.finfo(correlation.dtype).max)
            return inverse_norms.mul_(per_task(lambda1, inverse_norms)).neg_().add_(1).clamp_min_(0)
        # lambda1 > 0 here: a zero row's 1 - lambda1 * inf = -inf is clamped to 0
        return torch.rsub(inverse_norms, 1, alpha=lambda1).clamp_min_(0)

    def _excess(self, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The correlation (Y - alpha)^T X: (B, K, p) for (B, n, K) ``alpha``, (B, F, K, p) for
        (B, n, F, K); the norms of its columns (the features) and their excess over lambda1,
        ``||BST(v_j)|| = (||v_j|| - lambda1)_+``, both (B, [F,] 1, p)."""
        correlation = self._correlation(alpha)
        norms = correlation.square().sum(dim=-2, keepdim=True).sqrt_()  # vector_norm is 10x slower on dim -2
        return correlation, norms, (norms - per_task(self.parameters.lambda1, norms)).clamp_min_(0)

    def _shrunk_correlation(self, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``BST(X^T (Y - alpha), lambda1)`` = lambda2 W(alpha), transposed and shaped like the correlation
        (`_excess`), and the norms of its rows, (B, [F,] 1, p)."""
        correlation, norms, excess = self._excess(alpha)
        return correlation.mul_(excess / norms.clamp_min_(torch.finfo(norms.dtype).tiny)), excess

    def gradient(self, alpha: torch.Tensor) -> torch.Tensor:
        """grad D(alpha), shaped like ``alpha``."""
        return self._gradient_and_correlation(alpha)[0]

    def _gradient_and_correlation(
            self, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """grad D(alpha); with ``lambda1 > 0`` the correlation X^T (Y - alpha) (a (B, p, K) view) and its
        shrunk form BST(.)^T = lambda2 W(alpha)^T, (B, K, p) for (B, n, K) ``alpha``."""
        p = self.parameters
        flat = alpha.reshape(*alpha.shape[:2], -1)
        if self.quadratic:
            base = torch.add(self._stacked(self.offset, alpha, 2), flat, alpha=self.smoothing)
            return torch.baddbmm(base, self.gram, flat, alpha=1 / p.lambda2).reshape(alpha.shape), None, None
        base = torch.add(self._stacked(self.offset_t, alpha, 1), flat.mT, alpha=self.smoothing)
        correlation = self._correlation(alpha)
        shrunk = (correlation * self._shrink_factor(correlation)).reshape(base.shape[0], base.shape[1], -1)
        gradient = torch.baddbmm(base, shrunk, self.support.mT, alpha=-1 / p.lambda2).mT.reshape(alpha.shape)
        return gradient, correlation.mT, shrunk

    def gradient_step(self, alpha: torch.Tensor) -> torch.Tensor:
        """``alpha - grad D(alpha) / L`` (FISTA's forward step) for (B, n, K) ``alpha``: with the constant
        parts folded in at construction, one product and one fused update (instead of the gradient,
        then the step), in the (B, n, K) layout of alpha."""
        if self.quadratic:
            moved = torch.baddbmm(self.step_constant, self.step_matrix, alpha, alpha=-1)
        else:
            correlation = self._correlation(alpha)
            shrunk = correlation.mul_(self._shrink_factor(correlation))
            moved = torch.baddbmm(self.step_constant, self.step_matrix, shrunk.mT)
        return moved.addcmul_(self.step_decay, alpha)

    def dual(self, alpha: torch.Tensor) -> torch.Tensor:
        """D(alpha): (B,) for (B, n, K) ``alpha``, (B, F) for (B, n, F, K)."""
        p = self.parameters
        onehot = self.onehot if alpha.ndim == 3 else self.onehot[:, :, None]
        if self.quadratic:  # ||X^T (Y - alpha)||^2 through the Gram matrix
            residual = (onehot - alpha).reshape(*alpha.shape[:2], -1)
            kernel = (residual * (self.gram @ residual)).reshape(alpha.shape).sum(dim=(1, -1))
        else:  # ||BST(v)_j|| = max(||v_j|| - lambda1, 0)
            kernel = self._excess(alpha)[2].square().sum(dim=(-2, -1))
        return dual_from_kernel(kernel, alpha, onehot, p.lambda2, p.dual_reg)

    def gap(self, alpha: torch.Tensor) -> torch.Tensor:
        """(B,) relative duality gap of this problem (its feature columns only) at alpha.

        With ``lambda1 > 0``, from one product with the features each way: ``lambda2 W`` is the shrunk
        correlation S, ``lambda2^2 ||W||^2 = ||S||^2`` and ``lambda2 sum_j ||W_j|| = sum_j (||v_j|| -
        lambda1)_+``, so P and D share S and its row norms (`svm_relative_gap` is the reference)."""
        p = self.parameters
        if self.quadratic:
            return gap_from_gram(p, self.gram, self.onehot, alpha)
        shrunk, excess = self._shrunk_correlation(alpha)
        kernel = excess.square().sum(dim=(1, 2))
        scores = (shrunk @ self.support.mT).mT / p.lambda2  # X W, (B, n, K)
        penalty = kernel / (2 * p.lambda2) + per_task(p.lambda1, kernel) * excess.sum(dim=(1, 2)) / p.lambda2
        primal = smoothed_hinge(scores, self.onehot, p.dual_reg / p.lambda2) + penalty
        # `relative_gap`, where P > 0: with two classes or more, P(0) > 0 and P(W != 0) > lambda2 ||W||^2 / 2
        dual = dual_from_kernel(kernel, alpha, self.onehot, p.lambda2, p.dual_reg)
        return (primal + dual).sub_(self.onehot.shape[1]).div_(primal)

    def _of_tasks(self, index: torch.Tensor) -> DualProblem:
        """This problem for the tasks ``index`` only, from the parts already computed (no new product)."""
        restricted = copy.copy(self)
        # a QP reads its features through the Gram matrix only: the (B, n, d) features are not copied (at
        # 15 shots, d = 16000, 77 MB for each Newton step on some of the tasks)
        names = ["onehot", "gram", "lipschitz", "offset", "offset_t", "correlation_y", "step_decay",
                 "step_constant", "step_matrix"]
        if self.quadratic:
            restricted.support = None
        else:
            names.append("support")
        for name in names:
            if name in vars(self):
                setattr(restricted, name, getattr(self, name)[index])
        if isinstance(self.parameters.lambda1, torch.Tensor):  # one lambda1 per task
            restricted.parameters = copy.copy(self.parameters)
            restricted.parameters.lambda1 = self.parameters.lambda1[index]
        return restricted

    def newton_step(self, alpha: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        """For ``tasks`` (B,) bool: a projected Newton step on the face of alpha, backtracked, kept where
        it does not raise the dual objective. Only those tasks' systems are built and solved."""
        if not bool(tasks.all()):
            if not bool(tasks.any()):
                return alpha
            index = tasks.nonzero()[:, 0]
            moved = self._of_tasks(index).newton_step(alpha[index], tasks[index])
            return alpha.index_copy(0, index, moved)
        grad, correlation, shrunk = self._gradient_and_correlation(alpha)
        on_face = alpha > 0
        multiplier = (grad * on_face).sum(-1, keepdim=True) / on_face.sum(-1, keepdim=True)
        free = on_face | (grad < multiplier)  # zeros whose KKT condition fails may enter
        face = face_of(free)
        hessian = reduced_dual_hessian(self.support, correlation, self.parameters, face, self.gram)
        step = solve_on_face(hessian, face, -grad)
        # accept the largest fraction that does not increase D beyond rounding: near the optimum the
        # full step is exact, and values that agree to 1e-16 must not reject it
        p = self.parameters
        current = (self.dual(alpha) if shrunk is None  # else from ||BST(.)||^2, the kernel term of D
                   else dual_from_kernel(shrunk.square().sum(dim=(1, 2)), alpha, self.onehot, p.lambda2,
                                         p.dual_reg))
        bound = current + 8 * torch.finfo(alpha.dtype).eps * current.abs()
        chosen = project_simplex(alpha + step)
        accept = self.dual(chosen) <= bound
        if not bool(accept.all()):  # the shorter steps, in one pass, for the tasks that reject the full one
            fractions = torch.tensor(NEWTON_STEP_FRACTIONS[1:], dtype=alpha.dtype, device=alpha.device)
            candidates = project_simplex(alpha[:, :, None] + fractions[:, None] * step[:, :, None])
            shorter = self.dual(candidates) <= bound[:, None]
            first = shorter.to(torch.int8).argmax(dim=1)
            shortened = candidates[torch.arange(alpha.shape[0], device=alpha.device), :, first]
            chosen = torch.where(accept[:, None, None], chosen, shortened)
            accept |= shorter.any(dim=1)
        # then a projected-gradient step (step 1 / L: D does not rise), which zeroes entries left barely
        # positive, so that the face of the result (which the implicit backward uses) is the optimum's
        chosen = project_simplex(self.gradient_step(chosen))
        return torch.where(accept[:, None, None], chosen, alpha)
