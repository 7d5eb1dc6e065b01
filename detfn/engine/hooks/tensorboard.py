"""TensorBoard logger hook: the logged scalars as TensorBoard event files (mmcv's
``TensorboardLoggerHook``), under ``<work_dir>/tf_logs`` unless ``log_dir`` says otherwise.

Every ``interval`` iterations it writes the interval's mean of each loss term, ``loss``,
``time``/``data_time`` (and ``grad_norm``) as ``train/<name>``, with ``train/lr`` and
``train/momentum``; every evaluation's numeric metrics as ``val/<name>``. The step is the global
iteration. Only rank 0 writes. ``torch.utils.tensorboard`` needs the ``tensorboard`` package
(``pip install detfn[tensorboard]``), imported when the run starts. The writer lives in the hook's
closure (it is not checkpointable); the running sums live in ``state.hooks["tensorboard"]``.

A new hook file written against the engine's current hook API; the lead may need to adapt it
after the engine rewrite.
"""

from __future__ import annotations

import dataclasses
import pathlib
from dataclasses import dataclass
from typing import Any

from detfn.config import Config, check_positive, fail
from detfn.dist.comm import is_main_process
from detfn.engine.events import Event, Hook, Stage
from detfn.engine.hooks.checkpoint import resolve_out_dir
from detfn.engine.hooks.logger import accumulate, averages, iter_values, should_log
from detfn.engine.priority import Priority, get_priority
from detfn.engine.state import TrainState
from detfn.registry import register

__all__ = ["TENSORBOARD", "TensorBoardHookConfig", "build_tensorboard_hook", "scalars_of"]

TENSORBOARD = "tensorboard"


@dataclass(frozen=True)
class TensorBoardHookConfig(Config):
    """Attributes:
    interval: iterations per written point (means over the interval).
    by_epoch: count ``interval`` within the epoch, as the text logger does.
    log_dir: None writes to ``<work_dir>/tf_logs``.
    """

    interval: int = 50
    by_epoch: bool = True
    ignore_last: bool = True
    log_dir: str | None = None
    priority: int | str = Priority.VERY_LOW.name

    def __post_init__(self) -> None:
        check_positive(self, "interval")
        try:
            get_priority(self.priority)
        except (ValueError, TypeError) as error:
            fail(self, "priority", f"is invalid ({error}), got {self.priority!r}")


def scalars_of(state: TrainState, means: dict[str, float]) -> dict[str, float]:
    """The ``train/`` scalars of one point: means, plus the first group's lr and momentum."""
    out = {f"train/{k}": v for k, v in means.items()}
    if state.lr:
        out["train/lr"] = float(state.lr[0])
    if state.momentum:
        out["train/momentum"] = float(state.momentum[0])
    return out


def _numeric(metrics: Any) -> dict[str, float]:
    return {
        f"val/{k}": float(v)
        for k, v in (metrics or {}).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def tensorboard_hook(cfg: TensorBoardHookConfig) -> Hook:
    """The hook; its writer opens at ``before_run`` and closes at ``after_run``."""
    writer: dict[str, Any] = {}

    def write(scalars: dict[str, float], step: int) -> None:
        for tag, value in scalars.items():
            writer["w"].add_scalar(tag, value, step)

    def fn(event: Event) -> TrainState | None:
        if not is_main_process():
            return None
        stage, state = event.stage, event.state
        if stage is Stage.BEFORE_RUN:
            from torch.utils.tensorboard import SummaryWriter  # needs `tensorboard`

            default = resolve_out_dir(None, event.run, "TensorBoardHook") / "tf_logs"
            log_dir = pathlib.Path(cfg.log_dir) if cfg.log_dir is not None else default
            writer["w"] = SummaryWriter(log_dir=str(log_dir))
            return None
        if stage is Stage.AFTER_RUN:
            if "w" in writer:
                writer.pop("w").close()
            return None
        if "w" not in writer:
            return None
        mine = dict(state.hooks.get(TENSORBOARD) or {})
        if stage is Stage.AFTER_TRAIN_ITER:
            mine["buffer"] = accumulate(mine.get("buffer"), iter_values(event.outputs))
            if should_log(state, cfg.interval, cfg.by_epoch, cfg.ignore_last):
                write(scalars_of(state, averages(mine["buffer"])), state.iter + 1)
                mine["buffer"] = {}
        metrics = _numeric(event.outputs.get("metrics") if event.outputs else None)
        if metrics:
            write(metrics, state.iter + 1 if stage is Stage.AFTER_TRAIN_ITER else state.iter)
            writer["w"].flush()
        if stage is Stage.BEFORE_TRAIN_EPOCH:
            mine["buffer"] = {}
        return dataclasses.replace(state, hooks={**state.hooks, TENSORBOARD: mine})

    return Hook(TENSORBOARD, fn, get_priority(cfg.priority))


@register(TensorBoardHookConfig)
def build_tensorboard_hook(cfg: TensorBoardHookConfig, **context: Any) -> Hook:
    """``build(TensorBoardHookConfig(...))``: a custom hook for ``train(hooks=...)``."""
    del context
    return tensorboard_hook(cfg)
