"""The work directory of a run: where its config, log file, metrics and checkpoints go.

Layout (mmcv's, with a JSON config instead of a Python one)::

    <work_dir>/config.json          the experiment config; detfn.config.load(path, cls) == cfg
    <work_dir>/<timestamp>.log      the text log (console lines plus warnings)
    <work_dir>/metrics.jsonl        one JSON record per logged iteration / evaluation
    <work_dir>/epoch_N.pth ...      checkpoints, latest.json, best_<key>_epoch_N.pth

The helpers here are the only place that names these files; the work-dir hook dumps the config
at ``before_run`` and flushes the run's log handlers at ``after_run``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import sys
import time
from dataclasses import dataclass
from typing import Any

from detfn.config import save
from detfn.engine.combinators import compose, only_at
from detfn.engine.events import Event, Hook, Stage
from detfn.engine.priority import HookConfig, get_priority
from detfn.registry import register

WORK_DIR = "work_dir"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
# marks on the handlers make_logger adds, so a later call replaces them and nothing else
_CONSOLE_MARK = "_detfn_console"
_FILE_MARK = "_detfn_run_log"


def timestamp() -> str:
    """``YYYYmmdd_HHMMSS`` of now (mmcv's log-file stem)."""
    return time.strftime("%Y%m%d_%H%M%S", time.localtime())


def config_path(work_dir: str | os.PathLike[str]) -> pathlib.Path:
    return pathlib.Path(work_dir) / CONFIG_FILE


def metrics_path(work_dir: str | os.PathLike[str]) -> pathlib.Path:
    return pathlib.Path(work_dir) / METRICS_FILE


def log_file_path(work_dir: str | os.PathLike[str], stamp: str | None = None) -> pathlib.Path:
    return pathlib.Path(work_dir) / f"{stamp or timestamp()}.log"


def dump_config(cfg: Any, work_dir: str | os.PathLike[str]) -> pathlib.Path:
    """Write ``cfg`` (a config dataclass) to ``<work_dir>/config.json`` atomically."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"dump_config takes a config dataclass instance, got {type(cfg).__name__}")
    return save(cfg, config_path(work_dir))


def add_file_handler(logger: logging.Logger, path: str | os.PathLike[str]) -> logging.Handler:
    """Attach a file handler writing ``logger``'s records to ``path`` (once per path)."""
    path = pathlib.Path(path).resolve()
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler) and pathlib.Path(handler.baseFilename) == path:
            return handler
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)
    return handler


def make_logger(
    name: str = "detfn",
    work_dir: str | os.PathLike[str] | None = None,
    stamp: str | None = None,
    level: int = logging.INFO,
) -> logging.Logger:
    """A logger writing to stderr and, with a work dir, to ``<work_dir>/<stamp>.log``.

    Calling it again with the same name adds no second console handler, and closes the log
    file of an earlier run, so one run never writes into another run's log.
    """
    logger = logging.getLogger(name)
    logger.setLevel(level)
    logger.propagate = False
    if not any(getattr(h, _CONSOLE_MARK, False) for h in logger.handlers):
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter(LOG_FORMAT))
        setattr(console, _CONSOLE_MARK, True)
        logger.addHandler(console)
    wanted = log_file_path(work_dir, stamp).resolve() if work_dir is not None else None
    for handler in list(logger.handlers):
        if getattr(handler, _FILE_MARK, False) and pathlib.Path(handler.baseFilename) != wanted:
            logger.removeHandler(handler)
            handler.close()
    if wanted is not None:
        setattr(add_file_handler(logger, wanted), _FILE_MARK, True)
    return logger


@dataclass(frozen=True)
class WorkDirHookConfig(HookConfig):
    """Dump the experiment config into the work dir at the start of the run; priority HIGHEST,
    so the config is on disk before any other hook can fail at before_run."""

    dump_config: bool = True
    priority: int | str = "HIGHEST"


def work_dir_hook(cfg: WorkDirHookConfig) -> Hook:
    """``before_run``: write config.json; ``after_run``: flush the run logger's handlers."""

    def start(event: Event) -> None:
        work_dir = getattr(event.run, "work_dir", None)
        if work_dir is None:
            return
        pathlib.Path(work_dir).mkdir(parents=True, exist_ok=True)
        run_cfg = getattr(event.run, "cfg", None)
        if cfg.dump_config and dataclasses.is_dataclass(run_cfg):
            dump_config(run_cfg, work_dir)

    def flush(event: Event) -> None:
        for handler in getattr(getattr(event.run, "logger", None), "handlers", ()):
            handler.flush()

    fn = compose(only_at(Stage.BEFORE_RUN, start), only_at(Stage.AFTER_RUN, flush))
    return Hook(WORK_DIR, fn, get_priority(cfg.priority))


register(WorkDirHookConfig)(work_dir_hook)
