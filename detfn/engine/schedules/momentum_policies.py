"""The momentum policies as pure functions of progress (mmcv 1.x ``get_momentum`` formulas).

    regular_momentum(cfg, base_momentum, progress, max_progress, group=0) -> float

Arguments as in :func:`detfn.engine.schedules.lr_policies.regular_lr`; ``base_momentum`` is the
group's configured momentum (beta1 for Adam-type optimizers). One-cycle ignores it and reads the
group's bounds from the config. A user policy plugs in with ``@regular_momentum.register``.
"""

from __future__ import annotations

import functools
from typing import Any

from detfn.engine.schedules.annealing import annealing_cos, annealing_linear
from detfn.engine.schedules.cycles import one_cycle_ends, one_cycle_value
from detfn.engine.schedules.momentum_configs import (
    CosineAnnealingMomentumConfig,
    CyclicMomentumConfig,
    LinearAnnealingMomentumConfig,
    OneCycleMomentumConfig,
    StepMomentumConfig,
)
from detfn.engine.schedules.policy_common import (
    annealed_value,
    check_run_end,
    cyclic_policy_value,
    required_max,
)
from detfn.engine.schedules.steps import step_decay

__all__ = ["check_momentum_schedule", "one_cycle_bounds", "regular_momentum"]


@functools.singledispatch
def regular_momentum(
    cfg: Any, base_momentum: float, progress: int, max_progress: int | None, group: int = 0
) -> float:
    """The scheduled momentum of one parameter group at ``progress`` (see module docstring)."""
    raise TypeError(
        f"no momentum policy for {type(cfg).__name__}; register one with @regular_momentum.register"
    )


def one_cycle_bounds(cfg: OneCycleMomentumConfig, group: int) -> tuple[float, float]:
    """(base_momentum, max_momentum) of ``group``: one value for all groups or one per group."""

    def pick(value: float | tuple[float, ...]) -> float:
        return value[group] if isinstance(value, tuple) else value

    return pick(cfg.base_momentum), pick(cfg.max_momentum)


@regular_momentum.register(StepMomentumConfig)
def _step(cfg, base_momentum, progress, max_progress, group=0):
    return step_decay(base_momentum, progress, cfg.step, cfg.gamma, cfg.min_momentum)


@regular_momentum.register(CosineAnnealingMomentumConfig)
def _cosine(cfg, base_momentum, progress, max_progress, group=0):
    low = (cfg.min_momentum, cfg.min_momentum_ratio)
    return annealed_value(annealing_cos, cfg, base_momentum, progress, max_progress, *low)


@regular_momentum.register(LinearAnnealingMomentumConfig)
def _linear(cfg, base_momentum, progress, max_progress, group=0):
    low = (cfg.min_momentum, cfg.min_momentum_ratio)
    return annealed_value(annealing_linear, cfg, base_momentum, progress, max_progress, *low)


@regular_momentum.register(CyclicMomentumConfig)
def _cyclic(cfg, base_momentum, progress, max_progress, group=0):
    return cyclic_policy_value(cfg, base_momentum, progress, max_progress)


@regular_momentum.register(OneCycleMomentumConfig)
def _one_cycle(cfg, base_momentum, progress, max_progress, group=0):
    low, high = one_cycle_bounds(cfg, group)
    ends = one_cycle_ends(required_max(cfg, max_progress), cfg.pct_start, cfg.three_phase)
    if cfg.three_phase:
        points = ((high, low), (low, high), (high, high))
    else:
        points = ((high, low), (low, high))
    return one_cycle_value(progress, ends, points, cfg.anneal_strategy)


def check_momentum_schedule(
    cfg: Any, base_momenta: tuple[float, ...], max_progress: int | None
) -> None:
    """Fail at the start of a run for a schedule that cannot cover it (see ``check_lr_schedule``).

    Raises:
        ValueError: naming the config and the problem.
    """
    name = type(cfg).__name__
    if not base_momenta:
        raise ValueError(
            f"{name}: state.momentum is empty; a momentum schedule needs an optimizer with "
            "momentum (SGD) or betas (Adam/AdamW), one value per parameter group"
        )
    if isinstance(cfg, OneCycleMomentumConfig):
        for field in ("base_momentum", "max_momentum"):
            value = getattr(cfg, field)
            if isinstance(value, tuple) and len(value) != len(base_momenta):
                raise ValueError(
                    f"{name}.{field} has {len(value)} values for {len(base_momenta)} "
                    "parameter groups"
                )
    check_run_end(regular_momentum, cfg, base_momenta, max_progress)
