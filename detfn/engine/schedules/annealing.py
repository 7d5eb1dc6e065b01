"""Annealing curves shared by the lr and momentum policies (mmcv 1.x formulas).

The floating-point operations are written in the same order as mmcv's ``annealing_cos`` /
``annealing_linear``, so a schedule built on them reproduces mmcv's logged values bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from math import cos, pi
from typing import Literal

__all__ = ["AnnealStrategy", "anneal_fn", "annealing_cos", "annealing_linear"]

AnnealStrategy = Literal["cos", "linear"]


def annealing_cos(start: float, end: float, factor: float, weight: float = 1.0) -> float:
    """Cosine from ``weight * start + (1 - weight) * end`` (factor 0) down to ``end`` (factor 1).

    ``weight`` < 1 lowers the starting point of a restarted cycle (CosineRestart's
    ``restart_weights``).
    """
    cos_out = cos(pi * factor) + 1
    return end + 0.5 * weight * (start - end) * cos_out


def annealing_linear(start: float, end: float, factor: float) -> float:
    """Straight line from ``start`` (factor 0) to ``end`` (factor 1)."""
    return start + (end - start) * factor


def anneal_fn(strategy: str) -> Callable[[float, float, float], float]:
    """The curve named by ``anneal_strategy`` ('cos' or 'linear')."""
    if strategy == "cos":
        return annealing_cos
    if strategy == "linear":
        return annealing_linear
    raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got {strategy!r}")
