"""The curves every schedule policy is made of (mmcv 1.x formulas, in mmcv's operation order).

The floating-point operations are written as mmcv writes them, so a schedule built on them
reproduces mmcv's logged values bit for bit.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from math import cos, pi
from typing import Literal

AnnealStrategy = Literal["cos", "linear"]


def annealing_cos(start: float, end: float, factor: float, weight: float = 1.0) -> float:
    """Cosine from ``weight * start + (1 - weight) * end`` (factor 0) down to ``end`` (factor 1).

    ``weight`` < 1 lowers the starting point of a restarted cycle (CosineRestart's weights).
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


def step_exponent(progress: int, step: int | tuple[int, ...]) -> int:
    """How many decays have happened by ``progress``: every ``step`` units (an int) or one per
    milestone reached (a sorted tuple)."""
    if isinstance(step, int):
        return progress // step
    return bisect_right(step, progress)


def step_decay(
    base: float, progress: int, step: int | tuple[int, ...], gamma: float, floor: float | None
) -> float:
    """``base * gamma ** n`` after ``n`` decays, clipped from below at ``floor`` when given."""
    value = base * (gamma ** step_exponent(progress, step))
    if floor is not None:
        value = max(value, floor)
    return value


def target_pair(target_ratio: tuple[float, ...]) -> tuple[float, float]:
    """mmcv's rule: a single ratio ``r`` means ``(r, r / 1e5)``."""
    if len(target_ratio) == 1:
        return (target_ratio[0], target_ratio[0] / 1e5)
    return (target_ratio[0], target_ratio[1])


def cyclic_value(
    base: float,
    it: int,
    max_iters: int,
    cyclic_times: int,
    step_ratio_up: float,
    target_ratio: tuple[float, ...],
    gamma: float,
    anneal_strategy: str,
) -> float:
    """mmcv's cyclic schedule (Smith's CLR) at global iteration ``it``.

    The run is split into ``cyclic_times`` cycles of ``max_iters // cyclic_times`` iterations;
    each rises from ``base`` to ``base * target_ratio[0]`` during ``int(step_ratio_up * cycle)``
    iterations, then goes to ``base * target_ratio[1]``. With ``gamma < 1`` the peak of cycle
    ``c`` shrinks toward ``base``: its ratio becomes ``1 - s + ratio * s``, ``s = gamma ** c``.
    """
    per_cycle = max_iters // cyclic_times
    if per_cycle <= 0:
        raise ValueError(
            f"cyclic schedule: max_iters={max_iters} is smaller than cyclic_times={cyclic_times}"
        )
    up_iters = int(step_ratio_up * per_cycle)
    peak, low = target_pair(target_ratio)
    pos = it % per_cycle
    scale = gamma ** (it // per_cycle)
    anneal = anneal_fn(anneal_strategy)
    peak_ratio = 1 - scale + peak * scale
    if pos < up_iters:
        return anneal(base * 1, base * peak_ratio, pos / up_iters)
    return anneal(base * peak_ratio, base * low, (pos - up_iters) / (per_cycle - up_iters))


def one_cycle_ends(steps: int, pct_start: float, three_phase: bool) -> tuple[float, ...]:
    """Last iteration of each one-cycle phase for a cycle of ``steps`` iterations.

    Raises:
        ValueError: phases that do not follow each other (a cycle too short for ``pct_start``).
    """
    first = float(pct_start * steps) - 1
    if three_phase:
        ends = (first, float(2 * pct_start * steps) - 2, steps - 1)
    else:
        ends = (first, steps - 1)
    starts = (0, *ends[:-1])
    if any(end <= start for start, end in zip(starts, ends)):
        raise ValueError(
            f"one-cycle phases end at iterations {ends}, which do not increase from 0: "
            f"raise the number of steps ({steps}) or change pct_start ({pct_start})"
        )
    return ends


def one_cycle_value(
    it: int, ends: Sequence[float], points: Sequence[tuple[float, float]], anneal_strategy: str
) -> float:
    """Anneal from ``points[i][0]`` to ``points[i][1]`` within the phase holding ``it``
    (mmcv's ``OneCycle*UpdaterHook``, torch's ``OneCycleLR``)."""
    anneal = anneal_fn(anneal_strategy)
    start = 0.0
    for i, (end, (first, last)) in enumerate(zip(ends, points)):
        if it <= end or i == len(ends) - 1:
            return anneal(first, last, (it - start) / (end - start))
        start = end
    raise ValueError("one-cycle schedule has no phases")
