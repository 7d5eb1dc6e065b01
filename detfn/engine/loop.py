"""The training loop as a generator of lifecycle events, and the driver that feeds it to hooks.

Lifecycle (mmcv's runner stages; see :mod:`detfn.engine.events`)::

    before_run
    repeat until max_epochs / max_iters is reached or a stop is requested:
        for phase, count in workflow:               e.g. (("train", 1), ("val", 1))
            train, epoch-based: ``count`` epochs;  iteration-based: ``count`` iterations
                before_train_epoch                  (when an epoch of the train loader opens)
                before_train_iter   outputs: batch
                <train step: loss, grads>
                after_train_iter    outputs: loss, losses, grads, batch_size (+ what hooks add)
                after_train_epoch                   (when the loader's epoch is exhausted)
            val: ``count`` passes over the val loader
                before_val_epoch
                before_val_iter / <val_step> / after_val_iter      (when run.val_step is set)
                after_val_epoch     outputs: metrics
    after_run                                       (always; event.error is set after a failure)

Rules:

* ``before_*`` handlers must be cheap; heavy work (checkpoints, evaluation) belongs on ``after_*``.
* The consumer may send a new :class:`TrainState` back for every event; ``None`` keeps it.
* Epoch-based when ``state.max_epochs`` is set (then ``max_iters = max_epochs *
  len(train_loader)``, as mmcv's runner sets it), iteration-based otherwise.
* Counters: during an iteration's events ``state.iter``/``inner_iter`` index that iteration; the
  loop advances them after ``after_train_iter`` and ``state.epoch`` after ``after_train_epoch``.
* A stop request (``state.stop_reason``, never cleared) ends the run at the next boundary: the
  current event's handlers finish, nothing new starts, ``after_run`` follows.
* When the step or a handler raises, or a ``KeyboardInterrupt`` arrives in :func:`drive`,
  ``after_run`` is still yielded with ``error`` set (log flush, wandb finish); then the error
  propagates.
* Resume: a non-empty ``state.rng`` restores the global RNGs first; ``inner_iter > 0`` continues
  that epoch: ``before_train_epoch`` is dispatched again (handlers must be idempotent) and the
  loader is positioned with ``load_state_dict`` (or the consumed batches are skipped).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from detfn.engine.driver import Events, keep_stop_reason
from detfn.engine.events import LOOP_OUTPUTS, Event, Outputs, Stage
from detfn.engine.state import TrainState, capture_rng, restore_rng
from detfn.engine.step import LossFn, TrainStep, batch_size_of, make_train_step

Workflow = Sequence[tuple[str, int]]
_END = object()


@dataclass(frozen=True)
class RunContext:
    """Static facts of a run, the same object on every event (``event.run``).

    Attributes:
        cfg: the experiment config (any dataclass), for loggers and checkpoints.
        train_loader: ``len()`` batches per epoch; optionally ``set_epoch(e)`` and
            ``state_dict()`` / ``load_state_dict(d)`` for mid-epoch resume.
        train_step: ``step(state, batch) -> outputs``; None builds ``make_train_step(loss_fn)``.
        val_step: ``val_step(state, batch) -> dict`` of scalars, under ``no_grad``; a val
            phase's metrics are their batch-size-weighted means over ``val_loader``.
        evaluate: ``evaluate(state) -> metrics``, for evaluation hooks and a val phase without
            ``val_step``.
    """

    cfg: Any = None
    work_dir: Path | None = None
    train_loader: Any = None
    val_loader: Any = None
    loss_fn: LossFn | None = None
    train_step: TrainStep | None = None
    val_step: Callable[[TrainState, Any], Mapping[str, Any]] | None = None
    evaluate: Callable[[TrainState], Mapping[str, float]] | None = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("detfn"))


def check_workflow(
    workflow: Workflow, run: RunContext | None = None
) -> tuple[tuple[str, int], ...]:
    """Validate phases: ``("train" | "val", count >= 1)``, at least one train phase; with a
    ``run``, also that a val phase has what it needs."""
    phases = tuple(tuple(p) for p in workflow)
    for phase in phases:
        ok = len(phase) == 2 and phase[0] in ("train", "val") and type(phase[1]) is int
        if not ok or phase[1] < 1:
            raise ValueError(f"workflow phase {phase!r} must be ('train' | 'val', count >= 1)")
    if not any(p[0] == "train" for p in phases):
        raise ValueError(f"workflow {phases!r} has no ('train', n) phase; the run would not end")
    if run is None or not any(p[0] == "val" for p in phases):
        return phases
    if run.val_step is None and run.evaluate is None:
        raise ValueError("workflow has a 'val' phase but the RunContext has no val_step/evaluate")
    if run.val_step is not None and run.val_loader is None:
        raise ValueError("workflow has a 'val' phase with a val_step but no val_loader")
    return phases


def train_loop(state: TrainState, run: RunContext, workflow: Workflow = (("train", 1),)) -> Events:
    """The event generator of a run (see the module docstring); returns the final state."""
    if state.max_epochs is None and state.max_iters is None:
        raise ValueError("TrainState needs max_epochs (epoch-based) or max_iters (iter-based)")
    for name in ("max_epochs", "max_iters"):
        value = getattr(state, name)
        if value is not None and (type(value) is not int or value < 1):
            raise ValueError(f"TrainState.{name} must be an int >= 1 or None, got {value!r}")
    phases = check_workflow(workflow, run)
    if run.train_loader is None or (run.train_step is None and run.loss_fn is None):
        raise ValueError("RunContext needs a train_loader and a loss_fn (or train_step)")
    return _Loop(run, phases).events(state)


class _Loop:
    """The generator's machinery; ``latest`` is the newest state, for the failure event."""

    def __init__(self, run: RunContext, phases: tuple[tuple[str, int], ...]):
        self.run = run
        self.phases = phases
        self.step = run.train_step or make_train_step(run.loss_fn)
        self.batches: Iterator[Any] | None = None  # the open train epoch's batches
        self.latest: TrainState | None = None
        self.after_run_sent = False

    def events(self, state: TrainState) -> Events:
        self.latest = state
        try:
            if state.rng:
                restore_rng(state.rng)
            per_epoch = len(self.run.train_loader)
            if per_epoch < 1:
                raise ValueError(f"the train loader has len() == {per_epoch}; it needs batches")
            max_iters = state.max_epochs * per_epoch if state.max_epochs else state.max_iters
            state = replace(state, iters_per_epoch=per_epoch, max_iters=max_iters)
            state = yield from self.emit(Stage.BEFORE_RUN, state)
            while not self.finished(state) and state.stop_reason is None:
                state = yield from self.workflow_pass(state)
            self.after_run_sent = True
            return (yield from self.emit(Stage.AFTER_RUN, state))
        except (Exception, KeyboardInterrupt) as error:
            if self.after_run_sent:
                raise
            self.after_run_sent = True
            yield Event(Stage.AFTER_RUN, self.latest, Outputs(), self.run, error)
            raise

    def emit(self, stage: Stage, state: TrainState, outputs: Outputs | None = None):
        self.latest = state
        sent = yield Event(stage, state, outputs if outputs is not None else Outputs(), self.run)
        if sent is not None:
            state = keep_stop_reason(state, sent)
        self.latest = state
        return state

    def finished(self, state: TrainState) -> bool:
        if state.max_epochs is not None:
            return state.epoch >= state.max_epochs
        return state.iter >= state.max_iters

    def workflow_pass(self, state: TrainState):
        for phase, count in self.phases:
            for _ in range(count):
                if state.stop_reason is not None:
                    return state
                if phase == "val":
                    state = yield from self.val_epoch(state)
                elif self.finished(state):
                    break
                elif state.max_epochs is not None:
                    state = yield from self.train_epoch(state)
                else:
                    state = yield from self.train_one_iter(state)
        return state

    def train_epoch(self, state: TrainState):
        """The unit of an epoch-based run: one epoch (or the rest of a resumed one)."""
        if self.batches is None:
            state = yield from self.open_epoch(state)
        while self.batches is not None and state.stop_reason is None:
            state = yield from self.next_iter(state)
        return state

    def train_one_iter(self, state: TrainState):
        """The unit of an iteration-based run: one iteration, opening epochs as needed."""
        done = state.iter + 1
        while state.stop_reason is None and state.iter < done:
            if self.batches is None:
                state = yield from self.open_epoch(state)
            else:
                state = yield from self.next_iter(state)
        return state

    def open_epoch(self, state: TrainState):
        state = yield from self.emit(Stage.BEFORE_TRAIN_EPOCH, state)
        loader, done = self.run.train_loader, state.inner_iter
        if done >= state.iters_per_epoch:
            self.batches = iter(())  # resumed after the epoch's last iteration: nothing left
        elif done and hasattr(loader, "load_state_dict"):
            loader.load_state_dict({"epoch": state.epoch, "batches_done": done})
            self.batches = iter(loader)
        else:
            self.batches = itertools.islice(iter(loader), done, None)
        return state

    def close_epoch(self, state: TrainState):
        # Run the loader's iterator to its end, so its own end-of-epoch code runs, and check
        # that it agrees with len().
        extra = next(self.batches, _END)
        self.batches = None
        if extra is not _END:
            more = f"more than len() = {state.iters_per_epoch} batches in epoch {state.epoch}"
            raise RuntimeError(f"train loader yielded {more}; schedules rely on len()")
        state = replace(state, rng=capture_rng())
        state = yield from self.emit(Stage.AFTER_TRAIN_EPOCH, state)
        return replace(state, epoch=state.epoch + 1, inner_iter=0)

    def next_iter(self, state: TrainState):
        """The next iteration of the open epoch; closes the epoch after its last batch."""
        batch = next(self.batches, _END)
        if batch is _END:
            return (yield from self.loader_ended(state))
        state = yield from self.emit(Stage.BEFORE_TRAIN_ITER, state, Outputs(batch=batch))
        outputs = self.step(state, batch)
        if not isinstance(outputs, Outputs):
            unknown = sorted(set(outputs) - LOOP_OUTPUTS)
            if unknown:
                raise TypeError(f"the train step returned {unknown}, which are not loop outputs; "
                                f"it may return {sorted(LOOP_OUTPUTS)}")  # fmt: skip
            outputs = Outputs(**outputs)
        state = replace(state, rng=capture_rng())
        state = yield from self.emit(Stage.AFTER_TRAIN_ITER, state, outputs)
        state = replace(state, iter=state.iter + 1, inner_iter=state.inner_iter + 1)
        if state.inner_iter >= state.iters_per_epoch:
            state = yield from self.close_epoch(state)
        return state

    def loader_ended(self, state: TrainState):
        """The loader stopped before ``len()`` batches (it may skip unreadable images)."""
        if state.inner_iter == 0:
            raise RuntimeError(f"train loader yielded no batches in epoch {state.epoch}")
        if state.inner_iter < state.iters_per_epoch:
            self.run.logger.warning(
                f"train loader ended after {state.inner_iter} of len() = {state.iters_per_epoch} "
                f"batches in epoch {state.epoch}; schedules that count iterations assume len()"
            )
        self.batches = iter(())
        return (yield from self.close_epoch(state))

    def val_epoch(self, state: TrainState):
        state = yield from self.emit(Stage.BEFORE_VAL_EPOCH, state)
        if self.run.val_step is None:
            metrics = dict(self.run.evaluate(state))
        else:
            totals: dict[str, float] = {}
            seen = 0
            for batch in self.run.val_loader:
                state = yield from self.emit(Stage.BEFORE_VAL_ITER, state, Outputs(batch=batch))
                with torch.no_grad():
                    outputs = dict(self.run.val_step(state, batch))
                size = int(outputs.get("batch_size", batch_size_of(batch)))
                done = Outputs(values=outputs, batch_size=size)
                state = yield from self.emit(Stage.AFTER_VAL_ITER, state, done)
                seen += size
                for key, value in _scalars(outputs).items():
                    totals[key] = totals.get(key, 0.0) + value * size
            metrics = {k: v / seen for k, v in totals.items()} if seen else {}
        return (yield from self.emit(Stage.AFTER_VAL_EPOCH, state, Outputs(metrics=metrics)))


def _scalars(outputs: Mapping[str, Any]) -> dict[str, float]:
    """Numeric scalars of a val step's outputs (nested dicts flattened)."""
    flat: dict[str, float] = {}
    for key, value in outputs.items():
        if isinstance(value, Mapping):
            flat.update(_scalars(value))
        elif key != "batch_size" and (
            value.numel() == 1
            if isinstance(value, torch.Tensor)
            else isinstance(value, (int, float)) and not isinstance(value, bool)
        ):
            flat[key] = float(value)
    return flat
