r"""Group-lasso multiclass SVM: primal and dual objectives, duality gap, dual point and ``lambda1_max``.

For support features $X \in \mathbb{R}^{n \times d}$ and one-hot labels $Y$, the primal is

$$
\min_W \sum_i \ell_\varepsilon(W^\top x_i; y_i) + \frac{\lambda_2}{2}\|W\|_F^2
+ \lambda_1 \sum_j \|W_{j,:}\|_2, \qquad \varepsilon = \mathrm{dual\_reg} / \lambda_2,
$$

with $\ell_\varepsilon(s; y) = \max_{a \in \Delta_K} \langle a - e_y, s\rangle + 1 - a_y -
\frac{\varepsilon}{2}\|a - e_y\|^2$ (the Crammer-Singer hinge when $\varepsilon = 0$). Its dual is

$$
\min_{\alpha_i \in \Delta_K} D(\alpha) = \frac{1}{2\lambda_2}\|\mathrm{BST}(X^\top(Y - \alpha),
\lambda_1)\|_F^2 + \frac{\mathrm{dual\_reg}}{2\lambda_2}\|\alpha - Y\|_F^2 + \langle Y, \alpha\rangle,
$$

$W = \mathrm{BST}(X^\top(Y - \alpha^\star), \lambda_1) / \lambda_2$ and $P^\star = n - D^\star$.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol

import torch

from metasparse.solvers.narrow_product import narrow_matmul
from metasparse.solvers.prox import block_soft_threshold, project_simplex

__all__ = [
    "NonzeroRows",
    "SVMParameters",
    "check_svm_parameters",
    "svm_dual_objective",
    "svm_dual_point",
    "svm_lambda1_max",
    "svm_primal_objective",
    "svm_primal_weights",
    "svm_relative_gap",
    "svm_zero_solution",
]


Lambda1 = float | torch.Tensor
"""A group-lasso weight: one float for the batch, or a (B,) tensor with one per task."""


class SVMParameters(Protocol):
    """The three weights of the problem (`GroupLassoSVM` is one); ``lambda1`` may be per task."""

    lambda1: Lambda1
    lambda2: float
    dual_reg: float


def per_task(lambda1: Lambda1, like: torch.Tensor) -> float | torch.Tensor:
    """``lambda1`` shaped to broadcast against ``like`` (B, ...): a float as it is, a (B,) tensor as
    (B, 1, ..., 1) in ``like``'s dtype.

    Example:
        >>> per_task(torch.tensor([0.1, 0.2]), torch.zeros(2, 3, 4)).shape
        torch.Size([2, 1, 1])
    """
    if isinstance(lambda1, torch.Tensor):
        return lambda1.to(like.dtype).reshape(-1, *(1,) * (like.dim() - 1))
    return lambda1


def without_group_lasso(lambda1: Lambda1) -> bool:
    """Whether ``lambda1`` is 0 for every task: then BST is the identity and the dual is a QP."""
    if isinstance(lambda1, torch.Tensor):
        return not bool((lambda1 > 0).any())
    return lambda1 == 0


def feature_correlation(support: torch.Tensor, dual_residual: torch.Tensor) -> torch.Tensor:
    """``X^T (Y - alpha)``, (B, d, K) and contiguous, from ``dual_residual = Y - alpha`` (B, n, K).

    Computed as the transpose of ``(Y - alpha)^T X``, which reads X in its own layout: with K = 5 and
    d = 16000 that is about twice as fast as the product that reads X transposed.
    """
    return (dual_residual.transpose(1, 2) @ support).transpose(1, 2).contiguous()


def svm_primal_weights(support: torch.Tensor, onehot: torch.Tensor, alpha: torch.Tensor,
                       lambda1: float, lambda2: float) -> torch.Tensor:
    r"""Primal weights from dual variables: $W = \mathrm{BST}(X^\top(Y-\alpha), \lambda_1)/\lambda_2$.

    Args:
        support: (B, n, d) support features.
        onehot: (B, n, K) one-hot labels.
        alpha: (B, n, K) dual variables, rows on the simplex.
        lambda1: Group-lasso weight.
        lambda2: Ridge weight.

    Returns:
        (B, d, K) weights, differentiable in all tensor inputs.

    Example:
        >>> X = torch.ones(1, 2, 3); Y = torch.eye(2)[None]
        >>> svm_primal_weights(X, Y, torch.full((1, 2, 2), 0.5), 0.0, 1.0).shape
        torch.Size([1, 3, 2])
    """
    return weights_from_dual_residual(support, onehot - alpha, lambda1, lambda2)


def feature_norms(support: torch.Tensor, dual_residual: torch.Tensor) -> torch.Tensor:
    """(B, d) norms of the rows of X^T (Y - alpha) from ``dual_residual = Y - alpha``: feature j is
    active iff its norm exceeds lambda1."""
    # as (Y - alpha)^T X, (B, K, d): with K = 5 and d = 16000 the product X^T (Y - alpha), which reads X
    # transposed, takes 2-3x longer; and the sum over K of squares beats a strided vector_norm (squared in
    # place: a second (B, K, d) temporary costs 1.5-2.5 ms at 15 shots, d = 16000)
    return (dual_residual.transpose(1, 2) @ support).square_().sum(dim=1).sqrt_()


def weights_from_dual_residual(support: torch.Tensor, dual_residual: torch.Tensor, lambda1: float,
                               lambda2: float) -> torch.Tensor:
    r"""$W = \mathrm{BST}(X^\top\beta, \lambda_1)/\lambda_2$ from $\beta = Y - \alpha$ (B, n, K).

    Passing $\beta$ rather than $\alpha$ keeps W exact in float32 when $\beta$ is tiny (large features:
    $\alpha$ close to Y), where $Y - \alpha$ computed in float32 would cancel.
    """
    correlation = feature_correlation(support, dual_residual)
    # BST(., 0) is the identity, but its autograd gradient at a zero row is zero (all-zero features)
    if without_group_lasso(lambda1):
        return correlation / lambda2
    return block_soft_threshold(correlation, per_task(lambda1, correlation)) / lambda2


def nonzero_rows(weights: torch.Tensor) -> torch.Tensor:
    """(B, width) indices of the nonzero rows of ``weights`` (B, d, K), as many as the task with the most
    (at least 1); in tasks with fewer, zero rows fill in.

    Example:
        >>> W = torch.zeros(2, 5, 3); W[0, 1] = 1.0; W[1, 4] = 1.0
        >>> nonzero_rows(W)
        tensor([[1],
                [4]])
    """
    nonzero = weights.detach().abs().amax(dim=-1) > 0
    return _first_rows(nonzero, int(nonzero.sum(dim=-1).max()))


def _first_rows(nonzero: torch.Tensor, width: int) -> torch.Tensor:
    """(B, max(width, 1)) indices of the True entries of ``nonzero`` (B, d), padded with False ones."""
    return nonzero.to(torch.int8).topk(max(1, width), dim=-1).indices


def feature_columns(support: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """The (B, n, width) columns ``columns`` (B, width) of ``support`` (B, n, d)."""
    return support.gather(2, columns[:, None, :].expand(-1, support.shape[1], -1))


class NonzeroRows(NamedTuple):
    """Weights W (B, d, K) held as their nonzero rows: ``rows`` (B, width, K) are the rows of the features
    ``columns`` (B, width), as wide as the task with the most (zero rows fill in); the other rows of W are
    zero. ``columns=None``: ``rows`` are all d rows, W itself.

    Example:
        >>> W = NonzeroRows(torch.ones(1, 1, 2), torch.tensor([[2]]), n_features=3)
        >>> W.dense()[0].tolist(), W.scores(torch.arange(3.0).reshape(1, 1, 3)).tolist()
        ([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]], [[[2.0, 2.0]]])
    """

    rows: torch.Tensor
    columns: torch.Tensor | None
    n_features: int

    def dense(self) -> torch.Tensor:
        """W, (B, d, K), differentiable in ``rows``."""
        if self.columns is None:
            return self.rows
        weights = self.rows.new_zeros(self.rows.shape[0], self.n_features, self.rows.shape[-1])
        return weights.scatter(1, self.columns[..., None].expand_as(self.rows), self.rows)

    def scores(self, support: torch.Tensor) -> torch.Tensor:
        """``X W`` (B, n, K) for ``support`` X (B, n, d), through the nonzero rows: one gather of X's columns
        (and, backward, one scatter), not a product over all d."""
        if self.columns is None:
            return narrow_matmul(support, self.rows)
        return narrow_matmul(feature_columns(support, self.columns), self.rows)


def scores_through_nonzero_rows(support: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``X W`` (B, n, K), through the nonzero rows of W only where they are fewer than a quarter of them.

    Group-lasso weights at d = 16000 have tens of nonzero rows: the product through them skips a pass
    over the (B, n, d) features.

    Example:
        >>> X = torch.randn(2, 4, 100); W = torch.zeros(2, 100, 3); W[:, 7] = 1.0
        >>> torch.allclose(scores_through_nonzero_rows(X, W), X @ W)
        True
    """
    nonzero = weights.detach().abs().amax(dim=-1) > 0
    width = int(nonzero.sum(dim=-1).max()) if nonzero.numel() else weights.shape[1]
    if 4 * width >= weights.shape[1]:  # dense enough (a working set, or empty): no index to build
        return narrow_matmul(support, weights)
    rows = _first_rows(nonzero, width)
    nonzero_weights = weights.gather(1, rows[..., None].expand(-1, -1, weights.shape[-1]))
    return narrow_matmul(feature_columns(support, rows), nonzero_weights)


def svm_dual_point(scores: torch.Tensor, onehot: torch.Tensor, eps: float) -> torch.Tensor:
    r"""The maximiser $a^\star$ in $\ell_\varepsilon(s; y)$, row by row.

    With $c = s + 1 - e_y$: $a^\star = \Pi_\Delta(e_y + c / \varepsilon)$ for
    $\varepsilon > 0$, and the one-hot of $\arg\max_k c_k$ for $\varepsilon = 0$.
    At the optimum it equals $\alpha^\star$, so it turns any W into a dual point.

    Example:
        >>> svm_dual_point(torch.zeros(1, 1, 2), torch.tensor([[[1.0, 0.0]]]), 1.0)
        tensor([[[0.5000, 0.5000]]])
    """
    return _dual_point_of_margins((scores - onehot).add_(1), onehot, eps)


def _dual_point_of_margins(margins: torch.Tensor, onehot: torch.Tensor, eps: float) -> torch.Tensor:
    """`svm_dual_point` from the margins ``c = s + 1 - e_y``."""
    if eps > 0:
        return project_simplex(torch.add(onehot, margins, alpha=1 / eps))
    return torch.nn.functional.one_hot(margins.argmax(dim=-1), onehot.shape[-1]).to(margins.dtype)


def smoothed_hinge(scores: torch.Tensor, onehot: torch.Tensor, eps: float) -> torch.Tensor:
    """(B,) sum over samples of the smoothed Crammer-Singer hinge of ``scores`` (B, n, K)."""
    # per sample max_a <a, m> - <y, s> - eps / 2 ||a - y||^2 over the simplex, m = s + 1 - y, attained at
    # svm_dual_point; summed over samples and classes at once
    margins = (scores - onehot).add_(1)
    a = _dual_point_of_margins(margins, onehot, eps)
    difference = a - onehot
    terms = torch.addcmul(a * margins - onehot * scores, difference, difference, value=-eps / 2)
    return terms.sum(dim=(1, 2))


def _penalty(weights: torch.Tensor, lambda1: Lambda1, lambda2: float) -> torch.Tensor:
    ridge = lambda2 / 2 * (weights**2).sum(dim=(1, 2))
    group_norms = torch.linalg.vector_norm(weights, dim=-1).sum(dim=-1)
    return ridge + per_task(lambda1, group_norms) * group_norms


def svm_primal_objective(weights: torch.Tensor, support: torch.Tensor, onehot: torch.Tensor,
                         lambda1: float, lambda2: float, dual_reg: float) -> torch.Tensor:
    """(B,) primal objective P(W) of the group-lasso SVM (module docstring).

    Example:
        >>> X = torch.randn(1, 4, 3); Y = torch.eye(2).repeat(1, 2, 1)
        >>> float(svm_primal_objective(torch.zeros(1, 3, 2), X, Y, 0.1, 10.0, 1.0)) > 0
        True
    """
    scores = scores_through_nonzero_rows(support, weights)
    return smoothed_hinge(scores, onehot, dual_reg / lambda2) + _penalty(weights, lambda1, lambda2)


def svm_dual_objective(alpha: torch.Tensor, support: torch.Tensor, onehot: torch.Tensor,
                       lambda1: float, lambda2: float, dual_reg: float) -> torch.Tensor:
    """(B,) dual objective D(alpha) of the group-lasso SVM (module docstring).

    Example:
        >>> X = torch.randn(1, 4, 3); Y = torch.eye(2).repeat(1, 2, 1)
        >>> svm_dual_objective(torch.full_like(Y, 0.5), X, Y, 0.1, 10.0, 1.0).shape
        torch.Size([1])
    """
    weights = svm_primal_weights(support, onehot, alpha, lambda1, lambda2)
    return dual_from_weights(weights, alpha, onehot, lambda2, dual_reg)


def dual_from_weights(weights: torch.Tensor, alpha: torch.Tensor, onehot: torch.Tensor, lambda2: float,
                      dual_reg: float) -> torch.Tensor:
    """D(alpha) given ``weights = W(alpha)``: ||BST(.)||^2 = lambda2^2 ||W||^2."""
    return dual_from_kernel(lambda2**2 * (weights**2).sum(dim=(1, 2)), alpha, onehot, lambda2, dual_reg)


def dual_from_kernel(kernel: torch.Tensor, alpha: torch.Tensor, onehot: torch.Tensor, lambda2: float,
                     dual_reg: float) -> torch.Tensor:
    """D(alpha) given ``kernel = ||BST(X^T (Y - alpha), lambda1)||^2``; sums over the samples (dim 1) and
    classes (last dim) of ``alpha`` and ``onehot``, so stacked points (B, n, F, K) give (B, F)."""
    difference = alpha - onehot
    terms = torch.addcmul(onehot * alpha, difference, difference, value=dual_reg / (2 * lambda2))
    return kernel / (2 * lambda2) + terms.sum(dim=(1, -1))


def svm_relative_gap(weights: torch.Tensor, alpha: torch.Tensor, support: torch.Tensor,
                     onehot: torch.Tensor, lambda1: float, lambda2: float, dual_reg: float) -> torch.Tensor:
    """(B,) relative duality gap ``(P(W) - (n - D(alpha))) / P(W)``, zero exactly at the optimum.

    A task whose primal objective is zero (one class: every loss and weight is zero) has gap 0.

    Example:
        >>> X = torch.randn(1, 4, 3); Y = torch.eye(2).repeat(1, 2, 1); a = torch.full_like(Y, 0.5)
        >>> W = svm_primal_weights(X, Y, a, 0.1, 10.0)
        >>> bool(svm_relative_gap(W, a, X, Y, 0.1, 10.0, 1.0) >= 0)
        True
    """
    primal = svm_primal_objective(weights, support, onehot, lambda1, lambda2, dual_reg)
    dual = svm_dual_objective(alpha, support, onehot, lambda1, lambda2, dual_reg)
    return relative_gap(primal, dual, onehot)


def relative_gap(primal: torch.Tensor, dual: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """(P - (n - D)) / P: strong duality reads P* = n - D*; 0 where P = 0."""
    gap = primal + dual - onehot.shape[1]
    return torch.where(primal > 0, gap / primal.clamp_min(torch.finfo(primal.dtype).tiny), gap.abs())


def gap_from_gram(parameters: SVMParameters, gram: torch.Tensor, onehot: torch.Tensor,
                  alpha: torch.Tensor) -> torch.Tensor:
    """`svm_relative_gap` at (W(alpha), alpha) for ``lambda1 = 0``, from the (B, n, n) Gram matrix
    ``X X^T``, with no product over the d features: ``W = X^T (Y - alpha) / lambda2`` gives
    ``X W = G (Y - alpha) / lambda2`` and ``lambda2^2 ||W||^2 = <Y - alpha, G (Y - alpha)>``.

    Example:
        >>> from metasparse.solvers import GroupLassoSVM
        >>> X = torch.randn(1, 4, 30).double(); Y = torch.eye(2).double().repeat(1, 2, 1)
        >>> a, svm = torch.full_like(Y, 0.5), GroupLassoSVM(0.0)
        >>> expected = svm_relative_gap(svm_primal_weights(X, Y, a, 0.0, 10.0), a, X, Y, 0.0, 10.0, 1.0)
        >>> bool(torch.allclose(gap_from_gram(svm, X @ X.mT, Y, a), expected))
        True
    """
    p = parameters
    residual = onehot - alpha
    correlated = gram @ residual
    kernel = (residual * correlated).sum(dim=(1, 2))
    hinge = smoothed_hinge(correlated / p.lambda2, onehot, p.dual_reg / p.lambda2)
    primal = hinge + kernel / (2 * p.lambda2)
    return relative_gap(primal, dual_from_kernel(kernel, alpha, onehot, p.lambda2, p.dual_reg), onehot)


def svm_zero_solution(onehot: torch.Tensor, lambda2: float, dual_reg: float) -> torch.Tensor:
    r"""(B, n, K) dual solution when $W = 0$ is optimal: $\alpha^0_i = \Pi_\Delta((1 - \lambda_2 /
    \mathrm{dual\_reg})\, e_{y_i})$, the minimiser of the dual without its kernel term.

    Example:
        >>> svm_zero_solution(torch.tensor([[[1.0, 0.0]]]), lambda2=10.0, dual_reg=1.0)
        tensor([[[0., 1.]]])
    """
    return project_simplex((1 - lambda2 / dual_reg) * onehot)


def svm_lambda1_max(support: torch.Tensor, onehot: torch.Tensor, lambda2: float,
                    dual_reg: float) -> torch.Tensor:
    r"""(B,) smallest $\lambda_1$ at which the group-lasso SVM's weights are all zero, no gradient.

    With $W = 0$ the dual reduces to $\frac{\mathrm{dual\_reg}}{2\lambda_2}\|\alpha - Y\|^2 +
    \langle Y, \alpha\rangle$, minimised by $\alpha^0$ (`svm_zero_solution`), and $W = 0$ is optimal
    iff every row of $X^\top(Y - \alpha^0)$ has norm at most $\lambda_1$. Requires ``dual_reg > 0``.

    Example:
        >>> from metasparse.solvers import GroupLassoSVM
        >>> X = torch.randn(1, 10, 8); Y = torch.eye(5).repeat(1, 2, 1)
        >>> lam = svm_lambda1_max(X, Y, lambda2=10.0, dual_reg=1.0)
        >>> bool((GroupLassoSVM(float(lam) * 1.01, 10.0, 1.0).solve(X, Y)[0] == 0).all())
        True
    """
    with torch.no_grad():
        alpha = svm_zero_solution(onehot, lambda2, dual_reg)
        return feature_norms(support, onehot - alpha).amax(dim=-1)


def check_svm_parameters(lambda1: float, lambda2: float, dual_reg: float, native: bool) -> None:
    """Raise ``ValueError`` naming the parameter unless ``lambda1 >= 0``, ``lambda2 > 0`` and
    ``dual_reg > 0`` (native solver) or ``dual_reg >= 0`` (cvxpylayers), all finite.

    Example:
        >>> check_svm_parameters(0.1, float("inf"), 1.0, native=True)
        Traceback (most recent call last):
        ...
        ValueError: lambda2 must be finite and > 0, got inf
    """
    if not 0 <= lambda1 < math.inf:
        raise ValueError(f"lambda1 must be finite and >= 0, got {lambda1!r}")
    if not 0 < lambda2 < math.inf:
        raise ValueError(f"lambda2 must be finite and > 0, got {lambda2!r}")
    if native and not dual_reg > 0:
        raise ValueError(f"dual_reg must be > 0 for the native solver, got {dual_reg!r}; "
                         "use solver='cvxpylayers' for the unsmoothed hinge (dual_reg=0)")
    if not 0 <= dual_reg < math.inf:
        raise ValueError(f"dual_reg must be finite and >= 0, got {dual_reg!r}")
