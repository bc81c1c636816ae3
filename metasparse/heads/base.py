"""The episodic head: fit a base learner on each episode's support set, score its query set."""

from __future__ import annotations

import operator

import torch
from torch import nn

from metasparse.heads.validation import (
    check_classification_support,
    check_flag,
    check_number,
    check_query,
    compute_dtype,
)
from metasparse.solvers.diagnostics import SolverInfo
from metasparse.solvers.narrow_product import narrow_matmul

__all__ = ["EpisodicHead", "empty_info"]


def empty_info(like: torch.Tensor, tol: float | None, max_iter: int, solver: str) -> SolverInfo:
    """The diagnostics of a batch of zero episodes: empty (0,) tensors."""
    empty = like.new_zeros(0)
    return SolverInfo(iterations=empty.long(), converged=empty.bool(), residual=empty, active=empty.long(),
                      sparsity=empty, tol=tol, max_iter=max_iter, solver=solver)


class EpisodicHead(nn.Module):
    """Base class of the classification heads, batched over episodes.

    Subclasses implement `_solve` (and `_scores` when the scores are not ``query @ W``; `_fit_scores` to
    score a query without the dense weights).
    Two calling conventions are supported:

    * MetaOptNet's: ``logits = head(query, support, support_labels, n_way, n_shot=None)``;
    * learn2learn's: ``head.fit_(support, support_labels, n_way)`` then ``logits = head(query)``.

    Shapes: support (B, n, d), support_labels (B, n) int in [0, n_way), query (B, m, d) -> logits
    (B, m, n_way); or unbatched (n, d), (n,), (m, d) -> (m, n_way). A batch of B = 0 episodes gives
    empty results of those shapes.

    Dtypes and devices: support and query must share one dtype and one device (labels: that device),
    else `ValueError`. Everything runs on that device and in that dtype, except half precision
    (float16, bfloat16): it is computed in float32 and the results come back in the input dtype.

    Args:
        learn_scale: Make the logit scale a learnable parameter, as in MetaOptNet.
        scale: Initial logit scale, a finite number.

    Example:
        A new head is a subclass with a `_solve`: here nearest class mean under the dot product.

        >>> class MeanHead(EpisodicHead):
        ...     def _solve(self, support, labels, n_way):
        ...         onehot = torch.nn.functional.one_hot(labels, n_way).to(support.dtype)
        ...         return support.transpose(1, 2) @ (onehot / onehot.sum(1, keepdim=True))
        >>> head = MeanHead(learn_scale=False)
        >>> support, labels = torch.eye(2).repeat(1, 2, 1), torch.tensor([[0, 1, 0, 1]])
        >>> head(torch.tensor([[[0.9, 0.1]]]), support, labels, n_way=2).argmax(-1)
        tensor([[0]])
    """

    def __init__(self, learn_scale: bool = True, scale: float = 1.0) -> None:
        super().__init__()
        initial = torch.tensor(check_number(scale, "scale"))
        if check_flag(learn_scale, "learn_scale"):
            self.scale = nn.Parameter(initial)
        else:
            self.register_buffer("scale", initial)
        self.last_info: SolverInfo | None = None
        self._fitted: tuple[torch.Tensor, bool, torch.dtype] | None = None

    def _solve(self, support: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
        """(B, d, n_way) weights from validated, batched support (B, n, d), B >= 1, and labels (B, n);
        sets `last_info`."""
        raise NotImplementedError

    def _empty_info(self, support: torch.Tensor) -> SolverInfo:
        """`last_info` of a batch of zero episodes."""
        return empty_info(support, tol=0.0, max_iter=1, solver="closed_form")

    def _scores(self, query: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """(B, m, n_way) unscaled scores of the query under the fitted weights."""
        return narrow_matmul(query, weights)

    def _fit_scores(self, query: torch.Tensor, support: torch.Tensor, labels: torch.Tensor,
                    n_way: int) -> torch.Tensor:
        """(B, m, n_way) unscaled scores of the query under the weights fitted on the support: `_fit`, then
        `_scores`; a head that scores without forming its dense weights overrides it."""
        weights = self._fit(support, labels, n_way)
        return self._scores(query.to(weights.dtype), weights)

    def _fit(self, support: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
        """`_solve` in the compute dtype (see the class docstring), or empty weights for B = 0."""
        support = support.to(compute_dtype(support.dtype))
        if support.shape[0] == 0:
            self.last_info = self._empty_info(support)
            # a product, not new_zeros: the empty weights stay attached to the support's graph
            return support.transpose(1, 2) @ support.new_zeros(0, support.shape[1], n_way)
        return self._solve(support, labels, n_way)

    def solve(self, support: torch.Tensor, support_labels: torch.Tensor, n_way: int) -> torch.Tensor:
        """Fit the base learner; return its weights, (B, d, n_way) or (d, n_way), differentiable.

        Diagnostics of the fit are in `last_info`.
        """
        support, labels, unbatched = check_classification_support(support, support_labels, n_way)
        weights = self._fit(support, labels, operator.index(n_way)).to(support.dtype)
        return weights[0] if unbatched else weights

    def fit_(self, support: torch.Tensor, support_labels: torch.Tensor,
             n_way: int | None = None) -> EpisodicHead:
        """learn2learn-style fit: keep the weights for later ``head(query)`` calls.

        ``n_way`` defaults to ``support_labels.max() + 1``.
        """
        if n_way is None and isinstance(support_labels, torch.Tensor) and support_labels.numel():
            n_way = int(support_labels.max()) + 1
        support, labels, unbatched = check_classification_support(support, support_labels, n_way)
        self._fitted = (self._fit(support, labels, operator.index(n_way)), unbatched, support.dtype)
        return self

    def forward(self, query: torch.Tensor, support: torch.Tensor | None = None,
                support_labels: torch.Tensor | None = None, n_way: int | None = None,
                n_shot: int | None = None) -> torch.Tensor:
        """Logits of the query set, fitting on the given support set or on the one passed to ``fit_``."""
        if support is None:
            if self._fitted is None:
                raise ValueError("support and support_labels are required unless fit_() was called first")
            weights, unbatched, dtype = self._fitted
            reference = torch.empty(weights.shape[0], 0, weights.shape[1], dtype=dtype, device=weights.device)
        else:
            if support_labels is None or n_way is None:
                raise ValueError("support_labels and n_way are required together with support")
            reference, labels, unbatched = check_classification_support(support, support_labels, n_way,
                                                                        n_shot)
        query = check_query(query, reference, unbatched)  # before the solve: a bad query fails at once
        if support is None:
            scores = self._scores(query.to(weights.dtype), weights)
        else:
            scores = self._fit_scores(query, reference, labels, operator.index(n_way))
        logits = (self.scale.to(scores.dtype) * scores).to(query.dtype)
        return logits[0] if unbatched else logits
