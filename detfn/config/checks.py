"""Validation helpers for ``__post_init__`` of frozen configs.

Each helper raises ``ValueError`` naming ``Class.field`` and the bad value, so a wrong config
fails where it is written, not deep inside a training run:

    def __post_init__(self):
        check_positive(self, "lr")
        check_unit_interval(self, "pos_iou_thr")
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "check",
    "check_in_range",
    "check_non_negative",
    "check_positive",
    "check_sorted",
    "check_unit_interval",
    "fail",
]


def fail(cfg: Any, field: str, message: str) -> None:
    """Raise the standard one-line ``ValueError`` for ``cfg.field``."""
    raise ValueError(f"{type(cfg).__name__}.{field} {message}")


def check(cfg: Any, field: str, ok: bool, message: str) -> None:
    """Raise ``ValueError('Class.field <message>')`` unless ``ok``."""
    if not ok:
        fail(cfg, field, message)


def check_positive(cfg: Any, *fields: str) -> None:
    """Each field must be > 0."""
    for field in fields:
        value = getattr(cfg, field)
        check(cfg, field, value > 0, f"must be > 0, got {value!r}")


def check_non_negative(cfg: Any, *fields: str) -> None:
    """Each field must be >= 0."""
    for field in fields:
        value = getattr(cfg, field)
        check(cfg, field, value >= 0, f"must be >= 0, got {value!r}")


def check_in_range(cfg: Any, field: str, low: float, high: float) -> None:
    """``low <= field <= high``."""
    value = getattr(cfg, field)
    check(cfg, field, low <= value <= high, f"must be in [{low}, {high}], got {value!r}")


def check_unit_interval(cfg: Any, *fields: str) -> None:
    """Each field must be a probability or IoU threshold in [0, 1]."""
    for field in fields:
        check_in_range(cfg, field, 0.0, 1.0)


def check_sorted(cfg: Any, field: str, values: Iterable[float] | None = None) -> None:
    """The field (a sequence) must be non-decreasing."""
    seq = list(getattr(cfg, field) if values is None else values)
    check(cfg, field, all(a <= b for a, b in zip(seq, seq[1:])), f"must be sorted, got {seq!r}")
