"""TensorBoard logger hook: the logged scalars as TensorBoard event files (mmcv's
``TensorboardLoggerHook``), under ``<work_dir>/tf_logs`` unless ``log_dir`` says otherwise.

When the text logger would write a train record (:func:`log_due`), it writes the mean since the
previous point of each loss term, ``loss``, ``time``/``data_time`` (and ``grad_norm``) as
``train/<name>``, with ``train/lr`` and ``train/momentum``; every evaluation's numeric metrics as
``val/<name>``. The step is the number of iterations done. Only rank 0 writes.
``torch.utils.tensorboard`` needs the ``tensorboard`` package (``pip install
detfn[tensorboard]``), imported when the run starts. The writer lives in the hook's closure (it is
not checkpointable); the running sums live in ``state.hooks["tensorboard"]``.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any

from detfn.config import check_positive
from detfn.dist.comm import is_main_process
from detfn.engine.combinators import compose, only_at, when
from detfn.engine.events import Event, Hook, Stage
from detfn.engine.hooks.checkpoint import resolve_out_dir
from detfn.engine.hooks.logger import (
    LOGGED_OUTPUTS,
    accumulate,
    averages,
    iter_values,
    log_due,
    val_record,
)
from detfn.engine.priority import HookConfig, get_priority
from detfn.engine.state import TrainState, with_hook_state
from detfn.registry import register

TENSORBOARD = "tensorboard"


@dataclass(frozen=True)
class TensorBoardHookConfig(HookConfig):
    """TensorBoard scalars (mmcv ``TensorboardLoggerHook``). Priority VERY_LOW: after the timer
    and the evaluation hook have written their outputs."""

    interval: int = 50
    """Write a point every ``interval`` iterations (means over the interval)."""
    by_epoch: bool = True
    """Count ``interval`` within the epoch, as the text logger does."""
    ignore_last: bool = True
    """Skip the partial last interval of an epoch (mmcv default)."""
    log_dir: str | None = None
    """None writes to ``<work_dir>/tf_logs``."""
    priority: int | str = "VERY_LOW"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "interval")


def scalars_of(state: TrainState, means: dict[str, float]) -> dict[str, float]:
    """The ``train/`` scalars of one point: means, plus the first group's lr and momentum."""
    out = {f"train/{k}": v for k, v in means.items()}
    if state.lr:
        out["train/lr"] = float(state.lr[0])
    if state.momentum:
        out["train/momentum"] = float(state.momentum[0])
    return out


def tensorboard_hook(cfg: TensorBoardHookConfig) -> Hook:
    """The hook; its writer opens at ``before_run`` (rank 0) and closes at ``after_run``."""
    live: dict[str, Any] = {"writer": None}

    def write(scalars: dict[str, float], step: int) -> None:
        for tag, value in scalars.items():
            live["writer"].add_scalar(tag, value, step)

    def start(event: Event) -> TrainState | None:
        if not is_main_process():
            return None
        from torch.utils.tensorboard import SummaryWriter  # needs `tensorboard`

        default = resolve_out_dir(None, event.run, "TensorBoardHook") / "tf_logs"
        log_dir = pathlib.Path(cfg.log_dir) if cfg.log_dir is not None else default
        live["writer"] = SummaryWriter(log_dir=str(log_dir))
        return with_hook_state(event.state, TENSORBOARD, {"buffer": {}})

    def finish(event: Event) -> None:
        writer, live["writer"] = live["writer"], None
        if writer is not None:
            writer.close()

    def add(event: Event) -> TrainState:
        state = event.state
        mine = dict(state.hooks.get(TENSORBOARD) or {})
        mine["buffer"] = accumulate(mine.get("buffer"), iter_values(event.outputs))
        if log_due(cfg.interval, cfg.by_epoch, cfg.ignore_last)(event):
            write(scalars_of(state, averages(mine["buffer"])), state.iter + 1)
            mine["buffer"] = {}
        return with_hook_state(state, TENSORBOARD, mine)

    def log_metrics(event: Event) -> None:
        metrics = event.outputs.metrics
        record = val_record(event.stage, event.state, metrics)
        values = {f"val/{k}": record[k] for k in metrics if _is_number(record[k])}
        write(values, record["global_iter"])
        live["writer"].flush()

    def reset(event: Event) -> TrainState:
        mine = dict(event.state.hooks.get(TENSORBOARD) or {})
        return with_hook_state(event.state, TENSORBOARD, {**mine, "buffer": {}})

    running = lambda event: live["writer"] is not None  # noqa: E731
    fn = compose(
        only_at(Stage.BEFORE_RUN, start),
        only_at(Stage.AFTER_RUN, finish),
        when(running, only_at(Stage.AFTER_TRAIN_ITER, add)),
        when(lambda event: running(event) and bool(event.outputs.metrics), log_metrics),
        when(running, only_at(Stage.BEFORE_TRAIN_EPOCH, reset)),
    )
    return Hook(
        TENSORBOARD,
        fn,
        get_priority(cfg.priority),
        reads=("loss", "losses"),
        reads_optional=LOGGED_OUTPUTS,
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@register(TensorBoardHookConfig)
def build_tensorboard_hook(cfg: TensorBoardHookConfig, **context: Any) -> Hook:
    """``build(TensorBoardHookConfig(...))``: a custom hook for ``train(hooks=...)``."""
    del context
    return tensorboard_hook(cfg)
