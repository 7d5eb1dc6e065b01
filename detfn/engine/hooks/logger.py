"""What the loggers log: the iteration timer, the logger hook over a sink, the text logger
(console lines with ETA and a progress bar, and a JSON-lines metrics file) and the TensorBoard
logger (the wandb one has a module of its own).

The timer (mmcv's ``IterTimerHook``) reads a clock at the start of the epoch and after each
iteration: ``data_time`` is the gap until ``before_*_iter`` (the loader's share), ``time`` the gap
until ``after_*_iter`` (the whole iteration); the last reading is in ``state.hooks["timer"]``.

A train record (``mode``, ``epoch``, ``iter``, ``global_iter`` = iterations done, ``lr`` /
``momentum`` of group 0 and ``*_groups``, ``data_time``, ``time``, each loss, ``loss``,
``grad_norm``, ``memory`` in MiB on CUDA) averages the iterations since the previous one;
``outputs.metrics`` become a ``"mode": "val"`` record. Console: ``Epoch [1][20/50]
[######------]  lr: 2.000e-02, eta: 0:01:05, ...``. Running sums are 0-d tensors (no device sync
until a record); a resumed run first drops the records after its checkpoint, so none repeats.
"""

from __future__ import annotations

import datetime
import json
import logging
import pathlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from detfn.config import check_non_negative, check_positive
from detfn.dist.comm import is_main_process
from detfn.engine.checkpoint_io import atomic_write
from detfn.engine.combinators import Condition, any_of, compose, epoch_end, last, nth, only_at, when
from detfn.engine.events import Event, Hook, HookConfig, Stage, get_priority
from detfn.engine.hooks.checkpoint import resolve_out_dir
from detfn.engine.session import METRICS_FILE
from detfn.engine.state import TrainState, run_max_iters, with_hook_state
from detfn.registry import register

TIMER = "timer"
TEXT_LOGGER = "text_logger"
_TIMING_KEYS = ("data_time", "time")
_HEAD_KEYS = ("mode", "epoch", "iter", "global_iter")
_SCHEDULE_KEYS = ("lr", "momentum", "lr_groups", "momentum_groups")


@dataclass(frozen=True)
class TimerHookConfig(HookConfig):
    """Priority LOW: after the optimizer step and the checkpoint, so ``time`` covers the whole
    iteration, and before the loggers (VERY_LOW)."""

    priority: int | str = "LOW"


@register(TimerHookConfig)
def build_timer_hook(
    cfg: TimerHookConfig, *, clock: Callable[[], float] = time.perf_counter, **context: Any
) -> Hook:
    """``clock``: seconds, monotonic."""

    def start(event: Event) -> TrainState:
        return with_hook_state(event.state, TIMER, {"last": clock(), "data_time": 0.0})

    def loaded(event: Event) -> TrainState:
        # a run resumed mid-epoch has no epoch start: take a fresh reading
        last = (event.state.hooks.get(TIMER) or {"last": clock()})["last"]
        return with_hook_state(event.state, TIMER, {"last": last, "data_time": clock() - last})

    def done(event: Event) -> TrainState:
        before, now = event.state.hooks[TIMER], clock()
        event.outputs.data_time = before["data_time"]
        event.outputs.time = now - before["last"]
        return with_hook_state(event.state, TIMER, {"last": now, "data_time": 0.0})

    fn = compose(
        only_at((Stage.BEFORE_TRAIN_EPOCH, Stage.BEFORE_VAL_EPOCH), start),
        only_at((Stage.BEFORE_TRAIN_ITER, Stage.BEFORE_VAL_ITER), loaded),
        only_at((Stage.AFTER_TRAIN_ITER, Stage.AFTER_VAL_ITER), done),
    )
    return Hook(TIMER, fn, get_priority(cfg.priority), writes=("data_time", "time"))


@dataclass(frozen=True)
class LoggerHookConfig(HookConfig):
    """What every logger has (mmcv ``LoggerHook``). Priority VERY_LOW: after the timer and the
    evaluation hook (LOW) have written their outputs."""

    interval: int = 10
    """Write a train record every ``interval`` iterations (the means over the interval)."""
    ignore_last: bool = True
    """Skip the partial last interval of an epoch (mmcv default)."""
    by_epoch: bool = True
    """Count ``interval`` within the epoch (and show epoch progress) or globally."""
    priority: int | str = "VERY_LOW"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "interval")


@dataclass(frozen=True)
class TextLoggerHookConfig(LoggerHookConfig):
    """Console + JSON-lines logger (mmcv ``TextLoggerHook``)."""

    console: bool = True
    json_file: bool = True
    """Append records to ``<out_dir>/metrics.jsonl``."""
    out_dir: str | None = None
    """Directory of the JSON-lines file; None uses the run's work_dir."""
    bar_width: int = 30
    """Characters of the text progress bar; 0 hides it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_non_negative(self, "bar_width")


def log_due(interval: int, by_epoch: bool, ignore_last: bool) -> Condition:
    """mmcv's rule for a train record: every ``interval`` iterations (in the epoch when
    ``by_epoch``), and at the end of an epoch unless ``ignore_last``; counted globally, detfn also
    writes the run's last iteration, so a run shorter than the interval still has a record."""
    every = nth(interval, "inner_iter" if by_epoch else "iter")
    if not by_epoch:
        every = any_of(every, last("iter"))
    return every if ignore_last else any_of(every, epoch_end)


def eta_seconds(time_sum: float, timed_iters: int, iters_left: int) -> float:
    """Remaining seconds: mean iteration time since this process started, times iterations left."""
    return time_sum / timed_iters * max(iters_left, 0) if timed_iters > 0 else 0.0


def progress_bar(done: int, total: int, width: int) -> str:
    """``[#####-----]``: ``done / total`` as ``width`` characters, plain text."""
    if width <= 0 or total <= 0:
        return ""
    filled = min(width, done * width // total)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def train_record(state: TrainState, means: Mapping[str, float], by_epoch: bool) -> dict[str, Any]:
    """The JSON record of a train iteration (``state`` as seen in its ``after_train_iter``)."""
    it = (state.inner_iter if by_epoch else state.iter) + 1
    record = {"mode": "train", "epoch": state.epoch + 1, "iter": it, "global_iter": state.iter + 1}
    hyper = {k: v for k, v in (("lr", state.lr), ("momentum", state.momentum)) if v}
    record.update({k: float(v[0]) for k, v in hyper.items()})
    record.update({f"{k}_groups": [float(x) for x in v] for k, v in hyper.items()})
    return {**record, **means}


def val_record(stage: Stage, state: TrainState, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON record of an evaluation: ``epoch`` is the number of train epochs done when the
    metrics were computed (mmcv's ``get_epoch``), ``global_iter`` the iterations done."""
    epoch = state.epoch + (stage in (Stage.AFTER_TRAIN_ITER, Stage.AFTER_TRAIN_EPOCH))
    done = state.iter + (stage is Stage.AFTER_TRAIN_ITER)
    return {"mode": "val", "epoch": epoch, "global_iter": done, **numbers(metrics)}


def numbers(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Numbers (tensors included) as floats; other values (a copy-paste string) as they are."""
    number = (int, float, torch.Tensor)
    return {k: float(v) if isinstance(v, number) else v for k, v in metrics.items()}


def format_line(
    record: Mapping[str, Any], state: TrainState, eta: float | None, by_epoch: bool, bar_width: int
) -> str:
    """The console line of a record (mmcv's layout, plus a plain-text progress bar)."""
    fmt = lambda v, digits=4: f"{v:.{digits}f}" if isinstance(v, float) else str(v)  # noqa: E731
    if record["mode"] == "val":
        unit, count = ("Epoch", record["epoch"]) if by_epoch else ("Iter", record["global_iter"])
        values = ", ".join(f"{k}: {fmt(v)}" for k, v in record.items() if k not in _HEAD_KEYS)
        return f"{unit}(val) [{count}]  {values}"
    if by_epoch:
        done, total = record["iter"], state.iters_per_epoch
    else:
        done, total = record["global_iter"], run_max_iters(state) or 0
    head = f"Epoch [{record['epoch']}][{done}/{total}]" if by_epoch else f"Iter [{done}/{total}]"
    bar = progress_bar(done, total, bar_width)
    parts = [f"lr: {record['lr']:.3e}"] if "lr" in record else []
    if eta is not None:
        parts.append(f"eta: {datetime.timedelta(seconds=int(eta))}")
    shown = [(k, v) for k, v in record.items() if k not in _HEAD_KEYS + _SCHEDULE_KEYS]
    parts += [f"{k}: {fmt(v, 3 if k in _TIMING_KEYS else 4)}" for k, v in shown]
    return "  ".join(p for p in (head, bar, ", ".join(parts)) if p)


def drop_records_after(path: pathlib.Path, done: int) -> None:
    """Remove the records of iterations after ``done`` (a killed run wrote them after the
    checkpoint it is resumed from), so the file holds no repeated iterations after a resume."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if json.loads(line).get("global_iter", 0) <= done]
    if len(kept) != len(lines):
        text = "".join(line + "\n" for line in kept)
        atomic_write(path, lambda f: f.write(text.encode()))


def logger_hook(
    name: str, cfg: LoggerHookConfig, open_sink: Callable, write: Callable, close_sink=None
) -> Hook:
    """A logger hook over a sink (the log file, a wandb run, a TensorBoard writer: live objects,
    held here, not in the state): ``open_sink(event) -> (sink, hook state) | None`` at
    ``before_run`` (None: this process logs nothing), ``write(sink, event, record)`` for each
    record (train when :func:`log_due`, val for every ``outputs.metrics``), ``close_sink`` at
    ``after_run``. ``state.hooks[name]``: the running sums and this process's iteration times."""
    live: dict[str, Any] = {}
    due = log_due(cfg.interval, cfg.by_epoch, cfg.ignore_last)

    def start(event: Event) -> TrainState | None:
        opened = open_sink(event)
        if opened is None:
            return None
        live["sink"], extra = opened
        # a resumed run restarts the ETA's average: only this process's iterations count
        new = {**extra, "buffer": {}, "time_sum": 0.0, "timed": 0}
        return with_hook_state(event.state, name, new)

    def finish(event: Event) -> None:
        if "sink" in live and close_sink is not None:
            close_sink(live.pop("sink"), event)

    def add(event: Event) -> TrainState:
        outputs, mine = event.outputs, event.state.hooks[name]
        values = {k: getattr(outputs, k) for k in _TIMING_KEYS}  # in record order
        values.update({**outputs.losses, "loss": outputs.loss, "grad_norm": outputs.grad_norm})
        sums, count = dict(mine["buffer"].get("sums", {})), mine["buffer"].get("count", 0) + 1
        for key, value in values.items():
            if value is not None:
                value = value.detach() if isinstance(value, torch.Tensor) else float(value)
                sums[key] = sums[key] + value if key in sums else value
        new = {**mine, "buffer": {"sums": sums, "count": count}}
        if outputs.time is not None:
            new.update(time_sum=mine["time_sum"] + float(outputs.time), timed=mine["timed"] + 1)
        state = with_hook_state(event.state, name, new)
        if not due(event):
            return state
        # the means since the previous record: the one device sync per record
        means = {k: float(v) / count for k, v in sums.items()}
        write(live["sink"], replace(event, state=state), train_record(state, means, cfg.by_epoch))
        return with_hook_state(state, name, {**new, "buffer": {}})

    def log_metrics(event: Event) -> None:
        write(live["sink"], event, val_record(event.stage, event.state, event.outputs.metrics))

    def reset(event: Event) -> TrainState:
        return with_hook_state(event.state, name, {**event.state.hooks[name], "buffer": {}})

    running = lambda event: "sink" in live  # noqa: E731
    fn = compose(
        only_at(Stage.BEFORE_RUN, start),
        only_at(Stage.AFTER_RUN, finish),
        when(running, only_at(Stage.AFTER_TRAIN_ITER, add)),
        when(lambda event: running(event) and bool(event.outputs.metrics), log_metrics),
        when(running, only_at(Stage.BEFORE_TRAIN_EPOCH, reset)),
    )
    logged = dict(reads_optional=("grad_norm", "data_time", "time", "metrics"))  # when written
    return Hook(name, fn, get_priority(cfg.priority), reads=("loss", "losses"), **logged)


@register(TextLoggerHookConfig)
def text_logger_hook(cfg: TextLoggerHookConfig) -> Hook:
    """Console lines and JSON records; the sink is the JSON-lines file (or None)."""

    def open_log(event: Event) -> tuple[pathlib.Path | None, dict]:
        if not cfg.json_file:
            return None, {}
        out_dir = resolve_out_dir(cfg.out_dir, event.run, "TextLoggerHook")
        out_dir.mkdir(parents=True, exist_ok=True)
        drop_records_after(out_dir / METRICS_FILE, event.state.iter)
        return out_dir / METRICS_FILE, {}

    def write(path: pathlib.Path | None, event: Event, record: dict[str, Any]) -> None:
        state, loss, eta = event.state, event.outputs.loss, None
        if record["mode"] == "train":
            if isinstance(loss, torch.Tensor) and loss.is_cuda:  # the peak since the last record
                record["memory"] = int(torch.cuda.max_memory_allocated(loss.device) // 1024**2)
                torch.cuda.reset_peak_memory_stats(loss.device)
            times, total = state.hooks[TEXT_LOGGER], run_max_iters(state)
            if times["timed"] and total is not None:
                eta = eta_seconds(times["time_sum"], times["timed"], total - (state.iter + 1))
        if cfg.console:
            logger = getattr(event.run, "logger", None) or logging.getLogger("detfn")
            logger.info(format_line(record, state, eta, cfg.by_epoch, cfg.bar_width))
        if path is not None:
            with open(path, "a") as f:  # opened per write: a crash never loses earlier lines
                f.write(json.dumps(record) + "\n")

    return logger_hook(TEXT_LOGGER, cfg, open_log, write)


@dataclass(frozen=True)
class TensorBoardHookConfig(LoggerHookConfig):
    """TensorBoard logger (mmcv ``TensorboardLoggerHook``): train means (and group 0's lr and
    momentum) as ``train/<name>``, numeric metrics as ``val/<name>``, at step = iterations done,
    on rank 0. It needs ``tensorboard`` (``pip install detfn[tensorboard]``), imported when the
    run starts."""

    interval: int = 50
    """Write a point every ``interval`` iterations (the means over the interval)."""
    log_dir: str | None = None
    """None writes to ``<work_dir>/tf_logs``."""


@register(TensorBoardHookConfig)
def tensorboard_hook(cfg: TensorBoardHookConfig, **context: Any) -> Hook:
    def open_writer(event: Event) -> tuple[Any, dict[str, Any]] | None:
        if not is_main_process():
            return None
        from torch.utils.tensorboard import SummaryWriter  # needs `tensorboard`

        default = resolve_out_dir(None, event.run, "TensorBoardHook") / "tf_logs"
        log_dir = pathlib.Path(cfg.log_dir) if cfg.log_dir is not None else default
        return SummaryWriter(log_dir=str(log_dir)), {}

    def write(writer: Any, event: Event, record: dict[str, Any]) -> None:
        for key, value in record.items():
            if isinstance(value, float):  # the numbers, group 0's lr and momentum
                writer.add_scalar(f"{record['mode']}/{key}", value, record["global_iter"])
        if record["mode"] == "val":
            writer.flush()

    return logger_hook("tensorboard", cfg, open_writer, write, lambda writer, _: writer.close())
