"""Cyclic and one-cycle curves, shared by the lr and momentum policies.

Both are iteration-based (mmcv supports only ``by_epoch=False`` for them).

Cyclic (mmcv ``Cyclic*UpdaterHook``, after Smith's CLR with a cosine or linear ramp): the run is
split into ``cyclic_times`` cycles of ``max_iters // cyclic_times`` iterations; each rises from
``base`` to ``base * target_ratio[0]`` during the first ``int(step_ratio_up * cycle)`` iterations,
then goes to ``base * target_ratio[1]``. With ``gamma < 1`` the peak of cycle ``c`` shrinks toward
``base``: its ratio becomes ``1 - s + ratio * s`` with ``s = gamma ** c``.

One-cycle (mmcv ``OneCycle*UpdaterHook``, same phases as ``torch.optim.lr_scheduler.OneCycleLR``):
phase ``i`` ends at iteration ``ends[i]`` (float) and anneals between two given values.
"""

from __future__ import annotations

from collections.abc import Sequence

from detfn.engine.schedules.annealing import anneal_fn

__all__ = [
    "cyclic_value",
    "one_cycle_ends",
    "one_cycle_value",
    "target_pair",
]


def target_pair(target_ratio: tuple[float, ...]) -> tuple[float, float]:
    """mmcv's rule: a single ratio ``r`` means ``(r, r / 1e5)``."""
    if len(target_ratio) == 1:
        return (target_ratio[0], target_ratio[0] / 1e5)
    if len(target_ratio) == 2:
        return (target_ratio[0], target_ratio[1])
    raise ValueError(f"target_ratio must hold 1 or 2 numbers, got {target_ratio!r}")


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
    """The value at global iteration ``it`` of a cyclic schedule (see module docstring)."""
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
    if pos < up_iters:
        end_ratio = 1 - scale + peak * scale
        return anneal(base * 1, base * end_ratio, pos / up_iters)
    start_ratio = 1 - scale + peak * scale
    return anneal(base * start_ratio, base * low, (pos - up_iters) / (per_cycle - up_iters))


def one_cycle_ends(steps: int, pct_start: float, three_phase: bool) -> tuple[float, ...]:
    """Last iteration of each one-cycle phase for a cycle of ``steps`` iterations.

    Raises:
        ValueError: phases that do not follow each other (the cycle is too short for
            ``pct_start``), which would divide by zero or run a phase backwards.
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
    it: int,
    ends: Sequence[float],
    points: Sequence[tuple[float, float]],
    anneal_strategy: str,
) -> float:
    """Anneal from ``points[i][0]`` to ``points[i][1]`` within the phase holding ``it``."""
    anneal = anneal_fn(anneal_strategy)
    start = 0.0
    for i, (end, (first, last)) in enumerate(zip(ends, points)):
        if it <= end or i == len(ends) - 1:
            return anneal(first, last, (it - start) / (end - start))
        start = end
    raise ValueError("one-cycle schedule has no phases")
