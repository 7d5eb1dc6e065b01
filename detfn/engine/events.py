"""Lifecycle events the training generator yields, and the hook type that consumes them.

Order (mmcv's runner stages)::

    before_run
    for each phase of the workflow, e.g. [("train", 1), ("val", 1)]:
        train: before_train_epoch
                   for each batch: before_train_iter, <step>, after_train_iter
               after_train_epoch
        val:   before_val_epoch
                   for each batch: before_val_iter, <predict>, after_val_iter
               after_val_epoch
    after_run            (always, also when a step or hook raised)

Handlers of ``before_*`` events must be cheap; heavy work (checkpoints, evaluation) goes on
``after_*`` events.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from detfn.engine.state import TrainState

__all__ = ["Event", "Hook", "HookFn", "Stage"]


class Stage(str, Enum):
    """The ten lifecycle stages, in mmcv's order."""

    BEFORE_RUN = "before_run"
    BEFORE_TRAIN_EPOCH = "before_train_epoch"
    BEFORE_TRAIN_ITER = "before_train_iter"
    AFTER_TRAIN_ITER = "after_train_iter"
    AFTER_TRAIN_EPOCH = "after_train_epoch"
    BEFORE_VAL_EPOCH = "before_val_epoch"
    BEFORE_VAL_ITER = "before_val_iter"
    AFTER_VAL_ITER = "after_val_iter"
    AFTER_VAL_EPOCH = "after_val_epoch"
    AFTER_RUN = "after_run"


@dataclass(frozen=True)
class Event:
    """One lifecycle event.

    Attributes:
        stage: which point of the run this is.
        state: the train state at this point.
        outputs: the step's outputs where there are any. After a train iter: ``loss`` (0-d
            tensor), ``losses`` (name -> 0-d tensor), ``grads`` (name -> tensor), ``batch_size``,
            and whatever later hooks add (``grad_norm``). After a val epoch: ``metrics``.
        run: static facts of the run, same object for every event (config, work dir, loaders).
        error: on ``after_run`` after a failure, the exception; None when the run finished.
    """

    stage: Stage
    state: TrainState
    outputs: Mapping[str, Any] = field(default_factory=dict)
    run: Any = None
    error: BaseException | None = None


HookFn = Callable[[Event], "TrainState | None"]


@dataclass(frozen=True)
class Hook:
    """A named function with a priority. Returning a new state replaces it for later hooks."""

    name: str
    fn: HookFn
    priority: int = 50
