"""Random draws from an explicit ``torch.Generator``, and the per-item generator.

Transforms never touch global random state; the generator of an item is derived from
(seed, epoch, index) alone, so worker count and order do not change what an item looks like.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["choice", "coin", "item_generator", "randint", "uniform"]


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator seeded from (seed, epoch, index) through NumPy's SeedSequence hashing.

    SeedSequence mixes the three integers so that neighbouring indices or epochs do not give
    correlated streams, which ``seed + index`` would.
    """
    words = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed((int(words[0]) << 31) ^ int(words[1]))


def uniform(generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    """A float drawn uniformly from ``[low, high)``."""
    return low + (high - low) * float(torch.rand((), generator=generator))


def randint(generator: torch.Generator, low: int, high: int) -> int:
    """An integer drawn uniformly from ``[low, high]`` (both ends included)."""
    if high <= low:
        return low
    return int(torch.randint(low, high + 1, (), generator=generator))


def coin(generator: torch.Generator, prob: float) -> bool:
    """True with probability ``prob``."""
    return float(torch.rand((), generator=generator)) < prob


def choice(generator: torch.Generator, n: int) -> int:
    """An index drawn uniformly from ``range(n)``."""
    return int(torch.randint(0, n, (), generator=generator))
