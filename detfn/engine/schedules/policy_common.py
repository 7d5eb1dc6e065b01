"""Pieces of arithmetic that the lr and momentum policies share.

The lr and momentum families differ in their field names (``min_lr`` vs ``min_momentum``) but
not in their math: both read the run's length the same way, anneal toward the same kind of
target, cycle with the same fields, and are checked at the start of a run the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from detfn.engine.schedules.cycles import cyclic_value

__all__ = [
    "annealed_value",
    "annealing_target",
    "check_run_end",
    "cyclic_policy_value",
    "required_max",
]

# policy(cfg, base, progress, max_progress, group) -> float: regular_lr / regular_momentum
Policy = Callable[[Any, float, int, "int | None", int], float]


def required_max(cfg: Any, max_progress: int | None) -> int:
    """``max_progress``, or a clear error for a policy that needs the run's length."""
    if max_progress is None:
        unit = "max_epochs" if cfg.by_epoch else "max_iters"
        raise ValueError(
            f"{type(cfg).__name__}(by_epoch={cfg.by_epoch}) needs the run's {unit}, "
            "which is not set for this run"
        )
    return max_progress


def annealing_target(base: float, min_value: float | None, min_ratio: float | None) -> float:
    """``base * min_ratio`` or ``min_value``; neither set means 0."""
    if min_ratio is not None:
        return base * min_ratio
    return 0.0 if min_value is None else min_value


def annealed_value(
    curve: Callable[[float, float, float], float],
    cfg: Any,
    base: float,
    progress: int,
    max_progress: int | None,
    min_value: float | None,
    min_ratio: float | None,
) -> float:
    """``curve`` (cos or linear) from ``base`` to the annealing target over the whole run."""
    target = annealing_target(base, min_value, min_ratio)
    return curve(base, target, progress / required_max(cfg, max_progress))


def cyclic_policy_value(cfg: Any, base: float, progress: int, max_progress: int | None) -> float:
    """The value of a cyclic policy config (lr or momentum: same fields, same cycle)."""
    return cyclic_value(
        base,
        progress,
        required_max(cfg, max_progress),
        cfg.cyclic_times,
        cfg.step_ratio_up,
        cfg.target_ratio,
        cfg.gamma,
        cfg.anneal_strategy,
    )


def check_run_end(
    policy: Policy, cfg: Any, bases: Sequence[float], max_progress: int | None
) -> None:
    """Evaluate ``policy`` at the run's last epoch/iteration for every group, so that a schedule
    that cannot cover the run (periods ending early, no run length) fails at the start."""
    last = max(max_progress - 1, 0) if max_progress is not None else 0
    for group, base in enumerate(bases):
        policy(cfg, base, last, max_progress, group)
