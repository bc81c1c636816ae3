"""Seeds and random-generator states: Python's ``random`` (which learn2learn samples with), numpy, torch."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = ["derive_seed", "rng_state", "seed_everything", "seeded", "set_rng_state"]


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch (CPU and every GPU).

    Args:
        seed: Any integer; it is reduced modulo 2**32 for numpy.

    Example:
        >>> seed_everything(0); a = random.random(), float(torch.rand(()))
        >>> seed_everything(0); a == (random.random(), float(torch.rand(())))
        True
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    random.seed(seed)
    # The legacy global generator is the point: third-party code (augmentations, samplers) draws from it.
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that is a fixed function of ``keys`` (e.g. run seed, step, episode), via numpy's
    ``SeedSequence``, so nearby keys give unrelated streams.

    Example:
        >>> derive_seed(0, 1, 2) == derive_seed(0, 1, 2) != derive_seed(0, 2, 1)
        True
    """
    return int(np.random.SeedSequence([int(key) for key in keys]).generate_state(1, np.uint64)[0] >> 1)


def rng_state() -> dict[str, Any]:
    """The state of every global generator `seed_everything` seeds; `set_rng_state` restores it.

    Example:
        >>> state = rng_state(); a = random.random(), float(torch.rand(()))
        >>> set_rng_state(state); a == (random.random(), float(torch.rand(())))
        True
    """
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),  # noqa: NPY002
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators from a `rng_state` dictionary (the CUDA entry is used when present).

    Example:
        >>> state = rng_state(); first = torch.rand(2)
        >>> set_rng_state(state); torch.equal(torch.rand(2), first)
        True
    """
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with every global generator seeded by ``seed``, then put their states back.

    The code outside the block sees no change: e.g. sampling an episode inside it leaves dropout's
    random stream as it was.

    Example:
        >>> with seeded(3): a = random.random()
        >>> with seeded(3): a == random.random()
        True
    """
    saved = rng_state()
    try:
        seed_everything(seed)
        yield
    finally:
        set_rng_state(saved)
