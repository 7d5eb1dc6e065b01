"""Iteration timer: how long each train iteration took, and how much of it waited for data.

Like mmcv's ``IterTimerHook``: a clock reading at the start of the epoch and after each
iteration; ``data_time`` is the gap until ``before_train_iter`` (the loader's share) and ``time``
the gap until ``after_train_iter`` (the whole iteration). Both are added to the
``after_train_iter`` outputs, where the loggers (lower priority) read them.

The last clock reading and the last ``data_time`` live in ``state.hooks["timer"]`` (floats), so the
hook is a pure function of the event, the state and the clock it was built with.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from detfn.config import Config, fail
from detfn.engine.events import Event, Hook, Stage
from detfn.engine.priority import Priority, get_priority
from detfn.engine.state import TrainState
from detfn.registry import register

__all__ = ["TIMER", "TimerHookConfig", "build_timer_hook", "timer_fn"]

TIMER = "timer"
# LOW: after the optimizer step (ABOVE_NORMAL) and the checkpoint (NORMAL), so ``time`` covers
# the whole iteration as the user experiences it, and before the loggers (VERY_LOW).
DEFAULT_PRIORITY = Priority.LOW.name


@dataclass(frozen=True)
class TimerHookConfig(Config):
    """Iteration timer (mmcv ``IterTimerHook``)."""

    priority: int | str = DEFAULT_PRIORITY
    """An mmcv level name (any case) or an int in [0, 100]."""

    def __post_init__(self) -> None:
        try:
            get_priority(self.priority)
        except (ValueError, TypeError) as error:
            fail(self, "priority", f"is invalid ({error}), got {self.priority!r}")


def timer_fn(event: Event, clock: Callable[[], float] = time.perf_counter) -> TrainState | None:
    """Record clock readings in ``state.hooks["timer"]``; add ``data_time``/``time`` to outputs."""
    stage, state = event.stage, event.state
    if stage in (Stage.BEFORE_TRAIN_EPOCH, Stage.BEFORE_VAL_EPOCH):
        return _put(state, {"last": clock(), "data_time": 0.0})
    if stage in (Stage.BEFORE_TRAIN_ITER, Stage.BEFORE_VAL_ITER):
        mine = _get(state, clock)
        return _put(state, {**mine, "data_time": clock() - mine["last"]})
    if stage in (Stage.AFTER_TRAIN_ITER, Stage.AFTER_VAL_ITER):
        mine = _get(state, clock)
        now = clock()
        if isinstance(event.outputs, dict):
            event.outputs["data_time"] = mine["data_time"]
            event.outputs["time"] = now - mine["last"]
        return _put(state, {"last": now, "data_time": 0.0})
    return None


def _get(state: TrainState, clock: Callable[[], float]) -> dict[str, float]:
    """The timer's state; a run resumed mid-epoch without an epoch start gets a fresh reading."""
    mine = state.hooks.get(TIMER)
    return dict(mine) if mine else {"last": clock(), "data_time": 0.0}


def _put(state: TrainState, mine: dict[str, float]) -> TrainState:
    return dataclasses.replace(state, hooks={**state.hooks, TIMER: mine})


@register(TimerHookConfig)
def build_timer_hook(
    cfg: TimerHookConfig, *, clock: Callable[[], float] = time.perf_counter, **context: Any
) -> Hook:
    """The timer hook; ``clock`` (seconds, monotonic) is injectable for tests."""
    del context
    return Hook(TIMER, lambda event: timer_fn(event, clock), get_priority(cfg.priority))
