"""The edges of a run in a work dir: one run per dir (a lock), no stale temporary files, and
SIGTERM as a stop request.

* Lock: ``<work_dir>/.detfn.lock`` is held with ``flock`` for the whole run (the kernel releases
  it when the process dies). A second live run in the same dir is refused. A lock file left by a
  run that was killed means that run can be resumed: only a resuming run may take it over.
* ``*.tmp`` files are what a killed atomic write leaves; they are removed when a run starts.
* SIGTERM (what schedulers and ``kill`` send) sets a flag; the ``stop_request`` hook turns it into
  ``state.stop_reason`` after the current iteration, so the loop ends at the next boundary, the
  checkpoint hook saves the final state and ``after_run`` runs; :func:`train` then raises
  :class:`RunStopped` (a non-zero exit for a script).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import signal
import threading
from collections.abc import Iterator
from dataclasses import replace

from detfn.engine.combinators import only_at
from detfn.engine.events import Event, Hook, Stage
from detfn.engine.priority import Priority
from detfn.engine.state import TrainState

LOCK_FILE = ".detfn.lock"
SIGTERM_REASON = "SIGTERM"


class WorkDirBusy(RuntimeError):
    """Another run holds the work dir, or a killed run's dir is reused without resuming it."""


class RunStopped(RuntimeError):
    """A run ended early on a stop request (SIGTERM); its final state is saved."""


def remove_stale_tmp(work_dir: pathlib.Path) -> list[pathlib.Path]:
    """Delete the ``*.tmp`` files of killed atomic writes; returns them."""
    stale = sorted(work_dir.glob(".*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


@contextlib.contextmanager
def work_dir_lock(work_dir: pathlib.Path, resuming: bool) -> Iterator[None]:
    """Hold the work dir's lock for the duration of the block (see module docstring)."""
    path = work_dir / LOCK_FILE
    left_behind = path.exists()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    owned = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise WorkDirBusy(
                f"{work_dir}: another run (pid {holder}) is using this work dir; wait for it or "
                "choose another work_dir"
            ) from None
        if left_behind and not resuming:
            raise WorkDirBusy(
                f"{work_dir}: holds a run that was killed before it finished; resume it "
                "(auto_resume / resume_from) or choose another work_dir"
            )
        owned = True
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        if owned:  # a run that ends in Python (finished, failed, stopped) frees the dir
            path.unlink(missing_ok=True)
        os.close(fd)


@contextlib.contextmanager
def sigterm_requests_stop() -> Iterator[threading.Event]:
    """While the block runs, SIGTERM sets the returned flag instead of killing the process
    (only in the main thread, where Python delivers signals; elsewhere the flag stays unset)."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: flag.set())
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_request_hook(flag: threading.Event) -> Hook:
    """After each train iteration (LOWEST: every hook of the iteration has run), a set ``flag``
    becomes ``state.stop_reason``."""

    def stop(event: Event) -> TrainState | None:
        return replace(event.state, stop_reason=SIGTERM_REASON) if flag.is_set() else None

    return Hook("stop_request", only_at(Stage.AFTER_TRAIN_ITER, stop), int(Priority.LOWEST))
