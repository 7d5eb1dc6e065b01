"""Checkpoint hook: save the whole train state every ``interval`` epochs or iterations.

mmcv's ``CheckpointHook`` semantics:

* ``epoch_N.pth`` (by epoch) or ``iter_N.pth`` (by iteration), N counted from 1, saved when N is
  a multiple of ``interval``, and at the last epoch/iteration when ``save_last``;
* ``max_keep_ckpts = k > 0``: after saving N, the files N - k·interval, N - (k+1)·interval, ...
  of the interval grid are deleted, i.e. the newest k grid checkpoints stay;
* a ``latest`` pointer (``latest.json`` plus a ``latest.pth`` symlink) names the newest file.

The kept list lives in ``state.hooks["checkpoint"]`` (file names relative to the out dir), so a
resumed run keeps deleting the files of the run before it. Each file holds the state as the loop
will have it after the current event (see :func:`checkpoint_io.advance_counters`), written
atomically, so a crash mid-save leaves the previous checkpoint and the pointer intact.
"""

from __future__ import annotations

import dataclasses
import pathlib
from dataclasses import dataclass
from typing import Any

from detfn.config import Config, check, fail
from detfn.dist.env_info import collect_env
from detfn.engine.checkpoint_io import advance_counters, save_checkpoint, write_latest
from detfn.engine.events import Event, Hook, Stage
from detfn.engine.priority import Priority, get_priority
from detfn.engine.state import TrainState
from detfn.registry import register

__all__ = [
    "CHECKPOINT",
    "CheckpointHookConfig",
    "build_checkpoint_hook",
    "checkpoint_fn",
    "redundant_steps",
    "resolve_out_dir",
    "run_meta",
    "total_iters",
]

CHECKPOINT = "checkpoint"
# NORMAL: after the lr/momentum/optimizer hooks have produced this iteration's weights, and
# before evaluation (LOW): a crash in evaluation still leaves the checkpoint to debug.
DEFAULT_PRIORITY = Priority.NORMAL.name


@dataclass(frozen=True)
class CheckpointHookConfig(Config):
    """Periodic checkpoints (mmcv ``CheckpointHook``; interval 1 as mmdet's default runtime)."""

    interval: int = 1
    """Save every ``interval`` epochs (``by_epoch``) or iterations; <= 0 saves only the last."""
    by_epoch: bool = True
    save_optimizer: bool = True
    """Store the optimizer state too (needed for an exact resume)."""
    out_dir: str | None = None
    """Directory of the files; None uses the run's work_dir."""
    max_keep_ckpts: int = -1
    """Keep only the newest k checkpoints of the interval grid; <= 0 keeps all."""
    save_last: bool = True
    """Also save at the last epoch/iteration when it is off the interval grid."""
    priority: int | str = DEFAULT_PRIORITY

    def __post_init__(self) -> None:
        check(
            self,
            "out_dir",
            self.out_dir is None or bool(self.out_dir.strip()),
            "must be None or a directory path, got an empty string",
        )
        try:
            get_priority(self.priority)
        except (ValueError, TypeError) as error:
            fail(self, "priority", f"is invalid ({error}), got {self.priority!r}")


def total_iters(state: TrainState) -> int | None:
    """The run's length in iterations (``max_iters``, or ``max_epochs · iters_per_epoch``)."""
    if state.max_iters is not None:
        return state.max_iters
    if state.max_epochs is not None and state.iters_per_epoch > 0:
        return state.max_epochs * state.iters_per_epoch
    return None


def redundant_steps(kept: list[int], current: int, interval: int, max_keep: int) -> list[int]:
    """Kept checkpoint numbers that mmcv's rule deletes after saving ``current``.

    Those on the interval grid through ``current`` at or below ``current - max_keep·interval``.
    Off-grid files (a ``save_last`` file) are never deleted, as in mmcv.
    """
    if max_keep <= 0 or interval <= 0:
        return []
    oldest_kept = current - max_keep * interval
    return [n for n in kept if n <= oldest_kept and (current - n) % interval == 0]


def resolve_out_dir(out_dir: str | None, run: Any, who: str) -> pathlib.Path:
    """``out_dir`` or the run's work_dir; a clear error when neither is set."""
    chosen = out_dir if out_dir is not None else getattr(run, "work_dir", None)
    if chosen is None:
        raise ValueError(f"{who}: out_dir is None and the run has no work_dir; set one of them")
    return pathlib.Path(chosen)


def run_meta(run: Any, stage: Stage) -> dict[str, Any]:
    """What a checkpoint records about the run besides the state: config and loader position."""
    from detfn.config import to_json

    cfg = getattr(run, "cfg", None)
    is_config = dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)
    loader = getattr(run, "train_loader", None)
    position = loader.state_dict() if hasattr(loader, "state_dict") else None
    return {
        "config": to_json(cfg) if is_config else None,
        "config_type": f"{type(cfg).__module__}.{type(cfg).__qualname__}" if is_config else None,
        "loader": position,
        "stage": stage.value,
        "env": collect_env(),
    }


def _due(cfg: CheckpointHookConfig, stage: Stage, state: TrainState) -> int | None:
    """The 1-based number of the checkpoint to save at this event, or None."""
    if cfg.by_epoch and stage is Stage.AFTER_TRAIN_EPOCH:
        number, last = state.epoch + 1, state.max_epochs
    elif not cfg.by_epoch and stage is Stage.AFTER_TRAIN_ITER:
        number, last = state.iter + 1, total_iters(state)
    else:
        return None
    on_grid = cfg.interval > 0 and number % cfg.interval == 0
    return number if on_grid or (cfg.save_last and number == last) else None


def checkpoint_fn(event: Event, cfg: CheckpointHookConfig) -> TrainState | None:
    """Save a checkpoint when one is due; returns the state with the updated kept list."""
    state = event.state
    if event.stage is Stage.BEFORE_RUN:
        resolve_out_dir(cfg.out_dir, event.run, "CheckpointHook").mkdir(parents=True, exist_ok=True)
        if CHECKPOINT in state.hooks:
            return None
        return _put(state, {"kept": [], "last": None})
    number = _due(cfg, event.stage, state)
    if number is None:
        return None
    out_dir = resolve_out_dir(cfg.out_dir, event.run, "CheckpointHook")
    name = f"{'epoch' if cfg.by_epoch else 'iter'}_{number}.pth"
    mine = state.hooks.get(CHECKPOINT) or {"kept": [], "last": None}
    kept = [n for n in mine["kept"] if n != number] + [number]
    dropped = redundant_steps(kept, number, cfg.interval, cfg.max_keep_ckpts)
    new_state = _put(state, {"kept": [n for n in kept if n not in dropped], "last": name})
    path = out_dir / name
    save_checkpoint(
        path,
        advance_counters(new_state, event.stage),
        meta=run_meta(event.run, event.stage),
        save_optimizer=cfg.save_optimizer,
    )
    write_latest(out_dir, path)
    prefix = "epoch" if cfg.by_epoch else "iter"
    for n in dropped:
        (out_dir / f"{prefix}_{n}.pth").unlink(missing_ok=True)
    return new_state


def _put(state: TrainState, mine: dict[str, Any]) -> TrainState:
    return dataclasses.replace(state, hooks={**state.hooks, CHECKPOINT: mine})


@register(CheckpointHookConfig)
def build_checkpoint_hook(cfg: CheckpointHookConfig, **context: Any) -> Hook:
    """The checkpoint hook (default priority NORMAL)."""
    del context
    return Hook(CHECKPOINT, lambda event: checkpoint_fn(event, cfg), get_priority(cfg.priority))
