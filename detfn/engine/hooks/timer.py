"""Iteration timer (mmcv's ``IterTimerHook``): a clock reading at the start of the epoch and after
each iteration; ``data_time`` is the gap until ``before_*_iter`` (the loader's share), ``time``
the gap until ``after_*_iter`` (the whole iteration). The last reading is in
``state.hooks["timer"]``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from detfn.engine.combinators import compose, only_at
from detfn.engine.events import Event, Hook, HookConfig, Stage, get_priority
from detfn.engine.state import TrainState, with_hook_state
from detfn.registry import register

TIMER = "timer"


@dataclass(frozen=True)
class TimerHookConfig(HookConfig):
    """Priority LOW: after the optimizer step and the checkpoint, so ``time`` covers the whole
    iteration, and before the loggers (VERY_LOW)."""

    priority: int | str = "LOW"


@register(TimerHookConfig)
def build_timer_hook(
    cfg: TimerHookConfig, *, clock: Callable[[], float] = time.perf_counter, **context: Any
) -> Hook:
    """``clock``: seconds, monotonic."""

    def start(event: Event) -> TrainState:
        return with_hook_state(event.state, TIMER, {"last": clock(), "data_time": 0.0})

    def loaded(event: Event) -> TrainState:
        # a run resumed mid-epoch has no epoch start: take a fresh reading
        last = (event.state.hooks.get(TIMER) or {"last": clock()})["last"]
        return with_hook_state(event.state, TIMER, {"last": last, "data_time": clock() - last})

    def done(event: Event) -> TrainState:
        before, now = event.state.hooks.get(TIMER) or {"last": clock(), "data_time": 0.0}, clock()
        event.outputs.data_time = before["data_time"]
        event.outputs.time = now - before["last"]
        return with_hook_state(event.state, TIMER, {"last": now, "data_time": 0.0})

    fn = compose(
        only_at((Stage.BEFORE_TRAIN_EPOCH, Stage.BEFORE_VAL_EPOCH), start),
        only_at((Stage.BEFORE_TRAIN_ITER, Stage.BEFORE_VAL_ITER), loaded),
        only_at((Stage.AFTER_TRAIN_ITER, Stage.AFTER_VAL_ITER), done),
    )
    return Hook(TIMER, fn, get_priority(cfg.priority), writes=("data_time", "time"))
