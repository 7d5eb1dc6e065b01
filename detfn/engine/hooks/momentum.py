"""The momentum hook: sets ``state.momentum`` (SGD momentum or Adam beta1, one per group).

``build(cfg)`` for any momentum policy config (:data:`detfn.engine.schedules.MomentumConfig`)
returns ``Hook(name="momentum", priority=HIGH)`` - mmcv's slot, after the lr hook and before
the optimizer step.

Base momentum: the schedule starts from each group's configured momentum. ``state.momentum``
holds it when the run starts, but later holds the scheduled value, so at ``before_run`` the hook
copies it to ``state.hooks["momentum"] = {"base_momentum": [m0, m1, ...]}`` unless that entry
already exists (a resumed run keeps the configured base, as mmcv's ``initial_momentum`` does).
One-cycle takes its bounds from the config instead, and sets ``max_momentum`` at before_run.

Events (mmcv ``MomentumUpdaterHook``):
    before_run          record the base momentum, check the schedule covers the run.
    before_train_epoch  by_epoch: the epoch's regular momentum.
    before_train_iter   warmup (divides) / iteration-based momentum.
"""

from __future__ import annotations

import dataclasses

from detfn.engine.events import Event, Hook, HookFn, Stage
from detfn.engine.priority import Priority
from detfn.engine.schedules.momentum_configs import (
    MOMENTUM_CONFIGS,
    MomentumScheduleConfig,
    OneCycleMomentumConfig,
)
from detfn.engine.schedules.momentum_policies import (
    check_momentum_schedule,
    one_cycle_bounds,
    regular_momentum,
)
from detfn.engine.schedules.updater import check_warmup_run, schedule_progress, updated_values
from detfn.engine.schedules.warmup import warmup_momentum
from detfn.engine.state import TrainState
from detfn.registry import register

__all__ = [
    "MOMENTUM_HOOK_NAME",
    "MOMENTUM_PRIORITY",
    "base_momentum",
    "build_momentum_hook",
    "momentum_at",
    "regular_momenta",
]

MOMENTUM_HOOK_NAME = "momentum"
MOMENTUM_PRIORITY = Priority.HIGH  # mmcv's slot: after the lr hook, before the optimizer step


def base_momentum(state: TrainState) -> tuple[float, ...]:
    """The configured momentum per group recorded at ``before_run``."""
    entry = state.hooks.get(MOMENTUM_HOOK_NAME)
    if not isinstance(entry, dict) or "base_momentum" not in entry:
        raise RuntimeError(
            "momentum hook: state.hooks['momentum']['base_momentum'] is missing; the loop must "
            "dispatch before_run to the hook before any train event"
        )
    return tuple(float(m) for m in entry["base_momentum"])


def regular_momenta(cfg: MomentumScheduleConfig, state: TrainState) -> tuple[float, ...]:
    """The regular (un-warmed) momentum of every parameter group at ``state``."""
    progress, max_progress = schedule_progress(cfg.by_epoch, state)
    return tuple(
        regular_momentum(cfg, base, progress, max_progress, group)
        for group, base in enumerate(base_momentum(state))
    )


def momentum_at(
    cfg: MomentumScheduleConfig, stage: Stage, state: TrainState
) -> tuple[float, ...] | None:
    """The momentum of every group to set at ``stage``, or None to keep ``state.momentum``."""
    return updated_values(cfg, stage, state, lambda s: regular_momenta(cfg, s), warmup_momentum)


def start_run(cfg: MomentumScheduleConfig, state: TrainState) -> TrainState:
    """``before_run``: record the base momentum (unless resumed) and check the schedule."""
    entry = state.hooks.get(MOMENTUM_HOOK_NAME)
    if isinstance(entry, dict) and "base_momentum" in entry:
        base = tuple(float(m) for m in entry["base_momentum"])
    else:
        base = tuple(float(m) for m in state.momentum)
    check_warmup_run(cfg, state)
    _, max_progress = schedule_progress(cfg.by_epoch, state)
    check_momentum_schedule(cfg, base, max_progress)
    hooks = {**state.hooks, MOMENTUM_HOOK_NAME: {"base_momentum": list(base)}}
    state = dataclasses.replace(state, hooks=hooks)
    if isinstance(cfg, OneCycleMomentumConfig):
        start = tuple(one_cycle_bounds(cfg, group)[1] for group in range(len(base)))
        state = dataclasses.replace(state, momentum=start)
    return state


def momentum_hook_fn(cfg: MomentumScheduleConfig) -> HookFn:
    """The hook function of ``cfg``: returns a state with a new ``momentum`` or None."""

    def on_event(event: Event) -> TrainState | None:
        if event.stage is Stage.BEFORE_RUN:
            return start_run(cfg, event.state)
        values = momentum_at(cfg, event.stage, event.state)
        return None if values is None else dataclasses.replace(event.state, momentum=values)

    return on_event


def build_momentum_hook(cfg: MomentumScheduleConfig, **context: object) -> Hook:
    """Builder registered for every momentum policy config."""
    del context  # the hook needs nothing beyond its config and the events
    return Hook(name=MOMENTUM_HOOK_NAME, fn=momentum_hook_fn(cfg), priority=int(MOMENTUM_PRIORITY))


for _config_type in MOMENTUM_CONFIGS:
    register(_config_type)(build_momentum_hook)
