"""A process-wide default that a ``with`` block changes and restores (the ops' backends)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")

__all__ = ["switched"]


@contextlib.contextmanager
def switched(slot: list[T], value: T) -> Iterator[None]:
    """Within the block ``slot[0]`` is ``value``; the previous value comes back after it, also
    when the block raises. ``slot`` is a one-element list owned by the module it configures."""
    previous = slot[0]
    slot[0] = value
    try:
        yield
    finally:
        slot[0] = previous
