"""The edges of a run in a work dir: its files, its log, one run per dir, SIGTERM as a stop.

Layout (mmcv's): ``config.json`` (``detfn.config.load(path, cls) == cfg``), ``<timestamp>.log``,
``metrics.jsonl`` (a record per logged iteration / evaluation), ``epoch_N.pth`` ...,
``latest.json``, ``best_<key>_epoch_N.pth``.

* ``.detfn.lock`` is held with ``flock`` for the run (the kernel frees it when the process dies):
  a second live run is refused; the lock file of a killed run lets only a resuming run in.
* ``*.tmp`` files (what a killed atomic write leaves) are removed when a run starts.
* SIGTERM sets a flag that the ``stop_request`` hook turns into ``state.stop_reason`` after the
  iteration: the loop ends, the final state is saved, ``after_run`` runs, and :func:`train`
  raises :class:`RunStopped` (a non-zero exit for a script).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import pathlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from detfn.config import save
from detfn.engine.combinators import only_at
from detfn.engine.events import Event, Hook, Priority, Stage
from detfn.engine.state import TrainState

LOCK_FILE = ".detfn.lock"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SIGTERM_REASON = "SIGTERM"
LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
# marks the handlers make_logger adds ("console", "file"), so a later call replaces only them
_MARK = "_detfn_handler"


class WorkDirBusy(RuntimeError):
    """Another run holds the work dir, or a killed run's dir is reused without resuming it."""


class RunStopped(RuntimeError):
    """A run ended early on a stop request (SIGTERM); its final state is saved."""


@contextlib.contextmanager
def work_dir_lock(work_dir: pathlib.Path, resuming: bool) -> Iterator[None]:
    """Hold the work dir's lock for the duration of the block and, holding it, remove stale
    ``*.tmp`` files (see module docstring)."""
    path = work_dir / LOCK_FILE
    left_behind = path.exists()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    owned = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            busy = f"another run (pid {holder}) is using this work dir; wait for it"
            raise WorkDirBusy(f"{work_dir}: {busy} or choose another work_dir") from None
        if left_behind and not resuming:
            fix = "resume it (auto_resume / resume_from) or choose another work_dir"
            raise WorkDirBusy(f"{work_dir}: holds a run that was killed before it finished; {fix}")
        owned = True
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        for stale in work_dir.glob(".*.tmp"):  # what killed atomic writes left
            stale.unlink(missing_ok=True)
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


def log_file_path(work_dir: str | os.PathLike[str], stamp: str | None = None) -> pathlib.Path:
    """``<work_dir>/<stamp>.log``, the stamp ``YYYYmmdd_HHMMSS`` of now by default (mmcv's)."""
    stamp = stamp or time.strftime("%Y%m%d_%H%M%S", time.localtime())
    return pathlib.Path(work_dir) / f"{stamp}.log"


def dump_config(cfg: Any, work_dir: str | os.PathLike[str]) -> pathlib.Path:
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"dump_config takes a config dataclass instance, got {type(cfg).__name__}")
    return save(cfg, pathlib.Path(work_dir) / CONFIG_FILE)


def make_logger(
    name: str = "detfn", work_dir: str | os.PathLike[str] | None = None, stamp: str | None = None
) -> logging.Logger:
    """A logger writing to stderr and, with a work dir, to ``<work_dir>/<stamp>.log``; called
    again, it adds no second console handler and closes an earlier run's log file."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    wanted = log_file_path(work_dir, stamp).resolve() if work_dir is not None else None
    for handler in list(logger.handlers):
        if getattr(handler, _MARK, None) == "file" and pathlib.Path(handler.baseFilename) != wanted:
            logger.removeHandler(handler)
            handler.close()
    marks = [getattr(h, _MARK, None) for h in logger.handlers]
    files = [getattr(h, "baseFilename", None) for h in logger.handlers]
    new = [] if "console" in marks else [("console", logging.StreamHandler(sys.stderr))]
    if wanted is not None and str(wanted) not in files:
        wanted.parent.mkdir(parents=True, exist_ok=True)
        new.append(("file", logging.FileHandler(wanted, mode="a")))
    for mark, handler in new:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        setattr(handler, _MARK, mark)
        logger.addHandler(handler)
    return logger
