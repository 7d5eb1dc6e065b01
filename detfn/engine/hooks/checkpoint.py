"""Checkpoint hook (mmcv's ``CheckpointHook``): the whole train state as ``epoch_N.pth`` /
``iter_N.pth`` (N from 1) every ``interval`` epochs or iterations and at the last one
(``save_last``), named by ``latest.json`` (and a ``latest.pth`` symlink) unless its weights are
not finite. At ``after_run`` of a run that finished or stopped (SIGTERM), a state the rule did not
save is saved as ``iter_N.pth``. Each file holds the state as the loop will have it after the
event (:func:`~detfn.engine.checkpoint_io.advance_counters`); the kept list is in
``state.hooks["checkpoint"]``.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any

from detfn.config import check
from detfn.engine.checkpoint_io import save_event_state, write_latest
from detfn.engine.combinators import any_of, compose, last, nth, only_at, when
from detfn.engine.events import Event, Hook, HookConfig, Stage, get_priority
from detfn.engine.state import TrainState, run_max_iters, with_hook_state
from detfn.registry import register

CHECKPOINT = "checkpoint"


@dataclass(frozen=True)
class CheckpointHookConfig(HookConfig):
    """Interval 1 as mmdet's default runtime. Priority NORMAL: after the optimizer, before
    evaluation (LOW), so a crash in evaluation still leaves the checkpoint."""

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

    def __post_init__(self) -> None:
        super().__post_init__()
        ok = self.out_dir is None or bool(self.out_dir.strip())
        check(self, "out_dir", ok, "must be None or a directory path, got an empty string")


def redundant_steps(kept: list[int], current: int, interval: int, max_keep: int) -> list[int]:
    """Kept checkpoint numbers that mmcv's rule deletes after saving ``current``: those on the
    interval grid at or below ``current - max_keep·interval``. Off-grid files (``save_last``,
    final states) are never deleted, as in mmcv."""
    if max_keep <= 0 or interval <= 0:
        return []
    oldest_kept = current - max_keep * interval
    return [n for n in kept if n <= oldest_kept and (current - n) % interval == 0]


def resolve_out_dir(out_dir: str | None, run: Any, who: str) -> pathlib.Path:
    chosen = out_dir if out_dir is not None else getattr(run, "work_dir", None)
    if chosen is None:
        raise ValueError(f"{who}: out_dir is None and the run has no work_dir; set one of them")
    return pathlib.Path(chosen)


@register(CheckpointHookConfig)
def checkpoint_hook(cfg: CheckpointHookConfig) -> Hook:
    unit = "epoch" if cfg.by_epoch else "iter"
    out_dir = lambda event: resolve_out_dir(cfg.out_dir, event.run, "CheckpointHook")  # noqa: E731

    def start(event: Event) -> TrainState | None:
        out_dir(event).mkdir(parents=True, exist_ok=True)
        if CHECKPOINT in event.state.hooks:
            return None
        return with_hook_state(event.state, CHECKPOINT, {"kept": [], "last": None})

    def write(event: Event, name: str, kept: list[int]) -> TrainState:
        new_state = with_hook_state(event.state, CHECKPOINT, {"kept": kept, "last": name})
        directory = out_dir(event)
        if save_event_state(event, new_state, directory / name, cfg.save_optimizer):
            write_latest(directory, directory / name)
        return new_state

    def save(event: Event) -> TrainState:
        number = getattr(event.state, unit) + 1
        mine = event.state.hooks.get(CHECKPOINT) or {"kept": []}
        kept = [n for n in mine["kept"] if n != number] + [number]
        dropped = redundant_steps(kept, number, cfg.interval, cfg.max_keep_ckpts)
        new_state = write(event, f"{unit}_{number}.pth", [n for n in kept if n not in dropped])
        for n in dropped:
            (out_dir(event) / f"{unit}_{n}.pth").unlink(missing_ok=True)
        return new_state

    def final(event: Event) -> TrainState | None:  # a state the interval rule did not save
        state = event.state
        done = state.epoch if cfg.by_epoch else state.iter
        total = state.max_epochs if cfg.by_epoch else run_max_iters(state)
        saved = (cfg.interval > 0 and done % cfg.interval == 0) or (cfg.save_last and done == total)
        if saved and not (cfg.by_epoch and state.inner_iter):
            return None
        kept = (state.hooks.get(CHECKPOINT) or {"kept": []})["kept"]
        return write(event, f"iter_{state.iter}.pth", kept)

    never = lambda event: False  # noqa: E731
    finished = lambda event: event.error is None and event.state.iter > 0  # noqa: E731
    every = nth(cfg.interval, unit) if cfg.interval > 0 else never
    due = any_of(every, last(unit) if cfg.save_last else never)
    after = Stage.AFTER_TRAIN_EPOCH if cfg.by_epoch else Stage.AFTER_TRAIN_ITER
    fn = compose(
        only_at(Stage.BEFORE_RUN, start),
        only_at(after, when(due, save)),
        only_at(Stage.AFTER_RUN, when(finished, final)),
    )
    return Hook(CHECKPOINT, fn, get_priority(cfg.priority))
