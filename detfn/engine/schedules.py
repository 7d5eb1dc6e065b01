"""Schedules for any per-group hyperparameter (``RunnerConfig(lr=StepSchedule(...),
momentum=CosineSchedule(...), weight_decay=...)``): one frozen config per mmcv 1.x policy, and the
hook that applies one.

A policy is ``value(base, progress, total, group) -> float``, a pure function of ``progress`` (the
epoch when ``by_epoch``, else the global iteration) of ``total`` (``max_epochs`` / ``max_iters``);
its float operations are mmcv's, in mmcv's order, so the values match mmcv's logs bit for bit.
Where mmcv requires an argument, detfn picks a default and says so.
Warmup (mmcv 1.x) at global iteration ``t`` of ``W``, ratio ``r``: the factor is ``r``
(constant), ``1 - (1 - t/W)(1 - r)`` (linear) or ``r ** (1 - t/W)`` (exp); the value is ``v * f``,
or ``v / f`` when it divides: momentum's warmup starts *higher*, as in mmcv's momentum hooks.

When a value is set (mmcv's ``LrUpdaterHook`` / ``MomentumUpdaterHook``): ``before_run`` checks
the schedule against the run; ``before_train_epoch`` sets a ``by_epoch`` schedule's regular
value; ``before_train_iter`` sets the regular value of ``t`` (iteration-based), warmed up while
``t < W``; a ``by_epoch`` schedule gets the warmed-up value while ``t < W``, the regular one at
``t == W``, then nothing (a warmup longer than an epoch continues from the next epoch's value).
The hook is stateless (a function of ``state.base``, the counters and the run length), so a
resumed run continues the schedule exactly.
"""

from __future__ import annotations

import typing
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import accumulate
from math import cos, pi
from typing import Literal, Union

from detfn.config import Config, check, check_positive, fail
from detfn.engine.combinators import compose, only_at
from detfn.engine.events import Event, Hook, Priority, Stage
from detfn.engine.state import TrainState, run_max_iters
from detfn.registry import register

WarmupType = Literal["constant", "linear", "exp"]


def warmup_factor(warmup: str, cur_iter: int, warmup_iters: int, ratio: float) -> float:
    """The warmup multiplier at global iteration ``cur_iter`` (< ``warmup_iters``)."""
    if warmup == "constant":
        return ratio
    if warmup == "linear":
        return 1 - (1 - cur_iter / warmup_iters) * (1 - ratio)
    if warmup == "exp":
        return ratio ** (1 - cur_iter / warmup_iters)
    raise ValueError(f"warmup must be one of ('constant', 'linear', 'exp'), got {warmup!r}")


@dataclass(frozen=True)
class Schedule(Config):
    """Fields every policy has; not a policy itself.

    Attributes:
        by_epoch: the regular value changes when an epoch starts instead of every iteration.
        warmup: None, 'constant', 'linear' or 'exp' (only this switches warmup on).
        warmup_iters: warmup length in global iterations (epochs when ``warmup_by_epoch``).
        warmup_ratio: the warmup factor at iteration 0.
        warmup_divides: divide by the warmup factor; None: for ``momentum`` only (mmcv's).
    """

    by_epoch: bool = True
    warmup: WarmupType | None = None
    warmup_iters: int = 0
    warmup_ratio: float = 0.1
    warmup_by_epoch: bool = False
    warmup_divides: bool | None = None

    def __post_init__(self) -> None:
        if type(self) is Schedule:
            raise ValueError("Schedule is the base of the policies; use StepSchedule, ...")
        for name, value in vars(self).items():  # mmcv habit: lists for tuple fields
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        ok = self.warmup in (None, "constant", "linear", "exp")
        check(self, "warmup", ok, f"must be None, 'constant', 'linear' or 'exp': {self.warmup!r}")
        ok = isinstance(self.warmup_iters, int) and self.warmup_iters >= 0
        check(self, "warmup_iters", ok, f"must be an int >= 0, got {self.warmup_iters!r}")
        if self.warmup is None:
            return
        when = f"when warmup={self.warmup!r}"
        check(self, "warmup_iters", self.warmup_iters > 0, f"must be > 0 {when}, got 0")
        ok = 0 < self.warmup_ratio <= 1
        check(self, "warmup_ratio", ok, f"must be in (0, 1] {when}, got {self.warmup_ratio!r}")

    def value(self, base: float, progress: int, total: int | None, group: int) -> float:
        """The regular value of one group at ``progress`` of ``total``."""
        raise NotImplementedError(f"{type(self).__name__} must define value()")

    def check_run(self, bases: Sequence[float], state: TrainState) -> None:
        """Fail at the start of a run, not midway, when the schedule cannot cover it: evaluate
        the policy at the run's last epoch/iteration for every group."""
        if self.warmup is not None and self.warmup_by_epoch and state.iters_per_epoch <= 0:
            need = "(warmup_by_epoch=True) needs state.iters_per_epoch > 0"
            raise ValueError(f"{type(self).__name__}{need}, got {state.iters_per_epoch}")
        _, total = self.progress(state)
        for group, base in enumerate(bases):
            self.value(base, max(total - 1, 0) if total is not None else 0, total, group)

    def progress(self, state: TrainState) -> tuple[int, int | None]:
        if self.by_epoch:
            return state.epoch, state.max_epochs
        return state.iter, run_max_iters(state)

    def total(self, total: int | None) -> int:
        if total is None:
            unit = "max_epochs" if self.by_epoch else "max_iters"
            policy = f"{type(self).__name__}(by_epoch={self.by_epoch})"
            raise ValueError(f"{policy} needs the run's {unit}, which is not set for this run")
        return total

    def values_at(
        self, stage: Stage, state: TrainState, bases: Sequence[float], divides: bool
    ) -> tuple[float, ...] | None:
        """The per-group values to set at ``stage`` (``before_train_epoch`` or
        ``before_train_iter``), or None to keep them."""
        if stage is Stage.BEFORE_TRAIN_EPOCH:
            return self.regular(state, bases) if self.by_epoch else None
        length = self.warmup_iters * (state.iters_per_epoch if self.warmup_by_epoch else 1)
        if self.by_epoch and (self.warmup is None or state.iter > length):
            return None
        values = self.regular(state, bases)
        if self.warmup is None or state.iter >= length:
            return values
        factor = warmup_factor(self.warmup, state.iter, length, self.warmup_ratio)
        return tuple(v / factor if divides else v * factor for v in values)

    def regular(self, state: TrainState, bases: Sequence[float]) -> tuple[float, ...]:
        progress, total = self.progress(state)
        return tuple(self.value(b, progress, total, g) for g, b in enumerate(bases))


def schedule_hook(param: str, cfg: Schedule) -> Hook:
    """The hook, named ``param``, that schedules ``state.hyper[param]`` with ``cfg``; in mmcv's
    slot: lr VERY_HIGH, anything else HIGH, both before the optimizer step (ABOVE_NORMAL)."""
    divides = cfg.warmup_divides if cfg.warmup_divides is not None else param == "momentum"

    def bases(state: TrainState) -> tuple[float, ...]:
        values = tuple(state.base.get(param, ()))
        if not values:
            missing = f"state.base has no {param!r} values (it has {sorted(state.base)})"
            need = "the optimizer must have this hyperparameter, one value per parameter group"
            raise ValueError(f"{type(cfg).__name__} schedules {param!r}, but {missing}; {need}")
        return values

    def set_values(event: Event) -> TrainState | None:
        state = event.state
        values = cfg.values_at(event.stage, state, bases(state), divides)
        return None if values is None else replace(state, hyper={**state.hyper, param: values})

    fn = compose(
        only_at(Stage.BEFORE_RUN, lambda event: cfg.check_run(bases(event.state), event.state)),
        only_at((Stage.BEFORE_TRAIN_EPOCH, Stage.BEFORE_TRAIN_ITER), set_values),
    )
    priority = Priority.VERY_HIGH if param == "lr" else Priority.HIGH
    return Hook(name=param, fn=fn, priority=int(priority))


AnnealStrategy = Literal["cos", "linear"]


def annealing_cos(start: float, end: float, factor: float, weight: float = 1.0) -> float:
    """Cosine from ``weight * start + (1 - weight) * end`` (factor 0) down to ``end`` (factor 1);
    ``weight`` < 1 lowers the start of a restarted cycle (CosineRestart's weights)."""
    return end + 0.5 * weight * (start - end) * (cos(pi * factor) + 1)


def annealing_linear(start: float, end: float, factor: float) -> float:
    return start + (end - start) * factor


ANNEAL = {"cos": annealing_cos, "linear": annealing_linear}


def _check_per_iteration(cfg) -> None:
    """Cyclic and one-cycle policies change every iteration (mmcv supports nothing else)."""
    check(cfg, "by_epoch", not cfg.by_epoch, "must be False: this policy changes every iteration")
    ok = cfg.anneal_strategy in ANNEAL
    check(cfg, "anneal_strategy", ok, f"must be 'cos' or 'linear', got {cfg.anneal_strategy!r}")


@dataclass(frozen=True)
class FixedSchedule(Schedule):
    """The configured value (only the warmup changes it)."""

    def value(self, base, progress, total, group):
        return base


@dataclass(frozen=True)
class StepSchedule(Schedule):
    """``base * gamma ** n`` after ``n`` steps, never below ``min_value``.

    Attributes:
        step: an int decays every ``step`` epochs/iterations; a tuple lists the milestones
            (mmcv requires it; detfn defaults to the 1x schedule's).
        gamma: decay factor per step (mmcv's lr default; its momentum default is 0.5).
    """

    step: int | tuple[int, ...] = (8, 11)
    gamma: float = 0.1
    min_value: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        step = self.step
        steps = (step,) if isinstance(step, int) else step
        ok = isinstance(steps, tuple) and bool(steps) and all(type(n) is int for n in steps)
        what = "must be > 0 (an int) or a non-empty tuple of milestones: it must hold positive ints"
        check(self, "step", ok and min(steps) > 0, f"{what}, got {step!r}")
        check(self, "step", list(steps) == sorted(steps), f"milestones must be sorted: {step}")
        check_positive(self, "gamma")

    def value(self, base, progress, total, group):
        step = self.step
        decays = progress // step if isinstance(step, int) else bisect_right(step, progress)
        value = base * (self.gamma**decays)
        return value if self.min_value is None else max(value, self.min_value)


@dataclass(frozen=True)
class ExpSchedule(Schedule):
    """``base * gamma ** progress``. mmcv requires gamma; detfn defaults to 0.9."""

    gamma: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "gamma")

    def value(self, base, progress, total, group):
        return base * self.gamma**progress


@dataclass(frozen=True)
class PolySchedule(Schedule):
    """``(base - min_value) * (1 - progress / total) ** power + min_value``."""

    power: float = 1.0
    min_value: float = 0.0

    def value(self, base, progress, total, group):
        coeff = (1 - progress / self.total(total)) ** self.power
        return (base - self.min_value) * coeff + self.min_value


@dataclass(frozen=True)
class InvSchedule(Schedule):
    """``base * (1 + gamma * progress) ** -power`` (Caffe's 'inv'; detfn's gamma default is
    Caffe's example value 1e-4, mmcv requires one)."""

    gamma: float = 1e-4
    power: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "gamma")

    def value(self, base, progress, total, group):
        return base * (1 + self.gamma * progress) ** (-self.power)


@dataclass(frozen=True)
class CosineSchedule(Schedule):
    """Half a cosine from the base to ``min_value`` (or ``base * min_ratio``; neither: 0)."""

    min_value: float | None = None
    min_ratio: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_value is not None and self.min_ratio is not None:
            fail(self, "min_value", "and min_ratio are alternatives: set one of them, not both")

    def target(self, base: float) -> float:
        """``base * min_ratio`` or ``min_value``; neither set means 0 (mmcv requires one)."""
        return base * self.min_ratio if self.min_ratio is not None else self.min_value or 0.0

    def value(self, base, progress, total, group):
        return annealing_cos(base, self.target(base), progress / self.total(total))


@dataclass(frozen=True)
class LinearSchedule(CosineSchedule):
    """Straight line from the base to ``min_value`` (or ``base * min_ratio``) over the run."""

    def value(self, base, progress, total, group):
        return annealing_linear(base, self.target(base), progress / self.total(total))


@dataclass(frozen=True)
class FlatCosineSchedule(CosineSchedule):
    """Flat at the base for ``start_percent`` of the run (in [0, 1]), then cosine."""

    start_percent: float = 0.75

    def __post_init__(self) -> None:
        super().__post_init__()
        ok = isinstance(self.start_percent, float) and 0 <= self.start_percent <= 1
        check(self, "start_percent", ok, f"must be a float in [0, 1], got {self.start_percent!r}")

    def value(self, base, progress, total, group):
        total = self.total(total)
        start = round(total * self.start_percent)  # Python's round, as mmcv: round(2.5) == 2
        if progress - start < 0:
            return base
        return annealing_cos(base, self.target(base), (progress - start) / (total - start))


def restart_position(progress: int, cumulative_periods: tuple[int, ...]) -> int:
    """Index of the period holding ``progress`` (the first cumulative end above it)."""
    index = bisect_right(cumulative_periods, progress)
    if index == len(cumulative_periods):
        past = f"CosineRestart: progress {progress} is past the last period"
        fix = "the periods must cover the whole run"
        raise ValueError(f"{past} (cumulative periods {cumulative_periods}); {fix}")
    return index


@dataclass(frozen=True)
class CosineRestartSchedule(CosineSchedule):
    """Cosine annealing restarted at the end of each period (SGDR).

    Attributes:
        periods: each cycle's length, together covering the run (None: one period).
        restart_weights: the peak of cycle ``i`` is ``w_i * base + (1 - w_i) * target``.
    """

    periods: tuple[int, ...] | None = None
    restart_weights: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        super().__post_init__()
        periods = (1,) if self.periods is None else self.periods
        ok = bool(periods) and all(p > 0 for p in periods)
        check(self, "periods", ok, f"must be positive ints, got {self.periods!r}")
        ok = len(self.restart_weights) == len(periods)
        check(self, "restart_weights", ok, f"needs one weight per period ({len(periods)})")

    def value(self, base, progress, total, group):
        periods = self.periods if self.periods is not None else (self.total(total),)
        cumulative = tuple(accumulate(periods))
        idx = restart_position(progress, cumulative)
        nearest_restart = 0 if idx == 0 else cumulative[idx - 1]
        alpha = min((progress - nearest_restart) / periods[idx], 1)
        return annealing_cos(base, self.target(base), alpha, self.restart_weights[idx])


@dataclass(frozen=True)
class CyclicSchedule(Schedule):
    """mmcv's cyclic policy, iteration-based: each of ``cyclic_times`` cycles rises from
    ``base`` to ``base * peak`` over ``step_ratio_up`` of it, then goes to ``base * low``.

    Attributes:
        target_ratio: (peak, low) as multiples of the base; a single ``r`` means ``(r, r / 1e5)``
            (mmcv's lr default; its momentum one is (0.85/0.95, 1)).
        gamma: in (0, 1]; cycle ``c``'s peak ratio is ``1 - s + peak * s``, ``s = gamma ** c``.
    """

    by_epoch: bool = False
    target_ratio: tuple[float, ...] = (10.0, 1e-4)
    cyclic_times: int = 1
    step_ratio_up: float = 0.4
    anneal_strategy: AnnealStrategy = "cos"
    gamma: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_per_iteration(self)
        ok = len(self.target_ratio) in (1, 2)
        check(self, "target_ratio", ok, f"must hold 1 or 2 numbers, got {self.target_ratio!r}")
        check_positive(self, "cyclic_times")
        ok = 0 <= self.step_ratio_up < 1
        check(self, "step_ratio_up", ok, f"must be in [0, 1), got {self.step_ratio_up!r}")
        check(self, "gamma", 0 < self.gamma <= 1, f"must be in (0, 1], got {self.gamma!r}")

    def value(self, base, progress, total, group):
        per_cycle = self.total(total) // self.cyclic_times
        if per_cycle <= 0:
            times = f"cyclic_times={self.cyclic_times}"
            raise ValueError(f"cyclic schedule: max_iters={total} is smaller than {times}")
        up_iters = int(self.step_ratio_up * per_cycle)
        ratio = self.target_ratio
        peak, low = (ratio[0], ratio[0] / 1e5) if len(ratio) == 1 else ratio
        pos = progress % per_cycle
        scale = self.gamma ** (progress // per_cycle)
        anneal = ANNEAL[self.anneal_strategy]
        peak_ratio = 1 - scale + peak * scale
        if pos < up_iters:
            return anneal(base * 1, base * peak_ratio, pos / up_iters)
        return anneal(base * peak_ratio, base * low, (pos - up_iters) / (per_cycle - up_iters))


def one_cycle_ends(steps: int, pct_start: float, three_phase: bool) -> tuple[float, ...]:
    """Last iteration of each one-cycle phase; an error for phases that do not follow each other
    (a cycle too short for ``pct_start``)."""
    first, last = float(pct_start * steps) - 1, steps - 1
    ends = (first, float(2 * pct_start * steps) - 2, last) if three_phase else (first, last)
    if any(end <= start for start, end in zip((0, *ends[:-1]), ends)):
        bad = f"one-cycle phases end at iterations {ends}, which do not increase from 0"
        fix = f"raise the number of steps ({steps}) or change pct_start ({pct_start})"
        raise ValueError(f"{bad}: {fix}")
    return ends


@dataclass(frozen=True)
class OneCycleSchedule(Schedule):
    """The 1cycle policy (torch's ``OneCycleLR``), iteration-based: from ``max_value /
    div_factor`` up to ``max_value`` over ``pct_start`` of the cycle, then down to ``max_value /
    div_factor / final_div_factor``; ``inverse`` (the momentum's, mmcv's
    ``OneCycleMomentumUpdaterHook``): from ``max_value`` down to ``min_value`` and back.

    Attributes:
        max_value: one number or one per group; None takes each group's configured value.
        min_value: the low point of an ``inverse`` cycle (mmcv's ``base_momentum``, 0.85).
        total_steps: iterations in the cycle; None means the run's ``max_iters``.
        three_phase: rise, fall back, then anneal to the final value (``inverse``: hold).
    """

    by_epoch: bool = False
    max_value: float | tuple[float, ...] | None = None
    min_value: float | tuple[float, ...] | None = None
    inverse: bool = False
    total_steps: int | None = None
    pct_start: float = 0.3
    anneal_strategy: AnnealStrategy = "cos"
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    three_phase: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_per_iteration(self)
        ok = isinstance(self.pct_start, float) and 0 <= self.pct_start <= 1
        check(self, "pct_start", ok, f"must be a float in [0, 1], got {self.pct_start!r}")
        steps = self.total_steps
        ok = steps is None or (isinstance(steps, int) and steps > 0)
        check(self, "total_steps", ok, f"must be a positive int or None, got {steps!r}")
        check_positive(self, "div_factor", "final_div_factor")
        ok = not self.inverse or self.min_value is not None
        check(self, "min_value", ok, "must be set for an inverse cycle (the momentum's)")
        for name in ("max_value", "min_value"):
            check(self, name, getattr(self, name) != (), "must not be an empty tuple")

    def value(self, base, progress, total, group):
        steps = self.total_steps if self.total_steps is not None else self.total(total)
        ends = one_cycle_ends(steps, self.pct_start, self.three_phase)
        per_group = lambda v: v[group] if isinstance(v, tuple) else v  # noqa: E731
        high = base if self.max_value is None else per_group(self.max_value)
        if self.inverse:
            low = per_group(self.min_value)
            points = ((high, low), (low, high), (high, high))
        else:
            initial = high / self.div_factor
            peak = initial * self.div_factor
            final = initial * (1 / self.final_div_factor)
            if self.three_phase:
                points = ((initial * 1, peak), (peak, initial * 1), (initial * 1, final))
            else:
                points = ((initial * 1, peak), (peak, final))
        anneal, start = ANNEAL[self.anneal_strategy], 0.0
        for i, (end, (first, last)) in enumerate(zip(ends, points)):
            if progress <= end or i == len(ends) - 1:
                return anneal(first, last, (progress - start) / (end - start))
            start = end

    def check_run(self, bases, state: TrainState) -> None:
        name = type(self).__name__
        for field in ("max_value", "min_value"):
            value = getattr(self, field)
            n = len(value) if isinstance(value, tuple) else len(bases)
            if n != len(bases):
                raise ValueError(f"{name}.{field} has {n} values for {len(bases)} parameter groups")
        steps, total = self.total_steps, self.progress(state)[1]
        if steps is not None and total is not None and steps < total:
            raise ValueError(f"{name}.total_steps={steps} must be >= the run's max_iters={total}")
        super().check_run(bases, state)


ScheduleConfig = Union[
    FixedSchedule, StepSchedule, ExpSchedule, PolySchedule, InvSchedule, CosineSchedule,
    LinearSchedule, FlatCosineSchedule, CosineRestartSchedule, CyclicSchedule, OneCycleSchedule,
]  # fmt: skip
"""Any policy: use it as a field type (tyro subcommands, JSON type tags)."""

SCHEDULES: tuple[type[Schedule], ...] = typing.get_args(ScheduleConfig)

for _policy in SCHEDULES:  # build(StepSchedule(), param="lr") -> the hook
    register(_policy)(lambda cfg, *, param: schedule_hook(param, cfg))
