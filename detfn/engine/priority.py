"""Hook priorities with mmcv's levels and ``get_priority`` rules.

Lower runs earlier; equal priorities keep registration order.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from detfn.config import Config, fail


class Priority(IntEnum):
    """mmcv's named levels."""

    HIGHEST = 0
    VERY_HIGH = 10
    HIGH = 30
    ABOVE_NORMAL = 40
    NORMAL = 50
    BELOW_NORMAL = 60
    LOW = 70
    VERY_LOW = 90
    LOWEST = 100


def get_priority(priority: int | str | Priority) -> int:
    """An int in [0, 100], a :class:`Priority`, or a level name in any case -> the int value.

    Raises:
        ValueError: an int outside [0, 100] or an unknown level name.
        TypeError: any other type (mmcv's ``get_priority`` contract).
    """
    if isinstance(priority, Priority):
        return int(priority)
    if isinstance(priority, bool):
        raise TypeError("priority must be an integer or Priority enum value")
    if isinstance(priority, int):
        if not 0 <= priority <= 100:
            raise ValueError("priority must be between 0 and 100")
        return priority
    if isinstance(priority, str):
        try:
            return int(Priority[priority.upper()])
        except KeyError:
            names = ", ".join(p.name for p in Priority)
            raise ValueError(f"unknown priority {priority!r}; use one of {names}") from None
    raise TypeError("priority must be an integer or Priority enum value")


@dataclass(frozen=True)
class HookConfig(Config):
    """The base of hook configs: a ``priority`` (an int in [0, 100] or a level name), checked."""

    priority: int | str = "NORMAL"

    def __post_init__(self) -> None:
        try:
            get_priority(self.priority)
        except (ValueError, TypeError) as error:
            fail(self, "priority", f"is invalid ({error}), got {self.priority!r}")
