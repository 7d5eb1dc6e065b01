"""Errors, warnings and the skip marker of the data layer.

Bad input must fail with one line that names the file and the key, never with a deep torch or
pycocotools traceback, and must never turn silently into wrong targets.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AnnotationError", "BadImageError", "DataWarning", "Skipped"]


class AnnotationError(ValueError):
    """An annotation file that cannot be used: the message names the file and the key."""


class BadImageError(ValueError):
    """A missing, unreadable or corrupt image: the message names the file."""


class DataWarning(UserWarning):
    """Data that was repaired or dropped (invalid boxes, unknown class names)."""


@dataclass(frozen=True)
class Skipped:
    """What a dataset returns instead of a sample for a bad image when ``skip_bad_images`` is set.

    :func:`detfn.data.collate` drops these and lists their files in ``Batch.skipped``, so the
    loader can count and report skips at the end of the epoch without any state shared across
    worker processes.
    """

    file_name: str
    reason: str
