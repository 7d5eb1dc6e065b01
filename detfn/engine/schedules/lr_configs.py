"""Configs of the learning-rate policies: one frozen dataclass per mmcv 1.x ``lr_config.policy``.

Every policy subclasses :class:`LrScheduleConfig`, so a field typed ``LrScheduleConfig`` (or the
union :data:`LrConfig`) holds any of them and is written to JSON with a type tag. Fields and
defaults are mmcv's; where mmcv has a required argument (no default), detfn picks one and says so.
``build(cfg)`` (registered in :mod:`detfn.engine.hooks.lr`) returns the ``"lr"`` hook.

mmcv -> detfn: ``lr_config=dict(policy='step', step=[8, 11], warmup='linear', warmup_iters=500,
warmup_ratio=0.001)`` is ``StepLrConfig(step=(8, 11), warmup="linear", warmup_iters=500,
warmup_ratio=0.001)``.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Union

from detfn.config import Config, check, check_positive
from detfn.engine.schedules.annealing import AnnealStrategy
from detfn.engine.schedules.validation import (
    check_cyclic_fields,
    check_fractions,
    check_min_pair,
    check_one_cycle_fields,
    check_schedule_base,
    check_step_fields,
    normalize_tuples,
)
from detfn.engine.schedules.warmup import WarmupType

__all__ = [
    "LR_CONFIGS",
    "CosineAnnealingLrConfig",
    "CosineRestartLrConfig",
    "CyclicLrConfig",
    "ExpLrConfig",
    "FixedLrConfig",
    "FlatCosineAnnealingLrConfig",
    "InvLrConfig",
    "LinearAnnealingLrConfig",
    "LrConfig",
    "LrScheduleConfig",
    "OneCycleLrConfig",
    "PolyLrConfig",
    "StepLrConfig",
]


@dataclass(frozen=True)
class LrScheduleConfig(Config):
    """Fields shared by every lr policy (mmcv ``LrUpdaterHook``); not a policy itself.

    Attributes:
        by_epoch: the regular lr changes once per epoch (set at the start of each epoch) instead
            of every iteration. Warmup always counts global iterations.
        warmup: None (no warmup), 'constant', 'linear' or 'exp'. Only this switches warmup on:
            ``warmup_iters`` / ``warmup_ratio`` alone do nothing (as in mmcv).
        warmup_iters: warmup length in iterations (in epochs when ``warmup_by_epoch``).
        warmup_ratio: the lr at the start of warmup is ``warmup_ratio`` times the regular lr.
        warmup_by_epoch: ``warmup_iters`` counts epochs (converted with ``iters_per_epoch``).
    """

    by_epoch: bool = True
    warmup: WarmupType | None = None
    warmup_iters: int = 0
    warmup_ratio: float = 0.1
    warmup_by_epoch: bool = False

    def __post_init__(self) -> None:
        check_schedule_base(self, LrScheduleConfig, "lr", LR_CONFIGS)


@dataclass(frozen=True)
class FixedLrConfig(LrScheduleConfig):
    """Constant lr (only the warmup changes it)."""


@dataclass(frozen=True)
class StepLrConfig(LrScheduleConfig):
    """``lr = base * gamma ** n`` after ``n`` steps, never below ``min_lr``.

    Attributes:
        step: an int decays every ``step`` epochs/iterations; a tuple lists the milestones.
            mmcv requires it; detfn defaults to the 1x schedule's (8, 11).
        gamma: decay factor per step.
        min_lr: lower clip of the lr; None clips nothing.
    """

    step: int | tuple[int, ...] = (8, 11)
    gamma: float = 0.1
    min_lr: float | None = None

    def __post_init__(self) -> None:
        normalize_tuples(self, "step")
        super().__post_init__()
        check_step_fields(self)


@dataclass(frozen=True)
class ExpLrConfig(LrScheduleConfig):
    """``lr = base * gamma ** progress``. mmcv requires gamma; detfn defaults to 0.9."""

    gamma: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "gamma")


@dataclass(frozen=True)
class PolyLrConfig(LrScheduleConfig):
    """``lr = (base - min_lr) * (1 - progress / max_progress) ** power + min_lr``."""

    power: float = 1.0
    min_lr: float = 0.0


@dataclass(frozen=True)
class InvLrConfig(LrScheduleConfig):
    """``lr = base * (1 + gamma * progress) ** -power`` (Caffe's 'inv').

    mmcv requires gamma; detfn defaults to Caffe's example value 1e-4.
    """

    gamma: float = 1e-4
    power: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "gamma")


@dataclass(frozen=True)
class CosineAnnealingLrConfig(LrScheduleConfig):
    """Half a cosine from the base lr to ``min_lr`` (or ``base * min_lr_ratio``) over the run.

    mmcv requires exactly one of ``min_lr`` / ``min_lr_ratio``; detfn reads "neither" as a
    target of 0 (what ``min_lr=0`` and ``min_lr_ratio=0`` both mean).
    """

    min_lr: float | None = None
    min_lr_ratio: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_min_pair(self, "min_lr", "min_lr_ratio")


@dataclass(frozen=True)
class FlatCosineAnnealingLrConfig(LrScheduleConfig):
    """Flat at the base lr for ``start_percent`` of the run, then cosine to the target.

    Attributes:
        start_percent: fraction of the run (epochs or iterations) before annealing, in [0, 1].
        min_lr, min_lr_ratio: the target, as in :class:`CosineAnnealingLrConfig`.
    """

    start_percent: float = 0.75
    min_lr: float | None = None
    min_lr_ratio: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fractions(self, "start_percent")
        check_min_pair(self, "min_lr", "min_lr_ratio")


@dataclass(frozen=True)
class CosineRestartLrConfig(LrScheduleConfig):
    """Cosine annealing restarted at the end of each period (SGDR).

    Attributes:
        periods: length of each cycle in epochs/iterations; together they must cover the run.
            mmcv requires it; detfn's None means one period spanning the whole run.
        restart_weights: the peak of cycle ``i`` is ``w_i * base + (1 - w_i) * target``;
            one weight per period.
        min_lr, min_lr_ratio: the target, as in :class:`CosineAnnealingLrConfig`.
    """

    periods: tuple[int, ...] | None = None
    restart_weights: tuple[float, ...] = (1.0,)
    min_lr: float | None = None
    min_lr_ratio: float | None = None

    def __post_init__(self) -> None:
        normalize_tuples(self, "periods", "restart_weights")
        super().__post_init__()
        check_min_pair(self, "min_lr", "min_lr_ratio")
        if self.periods is not None:
            check(
                self,
                "periods",
                len(self.periods) > 0 and all(isinstance(p, int) and p > 0 for p in self.periods),
                f"must be a non-empty tuple of positive ints, got {self.periods!r}",
            )
        n_periods = 1 if self.periods is None else len(self.periods)
        check(
            self,
            "restart_weights",
            len(self.restart_weights) == n_periods,
            f"needs one weight per period ({n_periods}), got {self.restart_weights!r}",
        )


@dataclass(frozen=True)
class CyclicLrConfig(LrScheduleConfig):
    """Cyclic lr (see :mod:`detfn.engine.schedules.cycles`); iteration-based only.

    Attributes:
        target_ratio: (peak, end) as multiples of the base lr; a single ratio ``r`` means
            ``(r, r / 1e5)``.
        cyclic_times: number of cycles in the run.
        step_ratio_up: fraction of each cycle spent rising, in [0, 1).
        anneal_strategy: 'cos' or 'linear' ramps.
        gamma: in (0, 1]; each cycle's peak shrinks toward the base lr by this factor.
    """

    by_epoch: bool = False
    target_ratio: tuple[float, ...] = (10.0, 1e-4)
    cyclic_times: int = 1
    step_ratio_up: float = 0.4
    anneal_strategy: AnnealStrategy = "cos"
    gamma: float = 1.0

    def __post_init__(self) -> None:
        normalize_tuples(self, "target_ratio")
        super().__post_init__()
        check_cyclic_fields(self)


@dataclass(frozen=True)
class OneCycleLrConfig(LrScheduleConfig):
    """The 1cycle policy (Smith & Topin 2017; torch's ``OneCycleLR``); iteration-based only.

    The lr starts at ``max_lr / div_factor``, rises to ``max_lr`` over ``pct_start`` of the
    cycle, then falls to ``max_lr / div_factor / final_div_factor``. The optimizer's configured
    lr is not used except as the default ``max_lr``.

    Attributes:
        max_lr: peak lr, one number or one per parameter group. mmcv requires it; detfn's None
            takes each group's configured lr (``state.base_lr``) as its peak.
        total_steps: iterations in the cycle; None means the run's ``max_iters``. Must not be
            smaller than ``max_iters``.
        pct_start: fraction of the cycle spent rising, in [0, 1].
        anneal_strategy: 'cos' or 'linear'.
        div_factor: initial lr = max_lr / div_factor.
        final_div_factor: final lr = initial lr / final_div_factor.
        three_phase: rise, fall back to the initial lr symmetrically, then anneal to the final
            lr, instead of two phases.
    """

    by_epoch: bool = False
    max_lr: float | tuple[float, ...] | None = None
    total_steps: int | None = None
    pct_start: float = 0.3
    anneal_strategy: AnnealStrategy = "cos"
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    three_phase: bool = False

    def __post_init__(self) -> None:
        normalize_tuples(self, "max_lr")
        super().__post_init__()
        check_one_cycle_fields(self, "max_lr")
        if self.total_steps is not None:
            check(
                self,
                "total_steps",
                isinstance(self.total_steps, int) and self.total_steps > 0,
                f"must be a positive int or None, got {self.total_steps!r}",
            )
        check_positive(self, "div_factor", "final_div_factor")


@dataclass(frozen=True)
class LinearAnnealingLrConfig(LrScheduleConfig):
    """Straight line from the base lr to ``min_lr`` (or ``base * min_lr_ratio``) over the run."""

    min_lr: float | None = None
    min_lr_ratio: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_min_pair(self, "min_lr", "min_lr_ratio")


LrConfig = Union[
    FixedLrConfig,
    StepLrConfig,
    ExpLrConfig,
    PolyLrConfig,
    InvLrConfig,
    CosineAnnealingLrConfig,
    FlatCosineAnnealingLrConfig,
    CosineRestartLrConfig,
    CyclicLrConfig,
    OneCycleLrConfig,
    LinearAnnealingLrConfig,
]
"""Any lr policy config: use it as a field type (tyro subcommands, JSON type tags)."""

LR_CONFIGS: tuple[type[LrScheduleConfig], ...] = typing.get_args(LrConfig)
