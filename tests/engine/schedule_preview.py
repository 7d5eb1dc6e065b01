"""Test helper: run lr / momentum schedules without a model, in the order mmcv's runner calls
hooks (what mmcv's own hook tests log).

The analogue of mmcls' ``tools/visualizations/vis_lr.py``: feed the schedule hooks the events
of a run (``before_run``, then per epoch ``before_train_epoch`` and per iteration
``before_train_iter`` / ``after_train_iter``, ``after_train_epoch``) with the counters advancing
as :mod:`detfn.engine.state` describes, and record the values each step trains with::

    state = preview_state((0.02,), (0.9,), iters_per_epoch=500, max_epochs=12)
    steps, _ = preview_schedule([schedule_hook("lr", StepSchedule(warmup="linear", ...))], state)
    steps[1]  # ((2e-05,), (0.9,)): lr and momentum of the first step

An iteration-based run (``max_epochs=None``) restarts the loader until ``max_iters``; the epoch
counts completed passes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from detfn.engine.events import Event, Hook, Stage
from detfn.engine.state import TrainState, run_max_iters

StepValues = dict[int, tuple[tuple[float, ...], tuple[float, ...]]]
"""1-based step -> (lr per group, momentum per group) used by that step."""


def preview_state(
    base_lr: tuple[float, ...],
    momentum: tuple[float, ...],
    *,
    iters_per_epoch: int,
    max_epochs: int | None = None,
    max_iters: int | None = None,
) -> TrainState:
    """A model-free state at the start of a run; ``max_iters`` defaults to epochs * loader size."""
    if max_epochs is None and max_iters is None:
        raise ValueError("preview_state: give max_epochs or max_iters")
    if iters_per_epoch <= 0:
        raise ValueError(f"preview_state: iters_per_epoch must be > 0, got {iters_per_epoch}")
    state = TrainState(
        params={},
        buffers={},
        opt_state=None,
        max_epochs=max_epochs,
        max_iters=max_iters,
        iters_per_epoch=iters_per_epoch,
        base={"lr": tuple(base_lr), "momentum": tuple(momentum)},
        hyper={"lr": tuple(base_lr), "momentum": tuple(momentum)},
    )
    return dataclasses.replace(state, max_iters=run_max_iters(state))


def _dispatch(hooks: Sequence[Hook], stage: Stage, state: TrainState) -> TrainState:
    for hook in sorted(hooks, key=lambda h: h.priority):  # stable: equal priorities keep order
        new = hook.fn(Event(stage=stage, state=state))
        if new is not None:
            state = new
    return state


def preview_schedule(
    hooks: Sequence[Hook], state: TrainState, *, stop_at: int | None = None
) -> tuple[StepValues, TrainState]:
    """Run the events of a training run through ``hooks``; return the step values, final state.

    A ``state`` with ``iter``/``inner_iter`` > 0 continues mid-epoch (a resumed run);
    ``stop_at`` interrupts once that many iterations are done and returns the state a
    checkpoint would hold at that point.
    """
    steps: StepValues = {}
    total = run_max_iters(state)
    if total is None:
        raise ValueError("preview_schedule: the state has neither max_iters nor max_epochs")
    state = _dispatch(hooks, Stage.BEFORE_RUN, state)
    while state.iter < total:
        state = _dispatch(hooks, Stage.BEFORE_TRAIN_EPOCH, state)
        while state.inner_iter < state.iters_per_epoch and state.iter < total:
            state = _dispatch(hooks, Stage.BEFORE_TRAIN_ITER, state)
            steps[state.iter + 1] = (state.lr, state.momentum)
            state = _dispatch(hooks, Stage.AFTER_TRAIN_ITER, state)
            state = dataclasses.replace(state, iter=state.iter + 1, inner_iter=state.inner_iter + 1)
            if state.iter == stop_at:
                return steps, state
        state = _dispatch(hooks, Stage.AFTER_TRAIN_EPOCH, state)
        if state.inner_iter == state.iters_per_epoch:
            state = dataclasses.replace(state, epoch=state.epoch + 1, inner_iter=0)
    return steps, state
