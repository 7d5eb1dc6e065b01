"""The base of every schedule and the hook that applies one to a per-group hyperparameter.

A policy is ``value(base, progress, total, group) -> float``, a pure function of ``progress`` (the
epoch when ``by_epoch``, else the global iteration) of ``total`` (``max_epochs`` / ``max_iters``).
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

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from detfn.config import Config, check, fail
from detfn.engine.combinators import compose, only_at
from detfn.engine.events import Event, Hook, Priority, Stage
from detfn.engine.state import TrainState, run_max_iters

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
        if self.warmup not in (None, "constant", "linear", "exp"):
            fail(
                self, "warmup", f"must be None, 'constant', 'linear' or 'exp', got {self.warmup!r}"
            )
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
            raise ValueError(
                f"{type(self).__name__}(warmup_by_epoch=True) needs state.iters_per_epoch > 0, "
                f"got {state.iters_per_epoch}"
            )
        _, total = self.progress(state)
        for group, base in enumerate(bases):
            self.value(base, max(total - 1, 0) if total is not None else 0, total, group)

    def progress(self, state: TrainState) -> tuple[int, int | None]:
        """(progress, total): epochs when ``by_epoch``, else global iterations."""
        if self.by_epoch:
            return state.epoch, state.max_epochs
        return state.iter, run_max_iters(state)

    def total(self, total: int | None) -> int:
        """``total``, or a clear error for a policy that needs the run's length."""
        if total is None:
            unit = "max_epochs" if self.by_epoch else "max_iters"
            raise ValueError(
                f"{type(self).__name__}(by_epoch={self.by_epoch}) needs the run's {unit}, "
                "which is not set for this run"
            )
        return total

    def values_at(
        self, stage: Stage, state: TrainState, bases: Sequence[float], divides: bool
    ) -> tuple[float, ...] | None:
        """The per-group values to set at ``stage``, or None to keep them."""
        if stage is Stage.BEFORE_TRAIN_EPOCH:
            return self.regular(state, bases) if self.by_epoch else None
        if stage is not Stage.BEFORE_TRAIN_ITER:
            return None
        cur = state.iter
        length = self.warmup_iters * (state.iters_per_epoch if self.warmup_by_epoch else 1)
        if self.by_epoch and (self.warmup is None or cur > length):
            return None
        values = self.regular(state, bases)
        if self.warmup is None or cur >= length:
            return values
        factor = warmup_factor(self.warmup, cur, length, self.warmup_ratio)
        return tuple(v / factor if divides else v * factor for v in values)

    def regular(self, state: TrainState, bases: Sequence[float]) -> tuple[float, ...]:
        progress, total = self.progress(state)
        return tuple(self.value(b, progress, total, g) for g, b in enumerate(bases))


def per_group(value: Any, group: int) -> Any:
    """One value for all groups, or the ``group``-th of a tuple."""
    return value[group] if isinstance(value, tuple) else value


def schedule_hook(param: str, cfg: Schedule) -> Hook:
    """The hook, named ``param``, that schedules ``state.hyper[param]`` with ``cfg``; in mmcv's
    slot: lr VERY_HIGH, anything else HIGH, both before the optimizer step (ABOVE_NORMAL)."""
    divides = cfg.warmup_divides if cfg.warmup_divides is not None else param == "momentum"

    def bases(state: TrainState) -> tuple[float, ...]:
        values = tuple(state.base.get(param, ()))
        if not values:
            raise ValueError(
                f"{type(cfg).__name__} schedules {param!r}, but state.base has no {param!r} "
                f"values (it has {sorted(state.base)}); the optimizer must have this "
                "hyperparameter, one value per parameter group"
            )
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
