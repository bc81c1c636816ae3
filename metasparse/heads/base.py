"""The episodic head: fit a base learner on each episode's support set, score its query set."""

from __future__ import annotations

import torch
from torch import nn

from metasparse.heads.validation import check_classification_support, check_query
from metasparse.solvers.diagnostics import SolverInfo

__all__ = ["EpisodicHead"]


class EpisodicHead(nn.Module):
    """Base class of the classification heads, batched over episodes.

    Subclasses implement `_solve` (and `_scores` when the scores are not ``query @ W``).
    Two calling conventions are supported:

    * MetaOptNet's: ``logits = head(query, support, support_labels, n_way, n_shot=None)``;
    * learn2learn's: ``head.fit_(support, support_labels, n_way)`` then ``logits = head(query)``.

    Shapes: support (B, n, d), support_labels (B, n) int in [0, n_way), query (B, m, d) -> logits
    (B, m, n_way); or unbatched (n, d), (n,), (m, d) -> (m, n_way). Everything runs on the device and in
    the dtype of the inputs.

    Args:
        learn_scale: Make the logit scale a learnable parameter, as in MetaOptNet.
        scale: Initial logit scale.
    """

    def __init__(self, learn_scale: bool = True, scale: float = 1.0) -> None:
        super().__init__()
        initial = torch.tensor(float(scale))
        if learn_scale:
            self.scale = nn.Parameter(initial)
        else:
            self.register_buffer("scale", initial)
        self.last_info: SolverInfo | None = None
        self._fitted: tuple[torch.Tensor, bool] | None = None

    def _solve(self, support: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
        """(B, d, n_way) weights from validated, batched support (B, n, d) and labels (B, n)."""
        raise NotImplementedError

    def _scores(self, query: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """(B, m, n_way) unscaled scores of the query under the fitted weights."""
        return query @ weights

    def solve(self, support: torch.Tensor, support_labels: torch.Tensor, n_way: int) -> torch.Tensor:
        """Fit the base learner; return its weights, (B, d, n_way) or (d, n_way), differentiable.

        Diagnostics of the fit are in `last_info`.
        """
        support, labels, unbatched = check_classification_support(support, support_labels, n_way)
        weights = self._solve(support, labels, n_way)
        return weights[0] if unbatched else weights

    def fit_(self, support: torch.Tensor, support_labels: torch.Tensor,
             n_way: int | None = None) -> EpisodicHead:
        """learn2learn-style fit: keep the weights for later ``head(query)`` calls.

        ``n_way`` defaults to ``support_labels.max() + 1``.
        """
        if n_way is None and isinstance(support_labels, torch.Tensor) and support_labels.numel():
            n_way = int(support_labels.max()) + 1
        support, labels, unbatched = check_classification_support(support, support_labels, n_way)
        self._fitted = (self._solve(support, labels, n_way), unbatched)
        return self

    def forward(self, query: torch.Tensor, support: torch.Tensor | None = None,
                support_labels: torch.Tensor | None = None, n_way: int | None = None,
                n_shot: int | None = None) -> torch.Tensor:
        """Logits of the query set, fitting on the given support set or on the one passed to ``fit_``."""
        if support is None:
            if self._fitted is None:
                raise ValueError("support and support_labels are required unless fit_() was called first")
            weights, unbatched = self._fitted
            reference = torch.empty(weights.shape[0], 0, weights.shape[1], device=weights.device)
        else:
            if support_labels is None or n_way is None:
                raise ValueError("support_labels and n_way are required together with support")
            reference, labels, unbatched = check_classification_support(support, support_labels, n_way,
                                                                        n_shot)
            weights = self._solve(reference, labels, n_way)
        query = check_query(query, reference, unbatched)
        logits = self.scale.to(query.dtype) * self._scores(query, weights)
        return logits[0] if unbatched else logits
