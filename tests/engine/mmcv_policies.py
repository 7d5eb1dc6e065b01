"""Test helper: mmcv 1.x ``lr_config`` / ``momentum_config`` dicts as detfn schedules.

mmcv names a policy by a string (``policy='step'`` or ``'CosineAnnealing'``); here the same name,
in any case and with or without underscores, selects the schedule class, and mmcv's field names
(``min_lr``, ``min_momentum_ratio``, ``max_lr``, ``base_momentum``, ...) become detfn's. Lists
become tuples; a float ``target_ratio`` becomes a 1-tuple (mmcv's ``(r, r / 1e5)`` rule).
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import detfn.engine.schedules as sch

POLICIES = {
    "fixed": sch.FixedSchedule,
    "step": sch.StepSchedule,
    "exp": sch.ExpSchedule,
    "poly": sch.PolySchedule,
    "inv": sch.InvSchedule,
    "cosineannealing": sch.CosineSchedule,
    "flatcosineannealing": sch.FlatCosineSchedule,
    "cosinerestart": sch.CosineRestartSchedule,
    "linearannealing": sch.LinearSchedule,
    "cyclic": sch.CyclicSchedule,
    "onecycle": sch.OneCycleSchedule,
}
RENAMED = {
    "min_lr": "min_value",
    "min_momentum": "min_value",
    "min_lr_ratio": "min_ratio",
    "min_momentum_ratio": "min_ratio",
    "max_lr": "max_value",
    "max_momentum": "max_value",
    "base_momentum": "min_value",
}


def schedule_from_mmcv(policy: str, *, momentum: bool = False, **options: Any) -> sch.Schedule:
    """The schedule of ``dict(policy=policy, **options)``; ``momentum`` for a momentum_config
    (its one-cycle is the inverse cycle)."""
    key = policy.replace("_", "").lower()
    cls = POLICIES.get(key)
    if cls is None:
        close = difflib.get_close_matches(key, list(POLICIES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown policy {policy!r}; known: {sorted(POLICIES)}{hint}")
    values = {RENAMED.get(k, k): _tupled(k, v) for k, v in options.items()}
    if momentum and cls is sch.OneCycleSchedule:
        values = {"inverse": True, "min_value": 0.85, "max_value": 0.95, **values}
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {unknown}; fields: {sorted(fields)}")
    return cls(**values)


def _tupled(name: str, value: Any) -> Any:
    if isinstance(value, list):
        return tuple(value)
    if name == "target_ratio" and isinstance(value, (int, float)):
        return (float(value),)
    return value
