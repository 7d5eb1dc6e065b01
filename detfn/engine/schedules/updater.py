"""When a schedule sets its value: the event rules of mmcv's ``LrUpdaterHook`` /
``MomentumUpdaterHook``, as a pure function of (config, event stage, train state).

Rules (identical for lr and momentum; ``t`` = ``state.iter``, ``W`` = warmup length in iters):

* ``before_train_epoch``: a ``by_epoch`` schedule sets the regular value of ``state.epoch``.
* ``before_train_iter``, iteration-based schedule: the regular value of ``t``; during warmup
  (``warmup`` set and ``t < W``) the warmed-up value instead.
* ``before_train_iter``, ``by_epoch`` schedule: during warmup (``t < W``) the warmed-up value of
  the epoch's regular value; at ``t == W`` the regular value; afterwards nothing (the value set
  at the start of the epoch stays).
* every other event: nothing.

Warmup counts global iterations even for ``by_epoch`` schedules, so a warmup longer than an epoch
continues from the next epoch's regular value, as in mmcv.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from detfn.engine.events import Stage
from detfn.engine.schedules.warmup import warmup_length
from detfn.engine.state import TrainState

__all__ = ["check_warmup_run", "run_max_iters", "schedule_progress", "updated_values"]

WarmupFn = Callable[[str, float, int, int, float], float]


def run_max_iters(state: TrainState) -> int | None:
    """The run's length in iterations: ``max_iters``, else ``max_epochs * iters_per_epoch``.

    mmcv's epoch-based runner sets ``max_iters`` this way before ``before_run``; the cyclic and
    one-cycle schedules of an epoch-based run depend on it.
    """
    if state.max_iters is not None:
        return state.max_iters
    if state.max_epochs is not None and state.iters_per_epoch > 0:
        return state.max_epochs * state.iters_per_epoch
    return None


def schedule_progress(by_epoch: bool, state: TrainState) -> tuple[int, int | None]:
    """(progress, max_progress): epochs for a ``by_epoch`` schedule, else global iterations."""
    if by_epoch:
        return state.epoch, state.max_epochs
    return state.iter, run_max_iters(state)


def check_warmup_run(cfg: Any, state: TrainState) -> None:
    """A warmup counted in epochs needs the loader length; fail at ``before_run`` without it."""
    if cfg.warmup is not None and cfg.warmup_by_epoch and state.iters_per_epoch <= 0:
        raise ValueError(
            f"{type(cfg).__name__}(warmup_by_epoch=True) needs state.iters_per_epoch > 0, "
            f"got {state.iters_per_epoch}"
        )


def updated_values(
    cfg: Any,
    stage: Stage,
    state: TrainState,
    regular: Callable[[TrainState], tuple[float, ...]],
    warmup_fn: WarmupFn,
) -> tuple[float, ...] | None:
    """The per-group values to set at ``stage``, or None to leave them (see module docstring).

    Args:
        cfg: a schedule config (``by_epoch``, ``warmup``, ``warmup_iters``, ``warmup_ratio``,
            ``warmup_by_epoch``).
        regular: the regular values of every parameter group at ``state``.
        warmup_fn: :func:`~detfn.engine.schedules.warmup.warmup_lr` or ``warmup_momentum``.
    """
    if stage is Stage.BEFORE_TRAIN_EPOCH:
        return regular(state) if cfg.by_epoch else None
    if stage is not Stage.BEFORE_TRAIN_ITER:
        return None
    cur = state.iter
    length = warmup_length(cfg.warmup_iters, cfg.warmup_by_epoch, state.iters_per_epoch)
    if cfg.by_epoch and (cfg.warmup is None or cur > length):
        return None
    values = regular(state)
    if cfg.warmup is None or cur >= length:
        return values
    return tuple(warmup_fn(cfg.warmup, v, cur, length, cfg.warmup_ratio) for v in values)
