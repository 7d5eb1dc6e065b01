"""Command-line entry points report detfn's own input errors in one line, not a traceback.

Config checks, annotation and image errors and checkpoint mismatches already carry a one-line
message naming the file, field or value; a 40-line traceback around it only hides that line.
:func:`run_cli` runs an entry point's body and turns such an error into ``error: <message>`` on
stderr and exit status 2 (argparse's and tyro's status for bad input).

Only errors *raised by detfn itself* are shortened: the innermost frame of the traceback must
be in the ``detfn`` or ``experiments`` package. An error raised inside torch or another library
is a bug to report and keeps its full traceback; so does everything when the environment
variable ``DETFN_TRACEBACK=1`` is set.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from detfn.engine.checkpoint_io import CheckpointError
from detfn.engine.hooks.optimizer import NonFiniteGradError, NonFiniteLossError
from detfn.engine.session import RunStopped, WorkDirBusy
from detfn.registry import RegistryError

__all__ = ["first_line", "is_input_error", "raised_by_detfn", "run_cli"]

T = TypeVar("T")

# Types detfn raises for bad input: ValueError covers config checks (ConfigError included),
# AnnotationError and BadImageError; RegistryError a config type nothing builds.
INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, RegistryError, CheckpointError)
# Errors that end a run on purpose, with a message naming what happened and what to do: a busy
# work dir, non-finite losses or gradients (the last good checkpoint is kept).
RUN_ERRORS: tuple[type[BaseException], ...] = (WorkDirBusy, NonFiniteLossError, NonFiniteGradError)
# Exit status of a run stopped by SIGTERM after saving its state (128 + SIGTERM, as a shell says).
STOPPED_STATUS = 143

_OWN_PACKAGES = ("detfn", "experiments")
_ROOT = Path(__file__).resolve().parents[2]  # the folder holding detfn/ and experiments/


_WORKER = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.")
_FRAME = re.compile(r'File "([^"]+)", line \d+')
_TYPE_PREFIX = re.compile(r"^[\w.]+: ")


def _in_own_package(filename: str) -> bool:
    try:
        relative = Path(filename).resolve().relative_to(_ROOT)
    except ValueError:
        return False
    return relative.parts[:1] in tuple((p,) for p in _OWN_PACKAGES)


def _worker_origin(error: BaseException) -> tuple[str, str] | None:
    """``(innermost file, message)`` of an error raised in a DataLoader worker.

    torch re-raises it in the main process with the worker's traceback as text
    (``Caught BadImageError in DataLoader worker process 0. Original Traceback ...``), so the
    original message is the text's last line and its innermost file the last ``File "..."``.
    """
    text = str(error)
    if not _WORKER.match(text):
        return None
    files = _FRAME.findall(text)
    last = text.strip().splitlines()[-1]
    return (files[-1] if files else "", _TYPE_PREFIX.sub("", last, count=1))


def raised_by_detfn(error: BaseException) -> bool:
    """Whether the innermost frame of ``error``'s traceback is detfn's or experiments' code
    (for an error from a loader worker: of the worker's traceback)."""
    origin = _worker_origin(error)
    if origin is not None:
        return _in_own_package(origin[0])
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and _in_own_package(frames[-1].filename)


def is_input_error(error: BaseException) -> bool:
    """A bad-input or run-ending error detfn raised on purpose (its message is meant for the
    user)."""
    return isinstance(error, INPUT_ERRORS + RUN_ERRORS) and raised_by_detfn(error)


def first_line(error: BaseException) -> str:
    """The first line of the message (a loader worker's: the original message), or the type's
    name when it has none."""
    origin = _worker_origin(error)
    if origin is not None:
        return origin[1]
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def run_cli(body: Callable[[], T]) -> T:
    """``body()``; a detfn input error becomes ``error: <one line>`` on stderr and exit 2.

    Use it around an entry point's whole body, parsing included::

        if __name__ == "__main__":
            run_cli(lambda: main(parse()))

    Raises:
        SystemExit: status 2 after printing the line, for an error :func:`is_input_error`
            accepts; 143 after ``stopped: <reason>`` for a run stopped by SIGTERM (its state is
            saved); any other exception propagates with its traceback.
    """
    try:
        return body()
    except RunStopped as stop:
        print(f"stopped: {first_line(stop)}", file=sys.stderr, flush=True)
        raise SystemExit(STOPPED_STATUS) from None
    except INPUT_ERRORS + RUN_ERRORS as error:
        if os.environ.get("DETFN_TRACEBACK") == "1" or not is_input_error(error):
            raise
        print(f"error: {first_line(error)}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
