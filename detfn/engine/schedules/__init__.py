"""Schedules for any per-group hyperparameter: one config per mmcv 1.x policy.

``RunnerConfig(lr=StepSchedule(...), momentum=CosineSchedule(...), weight_decay=...)``; the hook
that applies a schedule is :func:`detfn.engine.hooks.schedule.schedule_hook`.
"""

from detfn.engine.schedules.curves import AnnealStrategy
from detfn.engine.schedules.policies import (
    SCHEDULES,
    CosineRestartSchedule,
    CosineSchedule,
    CyclicSchedule,
    ExpSchedule,
    FixedSchedule,
    FlatCosineSchedule,
    InvSchedule,
    LinearSchedule,
    OneCycleSchedule,
    PolySchedule,
    ScheduleConfig,
    StepSchedule,
)
from detfn.engine.schedules.schedule import Schedule, WarmupType

__all__ = [
    "SCHEDULES",
    "AnnealStrategy",
    "CosineRestartSchedule",
    "CosineSchedule",
    "CyclicSchedule",
    "ExpSchedule",
    "FixedSchedule",
    "FlatCosineSchedule",
    "InvSchedule",
    "LinearSchedule",
    "OneCycleSchedule",
    "PolySchedule",
    "Schedule",
    "ScheduleConfig",
    "StepSchedule",
    "WarmupType",
]
