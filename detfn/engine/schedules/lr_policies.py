"""The learning-rate policies as pure functions of progress (mmcv 1.x ``get_lr`` formulas).

:func:`regular_lr` gives the scheduled ("regular") lr of one parameter group before warmup:

    regular_lr(cfg, base_lr, progress, max_progress, group=0) -> float

``progress`` is the epoch (``cfg.by_epoch``) or the global iteration, ``max_progress`` the run's
``max_epochs`` or ``max_iters`` (None when unknown: only the policies that need it complain),
``base_lr`` the group's configured lr and ``group`` its index (used by per-group ``max_lr``).
The expressions keep mmcv's operation order, so values match mmcv's to the last bit.

A user policy plugs in with ``@regular_lr.register(MyLrConfig)``.
"""

from __future__ import annotations

import functools
from itertools import accumulate
from typing import Any

from detfn.engine.schedules.annealing import annealing_cos, annealing_linear
from detfn.engine.schedules.cycles import one_cycle_ends, one_cycle_value
from detfn.engine.schedules.lr_configs import (
    CosineAnnealingLrConfig,
    CosineRestartLrConfig,
    CyclicLrConfig,
    ExpLrConfig,
    FixedLrConfig,
    FlatCosineAnnealingLrConfig,
    InvLrConfig,
    LinearAnnealingLrConfig,
    OneCycleLrConfig,
    PolyLrConfig,
    StepLrConfig,
)
from detfn.engine.schedules.policy_common import (
    annealed_value,
    annealing_target,
    check_run_end,
    cyclic_policy_value,
    required_max,
)
from detfn.engine.schedules.steps import step_decay

__all__ = ["check_lr_schedule", "one_cycle_max_lr", "regular_lr", "restart_position"]


@functools.singledispatch
def regular_lr(
    cfg: Any, base_lr: float, progress: int, max_progress: int | None, group: int = 0
) -> float:
    """The scheduled lr of one parameter group at ``progress`` (see module docstring)."""
    raise TypeError(
        f"no lr policy for {type(cfg).__name__}; register one with @regular_lr.register"
    )


def restart_position(progress: int, cumulative_periods: tuple[int, ...]) -> int:
    """Index of the period holding ``progress`` (the first cumulative end above it)."""
    for i, end in enumerate(cumulative_periods):
        if progress < end:
            return i
    raise ValueError(
        f"CosineRestart: progress {progress} is past the last period "
        f"(cumulative periods {cumulative_periods}); the periods must cover the whole run"
    )


def one_cycle_max_lr(cfg: OneCycleLrConfig, base_lr: float, group: int) -> float:
    """Peak lr of ``group``: ``cfg.max_lr`` (one or per group), or the configured lr if None."""
    if cfg.max_lr is None:
        return base_lr
    if isinstance(cfg.max_lr, tuple):
        return cfg.max_lr[group]
    return cfg.max_lr


@regular_lr.register(FixedLrConfig)
def _fixed(cfg, base_lr, progress, max_progress, group=0):
    return base_lr


@regular_lr.register(StepLrConfig)
def _step(cfg, base_lr, progress, max_progress, group=0):
    return step_decay(base_lr, progress, cfg.step, cfg.gamma, cfg.min_lr)


@regular_lr.register(ExpLrConfig)
def _exp(cfg, base_lr, progress, max_progress, group=0):
    return base_lr * cfg.gamma**progress


@regular_lr.register(PolyLrConfig)
def _poly(cfg, base_lr, progress, max_progress, group=0):
    coeff = (1 - progress / required_max(cfg, max_progress)) ** cfg.power
    return (base_lr - cfg.min_lr) * coeff + cfg.min_lr


@regular_lr.register(InvLrConfig)
def _inv(cfg, base_lr, progress, max_progress, group=0):
    return base_lr * (1 + cfg.gamma * progress) ** (-cfg.power)


@regular_lr.register(CosineAnnealingLrConfig)
def _cosine(cfg, base_lr, progress, max_progress, group=0):
    return annealed_value(
        annealing_cos, cfg, base_lr, progress, max_progress, cfg.min_lr, cfg.min_lr_ratio
    )


@regular_lr.register(FlatCosineAnnealingLrConfig)
def _flat_cosine(cfg, base_lr, progress, max_progress, group=0):
    total = required_max(cfg, max_progress)
    start = round(total * cfg.start_percent)  # Python's round, as mmcv: round(2.5) == 2
    target = annealing_target(base_lr, cfg.min_lr, cfg.min_lr_ratio)
    if progress - start < 0:
        return base_lr
    return annealing_cos(base_lr, target, (progress - start) / (total - start))


@regular_lr.register(CosineRestartLrConfig)
def _cosine_restart(cfg, base_lr, progress, max_progress, group=0):
    periods = cfg.periods if cfg.periods is not None else (required_max(cfg, max_progress),)
    cumulative = tuple(accumulate(periods))
    target = annealing_target(base_lr, cfg.min_lr, cfg.min_lr_ratio)
    idx = restart_position(progress, cumulative)
    nearest_restart = 0 if idx == 0 else cumulative[idx - 1]
    alpha = min((progress - nearest_restart) / periods[idx], 1)
    return annealing_cos(base_lr, target, alpha, cfg.restart_weights[idx])


@regular_lr.register(CyclicLrConfig)
def _cyclic(cfg, base_lr, progress, max_progress, group=0):
    return cyclic_policy_value(cfg, base_lr, progress, max_progress)


@regular_lr.register(OneCycleLrConfig)
def _one_cycle(cfg, base_lr, progress, max_progress, group=0):
    initial = one_cycle_max_lr(cfg, base_lr, group) / cfg.div_factor
    steps = cfg.total_steps if cfg.total_steps is not None else required_max(cfg, max_progress)
    ends = one_cycle_ends(steps, cfg.pct_start, cfg.three_phase)
    peak = initial * cfg.div_factor
    final = initial * (1 / cfg.final_div_factor)
    if cfg.three_phase:
        points = ((initial * 1, peak), (peak, initial * 1), (initial * 1, final))
    else:
        points = ((initial * 1, peak), (peak, final))
    return one_cycle_value(progress, ends, points, cfg.anneal_strategy)


@regular_lr.register(LinearAnnealingLrConfig)
def _linear(cfg, base_lr, progress, max_progress, group=0):
    return annealed_value(
        annealing_linear, cfg, base_lr, progress, max_progress, cfg.min_lr, cfg.min_lr_ratio
    )


def check_lr_schedule(
    cfg: Any, base_lrs: tuple[float, ...], max_progress: int | None, max_iters: int | None
) -> None:
    """Fail at the start of a run, not midway, for a schedule that cannot cover the run.

    Evaluates the schedule at the run's last epoch/iteration for every group (catching periods
    that end early, a missing run length, a too-short one-cycle) and checks one-cycle's
    ``total_steps >= max_iters`` and per-group ``max_lr`` length.

    Raises:
        ValueError: naming the config and the problem.
    """
    name = type(cfg).__name__
    if not base_lrs:
        raise ValueError(f"{name}: state.base_lr is empty; the optimizer has no parameter groups")
    if isinstance(cfg, OneCycleLrConfig):
        if isinstance(cfg.max_lr, tuple) and len(cfg.max_lr) != len(base_lrs):
            raise ValueError(
                f"{name}.max_lr has {len(cfg.max_lr)} values for {len(base_lrs)} parameter groups"
            )
        steps = cfg.total_steps if cfg.total_steps is not None else required_max(cfg, max_iters)
        if max_iters is not None and steps < max_iters:
            raise ValueError(
                f"{name}.total_steps={steps} must be >= the run's max_iters={max_iters}"
            )
    check_run_end(regular_lr, cfg, base_lrs, max_progress)
