"""Step decay, shared by the Step lr and Step momentum policies."""

from __future__ import annotations

from bisect import bisect_right

__all__ = ["check_step", "step_decay", "step_exponent"]


def step_exponent(progress: int, step: int | tuple[int, ...]) -> int:
    """How many decays have happened by ``progress``.

    An int ``step`` decays every ``step`` units; a tuple lists the (sorted) milestones, and a
    milestone counts once ``progress`` reaches it.
    """
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


def check_step(step: object) -> str | None:
    """Why ``step`` is not a positive int or a sorted non-empty tuple of them; None if it is."""
    if isinstance(step, bool):
        return f"must be an int or a tuple of ints, got {step!r}"
    if isinstance(step, int):
        return None if step > 0 else f"must be > 0, got {step!r}"
    if not isinstance(step, tuple) or not step:
        return f"must be an int or a non-empty tuple of ints, got {step!r}"
    if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in step):
        return f"must hold positive ints, got {step!r}"
    if list(step) != sorted(step):
        return f"milestones must be sorted, got {step!r}"
    return None
