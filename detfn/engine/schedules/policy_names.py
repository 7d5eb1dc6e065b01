"""Translate mmcv 1.x ``lr_config`` / ``momentum_config`` dicts into detfn configs.

mmcv names a policy by a string (``policy='step'`` or ``'CosineAnnealing'``) mapped to
``<Policy>LrUpdaterHook``; here the same name selects the config class, in any case and with or
without underscores: ``lr_config_from_policy(**dict(policy='step', step=[8, 11], warmup='linear',
warmup_iters=500, warmup_ratio=0.001))``. Lists become tuples; a float ``target_ratio`` becomes a
1-tuple (mmcv's ``(r, r / 1e5)`` rule then applies).
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from detfn.engine.schedules.lr_configs import LR_CONFIGS, LrScheduleConfig
from detfn.engine.schedules.momentum_configs import MOMENTUM_CONFIGS, MomentumScheduleConfig

__all__ = ["lr_config_from_policy", "momentum_config_from_policy"]


def _key(name: str) -> str:
    return name.replace("_", "").lower()


def _policy_table(classes: tuple[type, ...], suffix: str) -> dict[str, type]:
    """``{'step': StepLrConfig, 'cosineannealing': CosineAnnealingLrConfig, ...}``."""
    return {_key(c.__name__[: -len(suffix)]): c for c in classes}


def _from_policy(classes: tuple[type, ...], suffix: str, policy: str, options: dict) -> Any:
    table = _policy_table(classes, suffix)
    cls = table.get(_key(policy))
    if cls is None:
        close = difflib.get_close_matches(_key(policy), list(table), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown {suffix} policy {policy!r}; known: {sorted(table)}{hint}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {unknown}; fields: {sorted(fields)}")
    values = {k: _tupled(k, v) for k, v in options.items()}
    return cls(**values)


def _tupled(name: str, value: Any) -> Any:
    if isinstance(value, list):
        return tuple(value)
    if name == "target_ratio" and isinstance(value, (int, float)):
        return (float(value),)
    return value


def lr_config_from_policy(policy: str, **options: Any) -> LrScheduleConfig:
    """The lr config for mmcv's ``lr_config=dict(policy=policy, **options)``.

    Raises:
        ValueError: an unknown policy (with the closest name) or an unknown option.
    """
    return _from_policy(LR_CONFIGS, "LrConfig", policy, options)


def momentum_config_from_policy(policy: str, **options: Any) -> MomentumScheduleConfig:
    """The momentum config for mmcv's ``momentum_config=dict(policy=policy, **options)``."""
    return _from_policy(MOMENTUM_CONFIGS, "MomentumConfig", policy, options)
