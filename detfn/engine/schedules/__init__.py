"""Schedules for any per-group hyperparameter: one config per mmcv 1.x policy.

``RunnerConfig(lr=StepSchedule(...), momentum=CosineSchedule(...), weight_decay=...)``; the hook
that applies a schedule is :func:`detfn.engine.hooks.schedule.schedule_hook`.
"""

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
from detfn.engine.schedules.schedule import Schedule

__all__ = ["SCHEDULES", "Schedule", "ScheduleConfig", "FixedSchedule", "StepSchedule"]
__all__ += ["ExpSchedule", "PolySchedule", "InvSchedule", "CosineSchedule", "LinearSchedule"]
__all__ += ["FlatCosineSchedule", "CosineRestartSchedule", "CyclicSchedule", "OneCycleSchedule"]
