"""The learning-rate hook: sets ``state.lr`` (one value per parameter group) from a policy.

``build(cfg)`` for any lr policy config (:data:`detfn.engine.schedules.LrConfig`) returns
``Hook(name="lr", priority=VERY_HIGH)`` - mmcv's slot, so the lr is set before the optimizer
step (ABOVE_NORMAL) and the loggers read the lr the step used. The hook is stateless: the value
is a pure function of ``state.base_lr`` (the configured lr of each group), the counters and the
run length, so a resumed run continues the schedule exactly.

Events (mmcv ``LrUpdaterHook``):
    before_run          check the schedule covers the run (ValueError otherwise).
    before_train_epoch  by_epoch: the epoch's regular lr.
    before_train_iter   warmup / iteration-based lr (see :mod:`detfn.engine.schedules.updater`).
"""

from __future__ import annotations

import dataclasses

from detfn.engine.events import Event, Hook, HookFn, Stage
from detfn.engine.priority import Priority
from detfn.engine.schedules.lr_configs import LR_CONFIGS, LrScheduleConfig
from detfn.engine.schedules.lr_policies import check_lr_schedule, regular_lr
from detfn.engine.schedules.updater import (
    check_warmup_run,
    run_max_iters,
    schedule_progress,
    updated_values,
)
from detfn.engine.schedules.warmup import warmup_lr
from detfn.engine.state import TrainState
from detfn.registry import register

__all__ = ["LR_HOOK_NAME", "LR_PRIORITY", "build_lr_hook", "lr_at", "regular_lrs"]

LR_HOOK_NAME = "lr"
LR_PRIORITY = Priority.VERY_HIGH  # mmcv's slot: before momentum (HIGH) and the optimizer step


def regular_lrs(cfg: LrScheduleConfig, state: TrainState) -> tuple[float, ...]:
    """The regular (un-warmed) lr of every parameter group at ``state``."""
    progress, max_progress = schedule_progress(cfg.by_epoch, state)
    return tuple(
        regular_lr(cfg, base, progress, max_progress, group)
        for group, base in enumerate(state.base_lr)
    )


def lr_at(cfg: LrScheduleConfig, stage: Stage, state: TrainState) -> tuple[float, ...] | None:
    """The lr of every group to set at ``stage``, or None to keep ``state.lr``."""
    return updated_values(cfg, stage, state, lambda s: regular_lrs(cfg, s), warmup_lr)


def check_lr_run(cfg: LrScheduleConfig, state: TrainState) -> None:
    """Raise ValueError at ``before_run`` for a schedule that cannot cover this run."""
    check_warmup_run(cfg, state)
    _, max_progress = schedule_progress(cfg.by_epoch, state)
    check_lr_schedule(cfg, tuple(state.base_lr), max_progress, run_max_iters(state))


def lr_hook_fn(cfg: LrScheduleConfig) -> HookFn:
    """The hook function of ``cfg``: returns a state with a new ``lr`` or None."""

    def on_event(event: Event) -> TrainState | None:
        if event.stage is Stage.BEFORE_RUN:
            check_lr_run(cfg, event.state)
            return None
        values = lr_at(cfg, event.stage, event.state)
        return None if values is None else dataclasses.replace(event.state, lr=values)

    return on_event


def build_lr_hook(cfg: LrScheduleConfig, **context: object) -> Hook:
    """Builder registered for every lr policy config: ``build(StepLrConfig()) -> Hook``."""
    del context  # the hook needs nothing beyond its config and the events
    return Hook(name=LR_HOOK_NAME, fn=lr_hook_fn(cfg), priority=int(LR_PRIORITY))


for _config_type in LR_CONFIGS:
    register(_config_type)(build_lr_hook)
