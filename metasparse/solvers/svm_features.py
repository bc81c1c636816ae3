r"""The support features of a working-set solve, read at full width in the caller's precision only.

A working-set solve of the group-lasso SVM dual needs two things from all $d$ features: the norms of
the rows of $X^\top(Y - \alpha)$ (a feature is active iff its norm exceeds $\lambda_1$), and the
columns of the features a problem works on, in float64. `SupportFeatures` computes the norms in the
dtype of the features (float32 at ResNet-12 size: d = 16000, 15 shots) and recomputes in float64 the
few norms that float32 cannot place on either side of the threshold, so that every comparison with
$\lambda_1$ is that of float64; the columns are gathered first, then converted. The (B, n, d) features
are never copied to float64. Float64 features (and the solves on all features, which need them) keep
the float64 code path: full-width products, no recomputation.
"""

from __future__ import annotations

import torch

from metasparse.solvers.svm_face import active_features, select_features
from metasparse.solvers.svm_objective import (
    SVMParameters,
    dual_from_weights,
    feature_columns,
    feature_norms,
    nonzero_rows,
    per_task,
    relative_gap,
    svm_primal_objective,
    weights_from_dual_residual,
    without_group_lasso,
)

__all__ = ["SupportFeatures"]


class SupportFeatures:
    r"""(B, n, d) support features in their own dtype, with float64 norms near a threshold and float64
    columns on demand.

    In float32, a row of $X^\top R$ ($R = Y - \alpha$, rounded to float32) is off by at most
    $\gamma_{n+1} \max|X| \|R\|_1$ in norm (recursive summation, $\gamma_m = m u$ with $u$ the unit
    roundoff), and its norm adds $\gamma_{K+2}$ relative: a norm within twice the sum of both of the
    threshold is recomputed in float64.

    Args:
        support: (B, n, d) features, any float dtype, without gradient.

    Example:
        >>> from metasparse.solvers.svm_objective import feature_norms
        >>> X = torch.randn(2, 6, 40); Y = torch.eye(3).repeat(2, 2, 1).double()
        >>> norms = SupportFeatures(X).norms(Y - 1 / 3, threshold=1.0)
        >>> bool(((norms > 1.0) == (feature_norms(X.double(), Y - 1 / 3) > 1.0)).all())
        True
    """

    def __init__(self, support: torch.Tensor) -> None:
        self.support = support.detach()
        self.shape = self.support.shape
        self.exact = self.support.dtype == torch.float64
        if not self.exact:
            # max |X| per task from read-only passes, without the (B, n, d) temporary of abs(); amin and
            # amax, not aminmax: with dim=1, aminmax takes a slow path (22 against 2.3 ms at (8, 75, 16000))
            flat = self.support.flatten(1)
            self._max_abs = torch.maximum(-flat.amin(dim=1), flat.amax(dim=1)).double()  # (B,)

    def __getitem__(self, tasks: torch.Tensor) -> SupportFeatures:
        """These features for the tasks ``tasks`` (indices)."""
        restricted = SupportFeatures.__new__(SupportFeatures)
        restricted.support, restricted.exact = self.support[tasks], self.exact
        restricted.shape = restricted.support.shape
        if not self.exact:
            restricted._max_abs = self._max_abs[tasks]
        return restricted

    def columns(self, index: torch.Tensor) -> torch.Tensor:
        """The (B, n, width) float64 columns ``index`` (B, width)."""
        return feature_columns(self.support, index).double()

    def select(self, scores: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The (B, n, size) float64 columns with the largest ``scores`` (B, d), and their indices."""
        working, index = select_features(self.support, scores, size)
        return working.double(), index

    def norms(self, dual_residual: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
        """(B, d) float64 norms of the rows of X^T (Y - alpha) from ``dual_residual = Y - alpha``
        (float64), exact (float64) wherever rounding could put one on the other side of ``threshold``
        (a float or (B,) per task)."""
        if self.exact:
            return feature_norms(self.support, dual_residual)
        norms = feature_norms(self.support, dual_residual.to(self.support.dtype)).double()
        unit = torch.finfo(self.support.dtype).eps / 2
        n, k = dual_residual.shape[1], dual_residual.shape[2]
        row_error = (n + 1) * unit * self._max_abs * dual_residual.abs().sum(dim=(1, 2))  # (B,)
        threshold = per_task(threshold, norms)
        # |norm - threshold| <= 2 (row_error + (k + 2) unit norm) implies the per-task bound below, since
        # norm <= threshold + |norm - threshold|: no pass over the (B, d) norms to form the margin
        relative = 2 * (k + 2) * unit
        margin = (2 * row_error[:, None] + relative * threshold) / (1 - relative)
        uncertain = (norms - threshold).abs_() <= margin
        count = int(uncertain.sum(dim=-1).max())
        if count == 0:
            return norms
        index = uncertain.to(torch.int8).topk(count, dim=-1).indices  # uncertain first, then others
        exact = feature_norms(self.columns(index), dual_residual)
        return norms.scatter(1, index, torch.where(uncertain.gather(1, index), exact, norms.gather(1, index)))

    def active_rows(self, parameters: SVMParameters, onehot: torch.Tensor, alpha: torch.Tensor,
                    norms: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """W(alpha) in float64 on its nonzero rows: ``(rows (B, width, K), columns (B, width))``, the
        columns of the features active at alpha (``norms`` at alpha when known), as wide as the task
        with the most; the other rows of W are exactly zero. With ``lambda1 = 0``: all d rows, ``None``."""
        lambda1, lambda2 = parameters.lambda1, parameters.lambda2
        if without_group_lasso(lambda1):
            return weights_from_dual_residual(self.support.double(), onehot - alpha, lambda1, lambda2), None
        norms = self.norms(onehot - alpha, lambda1) if norms is None else norms
        active, columns = active_features(self.support, norms, lambda1)
        return weights_from_dual_residual(active.double(), onehot - alpha, lambda1, lambda2), columns

    def gap(self, parameters: SVMParameters, onehot: torch.Tensor, alpha: torch.Tensor,
            norms: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) relative duality gap of the problem on all d features at alpha, through its active
        columns: the inactive features add nothing to W(alpha), to X W or to D."""
        rows, columns = self.active_rows(parameters, onehot, alpha, norms)
        primal = self.primal_objective(parameters, rows, onehot, columns)
        return relative_gap(primal, dual_from_weights(rows, alpha, onehot, parameters.lambda2,
                                                      parameters.dual_reg), onehot)

    def primal_objective(self, parameters: SVMParameters, weights: torch.Tensor, onehot: torch.Tensor,
                         columns: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) P(W) in float64 for float64 ``weights``: (B, d, K), through their nonzero rows; or with
        ``columns`` (B, width), the rows (B, width, K) of those features, the other rows being zero."""
        if columns is None:
            if self.exact:
                return svm_primal_objective(weights, self.support, onehot, parameters.lambda1,
                                            parameters.lambda2, parameters.dual_reg)
            columns = nonzero_rows(weights)
            weights = weights.gather(1, columns[..., None].expand(-1, -1, weights.shape[-1]))
        return svm_primal_objective(weights, self.columns(columns), onehot, parameters.lambda1,
                                    parameters.lambda2, parameters.dual_reg)
