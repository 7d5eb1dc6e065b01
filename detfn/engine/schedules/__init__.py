"""Schedules for any per-group hyperparameter: one config per mmcv 1.x policy, applied by
:func:`~detfn.engine.schedules.schedule.schedule_hook`:
``RunnerConfig(lr=StepSchedule(...), momentum=CosineSchedule(...), weight_decay=...)``."""

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
from detfn.engine.schedules.schedule import Schedule, schedule_hook

__all__ = ["SCHEDULES", "Schedule", "ScheduleConfig", "FixedSchedule", "StepSchedule"]
__all__ += ["ExpSchedule", "PolySchedule", "InvSchedule", "CosineSchedule", "LinearSchedule"]
__all__ += ["FlatCosineSchedule", "CosineRestartSchedule", "CyclicSchedule", "OneCycleSchedule"]
__all__ += ["schedule_hook"]
