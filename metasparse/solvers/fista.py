"""Batched accelerated proximal gradient (FISTA with adaptive restart)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import torch

__all__ = ["STALL_RATIO", "FistaResult", "fista"]

STALL_RATIO = 0.8
"""A task stalls when its gap is above this fraction of its gap one check earlier."""


class FistaResult(NamedTuple):
    """Solution and per-task convergence record of `fista`."""

    solution: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor
    residual: torch.Tensor
    feature_norms: torch.Tensor | None = None
    """Where a caller computed them at ``solution`` (a working-set solve): the norms that decide which
    features are active, so that the next stage need not compute them again."""


def _batch_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vecdot(a.flatten(1), b.flatten(1))


def _momentum_table(length: int, like: torch.Tensor) -> torch.Tensor:
    """Nesterov's momentum ``beta_k = (t_{k-1} - 1) / t_k`` for ``k <= length``, with ``t_0 = 1`` and
    ``t_k = (1 + sqrt(1 + 4 t_{k-1}^2)) / 2``; index 0 (just restarted) is 0."""
    # for the next power of two, so that the caps a solver passes share a few cached tables (a table of
    # 2048 values takes longer to build than a dozen iterations at few-shot sizes)
    return _cached_momentum_table(1 << length.bit_length(), like.dtype, like.device)


@functools.lru_cache(maxsize=16)
def _cached_momentum_table(length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """`_momentum_table` of ``length`` values; built outside inference mode, so that any caller can use it."""
    t, betas = 1.0, [0.0]
    for _ in range(length):
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        betas.append((t - 1) / t_next)
        t = t_next
    with torch.inference_mode(False):
        return torch.tensor(betas, dtype=dtype, device=device)


def _per_task(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.reshape(-1, *([1] * (like.ndim - 1)))


@torch.no_grad()
def fista(x0: torch.Tensor, gradient: Callable[[torch.Tensor], torch.Tensor],
          prox: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], step: torch.Tensor,
          gap: Callable[[torch.Tensor], torch.Tensor], max_iter: int, tol: float | None,
          check_every: int = 10,
          refine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
          gradient_step: Callable[[torch.Tensor], torch.Tensor] | None = None) -> FistaResult:
    r"""Minimise $f(x) + g(x)$ for a batch of independent problems.

    Iterates $x_{t+1} = \mathrm{prox}_{s g}(y_t - s \nabla f(y_t))$ with Nesterov momentum,
    restarting the momentum of a task when it stops decreasing (O'Donoghue and Candès, 2015). Every
    ``check_every`` iterations the relative duality ``gap`` is evaluated and tasks below ``tol`` are
    frozen, so a task's result does not depend on the other tasks of its batch.

    Args:
        x0: (B, ...) starting point.
        gradient: ``x -> grad f(x)``, batched.
        prox: ``(x, step) -> prox_{step g}(x)``, batched.
        step: (B,) step sizes, at most ``1 / L`` with ``L`` the Lipschitz constant of ``grad f``.
        gap: ``x -> (B,)`` relative duality gaps, the stopping criterion.
        max_iter: Iteration cap.
        tol: Stop a task once its gap is at most ``tol``. ``None`` runs exactly ``max_iter``
            iterations (early-stopped mode) and evaluates the gap once at the end.
        check_every: Iterations between two gap evaluations.
        refine: Optional ``(x, stalled (B,) bool) -> x'``, e.g. a safeguarded Newton step, called at a
            check for the tasks whose gap fell by less than a fifth (`STALL_RATIO`) since the previous
            check; tasks it moves restart their momentum from the new point.
        gradient_step: Optional ``x -> x - step * grad f(x)`` in one fused evaluation (the forward step),
            used instead of ``gradient`` where given.

    Returns:
        A `FistaResult`; ``residual`` is the gap at ``solution``.

    Example:
        Non-negative least squares ``min_x 0.5 ||x - b||^2, x >= 0``, whose solution is ``max(b, 0)``:

        >>> b = torch.tensor([[1.0, -2.0]])
        >>> result = fista(torch.zeros(1, 2), lambda x: x - b, lambda x, _: x.clamp_min(0),
        ...                torch.ones(1), lambda x: (x - b.clamp_min(0)).abs().amax(-1), 100, 1e-6)
        >>> result.solution, bool(result.converged)
        (tensor([[1., 0.]]), True)
    """
    batch = x0.shape[0]
    step = _per_task(step, x0)
    if gradient_step is None:
        def gradient_step(x: torch.Tensor) -> torch.Tensor:
            return torch.addcmul(x, step, gradient(x), value=-1)
    x = x0.clone()
    y = x0.clone()
    # each task's momentum is looked up from its number of iterations since its last restart
    since_restart = torch.zeros(batch, dtype=torch.long, device=x0.device)
    betas = _per_task(_momentum_table(max_iter, x0), x0)  # shaped (length, 1, ...): looked up per task
    iterations = torch.full((batch,), max_iter, dtype=torch.long, device=x0.device)
    converged = torch.zeros(batch, dtype=torch.bool, device=x0.device)
    any_converged = False
    residual = previous = None
    for it in range(1, max_iter + 1):
        x_new = prox(gradient_step(y), step)
        if any_converged:
            x_new = torch.where(_per_task(converged, x0), x, x_new)
        difference = x_new - x
        restart = _batch_dot(y - x_new, difference) > 0
        since_restart = (since_restart + 1).masked_fill_(restart, 0)
        y = torch.addcmul(x_new, betas.index_select(0, since_restart), difference)
        x = x_new
        if tol is not None and it % check_every == 0:
            residual = gap(x)
            if refine is not None and previous is not None:
                stalled = (residual > tol) & (residual > STALL_RATIO * previous)
                if bool(stalled.any()):
                    refined = refine(x, stalled)
                    moved = (refined != x).flatten(1).any(dim=1)
                    since_restart = torch.where(moved, 0, since_restart)
                    y = torch.where(_per_task(moved, x0), refined, y)
                    x = refined
                    residual = torch.where(moved, gap(x), residual)
            previous = residual
            newly = (residual <= tol) & ~converged
            iterations = torch.where(newly, it, iterations)
            converged |= newly
            any_converged = bool(converged.any())
            if bool(converged.all()):
                break
    if tol is None or it % check_every != 0:
        residual = gap(x)
    return FistaResult(x, iterations, converged, residual)
