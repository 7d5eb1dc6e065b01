"""TensorBoard logger hook (mmcv's ``TensorboardLoggerHook``), a sink of the logger hook: train
means (and group 0's lr and momentum) as ``train/<name>``, numeric metrics as ``val/<name>``, at
step = iterations done, on rank 0. It needs ``tensorboard`` (``pip install detfn[tensorboard]``),
imported when the run starts.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any

from detfn.dist.comm import is_main_process
from detfn.engine.events import Event, Hook
from detfn.engine.hooks.checkpoint import resolve_out_dir
from detfn.engine.hooks.logger import LoggerHookConfig, logger_hook
from detfn.registry import register

TENSORBOARD = "tensorboard"


@dataclass(frozen=True)
class TensorBoardHookConfig(LoggerHookConfig):
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

    return logger_hook(TENSORBOARD, cfg, open_writer, write, lambda writer, _: writer.close())
