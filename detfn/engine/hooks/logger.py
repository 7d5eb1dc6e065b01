"""Text logger: console lines with ETA and a progress bar, and a JSON-lines metrics file.

mmcv's ``TextLoggerHook`` semantics: with ``interval = n`` a train record is written after every
n-th iteration (counted in the epoch when ``by_epoch``, globally otherwise) and after the last
iteration of an epoch unless ``ignore_last``; its numbers are averaged over the iterations since
the previous record. Evaluation metrics (``metrics`` in the outputs of ``after_train_epoch``,
``after_train_iter`` or ``after_val_epoch``) are written as a ``"mode": "val"`` record.

A train line of ``metrics.jsonl`` holds: ``mode``, ``epoch`` (1-based), ``iter`` (1-based, in the
epoch when ``by_epoch``), ``global_iter`` (iterations done), ``lr`` and ``momentum`` (group 0),
``lr_groups`` and ``momentum_groups`` (every parameter group), ``data_time``, ``time``, each named
loss, ``loss``, ``grad_norm`` (when the optimizer hook reports it), ``memory`` (MiB, CUDA only).

Console lines are plain text (no carriage returns), so they read well in a non-tty log::

    Epoch [1][20/50]  [############------------------]  lr: 2.000e-02, eta: 0:01:05, ...

The running sums live in ``state.hooks["text_logger"]`` (0-d tensors and floats: no device sync
until a record is written).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from detfn.config import Config, check_positive, fail
from detfn.engine.events import Event, Hook, Stage
from detfn.engine.hooks.checkpoint import resolve_out_dir, total_iters
from detfn.engine.hooks.workdir import METRICS_FILE
from detfn.engine.priority import Priority, get_priority
from detfn.engine.state import TrainState
from detfn.registry import register

__all__ = [
    "TEXT_LOGGER",
    "TextLoggerHookConfig",
    "accumulate",
    "averages",
    "build_text_logger_hook",
    "eta_seconds",
    "format_line",
    "iter_values",
    "progress_bar",
    "should_log",
    "text_logger_fn",
    "train_record",
    "val_record",
]

TEXT_LOGGER = "text_logger"
# VERY_LOW: after the timer and the evaluation hook (LOW) have added their outputs.
DEFAULT_PRIORITY = Priority.VERY_LOW.name
_TIMING_KEYS = ("data_time", "time")


@dataclass(frozen=True)
class TextLoggerHookConfig(Config):
    """Console + JSON-lines logger (mmcv ``TextLoggerHook``)."""

    interval: int = 10
    """Write a train record every ``interval`` iterations."""
    ignore_last: bool = True
    """Skip the partial last interval of an epoch (mmcv default)."""
    by_epoch: bool = True
    """Count ``interval`` within the epoch (and show epoch progress) or globally."""
    console: bool = True
    json_file: bool = True
    """Append records to ``<out_dir>/metrics.jsonl``."""
    out_dir: str | None = None
    """Directory of the JSON-lines file; None uses the run's work_dir."""
    bar_width: int = 30
    """Characters of the text progress bar; 0 hides it."""
    priority: int | str = DEFAULT_PRIORITY

    def __post_init__(self) -> None:
        check_positive(self, "interval")
        if self.bar_width < 0:
            fail(self, "bar_width", f"must be >= 0, got {self.bar_width}")
        try:
            get_priority(self.priority)
        except (ValueError, TypeError) as error:
            fail(self, "priority", f"is invalid ({error}), got {self.priority!r}")


# ---------------------------------------------------------------------------------------------
# pure pieces (also used by the wandb hook)


def should_log(state: TrainState, interval: int, by_epoch: bool, ignore_last: bool) -> bool:
    """Whether ``after_train_iter`` of ``state``'s iteration writes a record (mmcv's rule)."""
    count = state.inner_iter + 1 if by_epoch else state.iter + 1
    if count % interval == 0:
        return True
    end_of_epoch = state.iters_per_epoch > 0 and state.inner_iter + 1 == state.iters_per_epoch
    return end_of_epoch and not ignore_last


def iter_values(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """The per-iteration numbers of ``after_train_iter`` outputs, in record order."""
    values: dict[str, Any] = {k: outputs[k] for k in _TIMING_KEYS if k in outputs}
    values.update(outputs.get("losses", {}) or {})
    for key in ("loss", "grad_norm"):
        if outputs.get(key) is not None:
            values[key] = outputs[key]
    return {k: v.detach() if isinstance(v, torch.Tensor) else float(v) for k, v in values.items()}


def accumulate(buffer: Mapping[str, Any] | None, values: Mapping[str, Any]) -> dict[str, Any]:
    """Add one iteration's values to the running sums ``{"sums": {k: v}, "count": n}``."""
    sums = dict((buffer or {}).get("sums", {}))
    for key, value in values.items():
        sums[key] = sums[key] + value if key in sums else value
    return {"sums": sums, "count": (buffer or {}).get("count", 0) + 1}


def averages(buffer: Mapping[str, Any]) -> dict[str, float]:
    """Mean of each running sum, as Python floats (the one device sync per record)."""
    count = max(buffer.get("count", 0), 1)
    return {k: float(v) / count for k, v in buffer.get("sums", {}).items()}


def eta_seconds(time_sum: float, timed_iters: int, iters_left: int) -> float:
    """Remaining seconds: mean iteration time since this process started, times iterations left."""
    if timed_iters <= 0:
        return 0.0
    return time_sum / timed_iters * max(iters_left, 0)


def progress_bar(done: int, total: int, width: int) -> str:
    """``[#####-----]``: ``done / total`` as ``width`` characters, plain text."""
    if width <= 0 or total <= 0:
        return ""
    filled = min(width, done * width // total)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def train_record(state: TrainState, means: Mapping[str, float], by_epoch: bool) -> dict[str, Any]:
    """The JSON record of a train iteration (``state`` as seen in its ``after_train_iter``)."""
    record: dict[str, Any] = {
        "mode": "train",
        "epoch": state.epoch + 1,
        "iter": state.inner_iter + 1 if by_epoch else state.iter + 1,
        "global_iter": state.iter + 1,
    }
    if state.lr:
        record["lr"] = float(state.lr[0])
    if state.momentum:
        record["momentum"] = float(state.momentum[0])
    if state.lr:
        record["lr_groups"] = [float(v) for v in state.lr]
    if state.momentum:
        record["momentum_groups"] = [float(v) for v in state.momentum]
    record.update(means)
    return record


def val_record(stage: Stage, state: TrainState, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON record of an evaluation.

    ``epoch`` is the number of train epochs done when the metrics were computed (mmcv's
    ``get_epoch``); ``global_iter`` the number of train iterations done.
    """
    if stage is Stage.AFTER_TRAIN_ITER:
        epoch, done = state.epoch + 1, state.iter + 1
    elif stage is Stage.AFTER_TRAIN_EPOCH:
        epoch, done = state.epoch + 1, state.iter
    else:
        epoch, done = state.epoch, state.iter
    values = {
        k: float(v) if isinstance(v, (int, float, torch.Tensor)) else v for k, v in metrics.items()
    }
    return {"mode": "val", "epoch": epoch, "global_iter": done, **values}


def format_line(
    record: Mapping[str, Any], state: TrainState, eta: float | None, by_epoch: bool, bar_width: int
) -> str:
    """The console line of a record (mmcv's layout, plus a plain-text progress bar)."""
    if record["mode"] == "val":
        head = (
            f"Epoch(val) [{record['epoch']}]"
            if by_epoch
            else f"Iter(val) [{record['global_iter']}]"
        )
        skip = {"mode", "epoch", "global_iter"}
        values = ", ".join(f"{k}: {_fmt(v)}" for k, v in record.items() if k not in skip)
        return f"{head}  {values}"
    total = total_iters(state) or 0
    if by_epoch:
        head = f"Epoch [{record['epoch']}][{record['iter']}/{state.iters_per_epoch}]"
        bar = progress_bar(record["iter"], state.iters_per_epoch, bar_width)
    else:
        head = f"Iter [{record['global_iter']}/{total}]"
        bar = progress_bar(record["global_iter"], total, bar_width)
    parts = []
    if "lr" in record:
        parts.append(f"lr: {record['lr']:.3e}")
    if eta is not None:
        parts.append(f"eta: {datetime.timedelta(seconds=int(eta))}")
    skip = {
        "mode",
        "epoch",
        "iter",
        "global_iter",
        "lr",
        "momentum",
        "lr_groups",
        "momentum_groups",
    }
    parts += [
        f"{k}: {_fmt(v, 3 if k in _TIMING_KEYS else 4)}" for k, v in record.items() if k not in skip
    ]
    return "  ".join(p for p in (head, bar, ", ".join(parts)) if p)


def _fmt(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------------------------
# the hook


def text_logger_fn(event: Event, cfg: TextLoggerHookConfig) -> TrainState | None:
    """Accumulate iteration values in the state; write console lines and JSON records."""
    stage, state = event.stage, event.state
    mine = dict(state.hooks.get(TEXT_LOGGER) or {})
    if stage is Stage.BEFORE_RUN:
        if cfg.json_file:
            resolve_out_dir(cfg.out_dir, event.run, "TextLoggerHook").mkdir(
                parents=True, exist_ok=True
            )
        # the ETA averages over this process's iterations only (a resumed run restarts it)
        return _put(state, {"buffer": {}, "time_sum": 0.0, "timed": 0})
    if stage is Stage.AFTER_TRAIN_ITER:
        return _after_train_iter(event, cfg, mine)
    metrics = event.outputs.get("metrics")
    if metrics:  # an evaluation before training, after an epoch, or a val phase
        _emit(event, cfg, val_record(stage, state, metrics), None)
    if stage is Stage.BEFORE_TRAIN_EPOCH:
        return _put(state, {**mine, "buffer": {}})
    return None


def _after_train_iter(event: Event, cfg: TextLoggerHookConfig, mine: dict[str, Any]) -> TrainState:
    state = event.state
    values = iter_values(event.outputs)
    mine["buffer"] = accumulate(mine.get("buffer"), values)
    if "time" in values:
        mine["time_sum"] = mine.get("time_sum", 0.0) + values["time"]
        mine["timed"] = mine.get("timed", 0) + 1
    if should_log(state, cfg.interval, cfg.by_epoch, cfg.ignore_last):
        record = train_record(state, averages(mine["buffer"]), cfg.by_epoch)
        memory = _cuda_memory_mib(event.outputs.get("loss"))
        if memory is not None:
            record["memory"] = memory
        total = total_iters(state)
        eta = None
        if mine.get("timed") and total is not None:
            eta = eta_seconds(mine["time_sum"], mine["timed"], total - (state.iter + 1))
        _emit(event, cfg, record, eta)
        mine["buffer"] = {}
    metrics = event.outputs.get("metrics")
    if metrics:
        _emit(event, cfg, val_record(Stage.AFTER_TRAIN_ITER, state, metrics), None)
    return _put(state, mine)


def _cuda_memory_mib(loss: Any) -> int | None:
    """Peak CUDA memory since the last record, in MiB (mmcv's ``memory``), then reset."""
    if not isinstance(loss, torch.Tensor) or loss.device.type != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated(loss.device) // (1024 * 1024)
    torch.cuda.reset_peak_memory_stats(loss.device)
    return int(peak)


def _emit(event: Event, cfg: TextLoggerHookConfig, record: dict[str, Any], eta: float | None):
    if cfg.console:
        logger = getattr(event.run, "logger", None) or logging.getLogger("detfn")
        logger.info(format_line(record, event.state, eta, cfg.by_epoch, cfg.bar_width))
    if cfg.json_file:
        path = resolve_out_dir(cfg.out_dir, event.run, "TextLoggerHook") / METRICS_FILE
        _append_json(path, record)


def _append_json(path: pathlib.Path, record: Mapping[str, Any]) -> None:
    """One line per record; opened per write so a crash never loses earlier lines."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _put(state: TrainState, mine: dict[str, Any]) -> TrainState:
    return dataclasses.replace(state, hooks={**state.hooks, TEXT_LOGGER: mine})


@register(TextLoggerHookConfig)
def build_text_logger_hook(cfg: TextLoggerHookConfig, **context: Any) -> Hook:
    """The console + JSON-lines logger (default priority VERY_LOW)."""
    del context
    return Hook(TEXT_LOGGER, lambda event: text_logger_fn(event, cfg), get_priority(cfg.priority))
