"""Configs of the momentum policies: one frozen dataclass per mmcv 1.x ``momentum_config.policy``.

Momentum means SGD's momentum or Adam's beta1. Every policy subclasses
:class:`MomentumScheduleConfig`; :data:`MomentumConfig` is the union for field types.
``build(cfg)`` (registered in :mod:`detfn.engine.hooks.momentum`) returns the ``"momentum"`` hook.

mmcv -> detfn: ``momentum_config=dict(policy='cyclic', target_ratio=(0.85 / 0.95, 1),
cyclic_times=1, step_ratio_up=0.4)`` is ``CyclicMomentumConfig(target_ratio=(0.85 / 0.95, 1.0))``.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Union

from detfn.config import Config
from detfn.engine.schedules.annealing import AnnealStrategy
from detfn.engine.schedules.validation import (
    check_cyclic_fields,
    check_min_pair,
    check_one_cycle_fields,
    check_schedule_base,
    check_step_fields,
    normalize_tuples,
)
from detfn.engine.schedules.warmup import WarmupType

__all__ = [
    "MOMENTUM_CONFIGS",
    "CosineAnnealingMomentumConfig",
    "CyclicMomentumConfig",
    "LinearAnnealingMomentumConfig",
    "MomentumConfig",
    "MomentumScheduleConfig",
    "OneCycleMomentumConfig",
    "StepMomentumConfig",
]


@dataclass(frozen=True)
class MomentumScheduleConfig(Config):
    """Fields shared by every momentum policy (mmcv ``MomentumUpdaterHook``); not a policy.

    Attributes:
        by_epoch: the regular momentum changes once per epoch instead of every iteration.
        warmup: None, 'constant', 'linear' or 'exp'. Momentum warmup *divides* the regular
            momentum by the factor the lr warmup multiplies with, so it starts higher.
        warmup_iters: warmup length in iterations (epochs when ``warmup_by_epoch``).
        warmup_ratio: the warmup factor at iteration 0 (mmcv's default 0.9).
        warmup_by_epoch: ``warmup_iters`` counts epochs. (mmcv's momentum hooks lack this
            option; it defaults to off, which is their behaviour.)
    """

    by_epoch: bool = True
    warmup: WarmupType | None = None
    warmup_iters: int = 0
    warmup_ratio: float = 0.9
    warmup_by_epoch: bool = False

    def __post_init__(self) -> None:
        check_schedule_base(self, MomentumScheduleConfig, "momentum", MOMENTUM_CONFIGS)


@dataclass(frozen=True)
class StepMomentumConfig(MomentumScheduleConfig):
    """``momentum = base * gamma ** n`` after ``n`` steps, never below ``min_momentum``.

    Attributes:
        step: an int decays every ``step`` epochs/iterations; a tuple lists the milestones.
            mmcv requires it; detfn defaults to (8, 11).
        gamma: decay factor per step (mmcv's default 0.5).
        min_momentum: lower clip; None clips nothing.
    """

    step: int | tuple[int, ...] = (8, 11)
    gamma: float = 0.5
    min_momentum: float | None = None

    def __post_init__(self) -> None:
        normalize_tuples(self, "step")
        super().__post_init__()
        check_step_fields(self)


@dataclass(frozen=True)
class CosineAnnealingMomentumConfig(MomentumScheduleConfig):
    """Half a cosine from the base momentum to ``min_momentum`` (or base * ratio) over the run.

    mmcv requires exactly one of the two; detfn reads "neither" as a target of 0.
    """

    min_momentum: float | None = None
    min_momentum_ratio: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_min_pair(self, "min_momentum", "min_momentum_ratio")


@dataclass(frozen=True)
class LinearAnnealingMomentumConfig(MomentumScheduleConfig):
    """Straight line from the base momentum to ``min_momentum`` (or base * ratio) over the run."""

    min_momentum: float | None = None
    min_momentum_ratio: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_min_pair(self, "min_momentum", "min_momentum_ratio")


@dataclass(frozen=True)
class CyclicMomentumConfig(MomentumScheduleConfig):
    """Cyclic momentum, usually paired with :class:`~.lr_configs.CyclicLrConfig`.

    Same cycle arithmetic as the lr (see :mod:`detfn.engine.schedules.cycles`): the momentum
    moves from the base to ``base * target_ratio[0]`` while the lr rises, then to
    ``base * target_ratio[1]``. Iteration-based only.
    """

    by_epoch: bool = False
    target_ratio: tuple[float, ...] = (0.85 / 0.95, 1.0)
    cyclic_times: int = 1
    step_ratio_up: float = 0.4
    anneal_strategy: AnnealStrategy = "cos"
    gamma: float = 1.0

    def __post_init__(self) -> None:
        normalize_tuples(self, "target_ratio")
        super().__post_init__()
        check_cyclic_fields(self)


@dataclass(frozen=True)
class OneCycleMomentumConfig(MomentumScheduleConfig):
    """1cycle momentum, inverse to the lr: ``max_momentum`` -> ``base_momentum`` -> back.

    The phases span the run's ``max_iters`` (mmcv's momentum hook has no ``total_steps``).
    The optimizer's configured momentum is not used.

    Attributes:
        base_momentum: lowest momentum (at the lr's peak); one number or one per group.
        max_momentum: highest momentum (at the start); one number or one per group.
        pct_start: fraction of the run spent in the first phase, in [0, 1].
        anneal_strategy: 'cos' or 'linear'.
        three_phase: third phase holding ``max_momentum`` (pairs with the three-phase lr).
    """

    by_epoch: bool = False
    base_momentum: float | tuple[float, ...] = 0.85
    max_momentum: float | tuple[float, ...] = 0.95
    pct_start: float = 0.3
    anneal_strategy: AnnealStrategy = "cos"
    three_phase: bool = False

    def __post_init__(self) -> None:
        normalize_tuples(self, "base_momentum", "max_momentum")
        super().__post_init__()
        check_one_cycle_fields(self, "base_momentum", "max_momentum")


MomentumConfig = Union[
    StepMomentumConfig,
    CosineAnnealingMomentumConfig,
    LinearAnnealingMomentumConfig,
    CyclicMomentumConfig,
    OneCycleMomentumConfig,
]
"""Any momentum policy config: use it as a field type (tyro subcommands, JSON type tags)."""

MOMENTUM_CONFIGS: tuple[type[MomentumScheduleConfig], ...] = typing.get_args(MomentumConfig)
