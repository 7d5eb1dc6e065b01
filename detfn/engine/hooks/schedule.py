"""The schedule hook: sets one per-group hyperparameter (``state.hyper[param]``) from a policy.

``schedule_hook("lr", StepSchedule(...))`` (or ``build(cfg, param="lr")``) returns a hook named
after the hyperparameter, in mmcv's slot: lr VERY_HIGH (10), momentum and everything else HIGH
(30), so values are set before the optimizer step (ABOVE_NORMAL) and the loggers read what the
step used. The hook is stateless: the value is a pure function of ``state.base[param]`` (the
configured value of each group), the counters and the run length, so a resumed run continues the
schedule exactly.

Events (mmcv's ``LrUpdaterHook`` / ``MomentumUpdaterHook``):
    before_run          check the schedule covers the run (ValueError otherwise).
    before_train_epoch  by_epoch: the epoch's regular value.
    before_train_iter   warmup / iteration-based value (see :mod:`detfn.engine.schedules`).
"""

from __future__ import annotations

from dataclasses import replace

from detfn.engine.events import Event, Hook, Stage
from detfn.engine.priority import Priority
from detfn.engine.schedules import SCHEDULES, Schedule
from detfn.engine.state import TrainState
from detfn.registry import register


def schedule_hook(param: str, cfg: Schedule) -> Hook:
    """The hook that schedules ``state.hyper[param]`` with ``cfg``."""
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

    def fn(event: Event) -> TrainState | None:
        state = event.state
        if event.stage is Stage.BEFORE_RUN:
            cfg.check_run(bases(state), state)
            return None
        values = cfg.values_at(event.stage, state, bases(state), divides)
        return None if values is None else replace(state, hyper={**state.hyper, param: values})

    priority = Priority.VERY_HIGH if param == "lr" else Priority.HIGH
    return Hook(name=param, fn=fn, priority=int(priority))


def build_schedule_hook(cfg: Schedule, *, param: str) -> Hook:
    """Builder registered for every policy: ``build(StepSchedule(), param="lr") -> Hook``."""
    return schedule_hook(param, cfg)


for _policy in SCHEDULES:
    register(_policy)(build_schedule_hook)
