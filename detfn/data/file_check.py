"""Every image a dataset lists exists on disk, checked once when the dataset is built.

A missing file would otherwise surface hours into training, in a loader worker, as the first
batch that holds it. Listing each folder once (``os.scandir``) instead of one ``stat`` per file
keeps the check cheap: COCO train2017's 118k images are one directory listing.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence

from detfn.data.errors import BadImageError

__all__ = ["check_images_exist", "missing_files"]

logger = logging.getLogger("detfn.data")

_SHOWN = 3  # missing files named in the message; the count says how many more


def _listing(folder: str) -> set[str] | None:
    """The entry names of ``folder``, or None when it cannot be listed (missing, no access)."""
    try:
        with os.scandir(folder or ".") as entries:
            return {entry.name for entry in entries}
    except OSError:
        return None


def missing_files(paths: Sequence[str]) -> list[str]:
    """The paths that do not exist, in input order.

    Paths are grouped by folder and each folder is listed once; a name absent from its listing
    is confirmed with ``os.path.exists`` (which also covers names the listing spells otherwise,
    as on case-insensitive file systems).
    """
    by_folder: dict[str, list[int]] = defaultdict(list)
    for i, path in enumerate(paths):
        by_folder[os.path.dirname(path)].append(i)
    missing: list[int] = []
    for folder, indices in by_folder.items():
        names = _listing(folder)
        for i in indices:
            listed = names is not None and os.path.basename(paths[i]) in names
            if not listed and not os.path.exists(paths[i]):
                missing.append(i)
    return [paths[i] for i in sorted(missing)]


def check_images_exist(paths: Sequence[str], source: str, skip_bad_images: bool = False) -> None:
    """Raise (or, with ``skip_bad_images``, log a warning) when listed images are missing.

    Args:
        paths: the image files of the dataset's records.
        source: the annotation file or split file that lists them, named in the message.
        skip_bad_images: the dataset skips unreadable images; missing ones are reported once
            here and skipped when their turn comes.

    Raises:
        BadImageError: ``"<source>: 3 of 120 listed image files are missing: a.jpg, ..."``.
    """
    missing = missing_files(paths)
    if not missing:
        return
    shown = ", ".join(missing[:_SHOWN]) + (", ..." if len(missing) > _SHOWN else "")
    message = f"{source}: {len(missing)} of {len(paths)} listed image files are missing: {shown}"
    if skip_bad_images:
        logger.warning("%s (skip_bad_images: they will be skipped)", message)
        return
    raise BadImageError(message + " (check img_prefix / img_dir)")
