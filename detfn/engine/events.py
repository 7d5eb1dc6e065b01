"""Lifecycle events (their order and rules: :mod:`detfn.engine.loop`), the typed outputs they
carry, and hooks.

What the step and the hooks hand to later hooks is :class:`Outputs`, a declared field set: the
loop writes ``LOOP_OUTPUTS``, a hook declares what it ``writes`` and ``reads`` (``reads_optional``:
used when some hook produces it). :func:`~detfn.engine.driver.check_outputs` checks at start-up
that every read has an earlier writer; during a dispatch a hook can set only what it declared.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import Enum, IntEnum
from typing import Any

import torch

from detfn.config import Config, fail
from detfn.engine.state import TrainState


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


@dataclass
class Outputs:
    """The loop writes ``batch`` (before an iteration), the step's ``loss`` (0-d), ``losses``
    (named terms), ``grads`` (by parameter name), ``batch_size``, a val step's ``values`` and a
    val phase's ``metrics``; the evaluation hook ``metrics``, the optimizer hook ``grad_norm``
    (before clipping) and ``loss_scale`` (fp16), the timer ``data_time`` / ``time`` (seconds
    waiting for the batch / of the whole iteration)."""

    batch: Any = None
    loss: torch.Tensor | None = None
    losses: Mapping[str, torch.Tensor] = field(default_factory=dict)
    grads: Mapping[str, torch.Tensor] | None = None
    batch_size: int | None = None
    values: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] | None = None
    grad_norm: torch.Tensor | None = None
    loss_scale: float | None = None
    data_time: float | None = None
    time: float | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        owner, writable = self.__dict__.get("_writable") or (None, None)
        if writable is not None and name not in writable:
            raise AttributeError(
                f"{owner} may not write the step output {name!r}: it declares "
                f"writes={sorted(writable)}; each output is written by its owner only"
            )
        object.__setattr__(self, name, value)

    def open_for(self, owner: str, names: tuple[str, ...] | None) -> None:
        """Let only ``names`` be written (by ``owner``) until the next call; None: anything."""
        object.__setattr__(self, "_writable", None if names is None else (owner, frozenset(names)))


OUTPUT_FIELDS = frozenset(f.name for f in fields(Outputs))
LOOP_OUTPUTS = frozenset({"batch", "loss", "losses", "grads", "batch_size", "values", "metrics"})


@dataclass(frozen=True)
class Event:
    """The ``run`` holds the static facts (config, work dir, loaders); ``error`` is set on the
    ``after_run`` of a failed run."""

    stage: Stage
    state: TrainState
    outputs: Outputs = field(default_factory=Outputs)
    run: Any = None
    error: BaseException | None = None


HookFn = Callable[[Event], "TrainState | None"]


@dataclass(frozen=True)
class Hook:
    """A named function with a priority; a state it returns replaces it for later hooks."""

    name: str
    fn: HookFn
    priority: int = 50
    reads: tuple[str, ...] = ()
    reads_optional: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()


class Priority(IntEnum):
    """mmcv's named levels."""

    HIGHEST = 0
    VERY_HIGH = 10
    HIGH = 30
    ABOVE_NORMAL = 40
    NORMAL = 50
    BELOW_NORMAL = 60
    LOW = 70
    VERY_LOW = 90
    LOWEST = 100


def get_priority(priority: int | str | Priority) -> int:
    """An int in [0, 100], a :class:`Priority`, or a level name in any case -> the int value;
    any other type is a TypeError (mmcv's ``get_priority`` contract)."""
    if isinstance(priority, int) and not isinstance(priority, bool):  # a Priority is an int
        if not 0 <= priority <= 100:
            raise ValueError("priority must be between 0 and 100")
        return int(priority)
    if isinstance(priority, str):
        try:
            return int(Priority[priority.upper()])
        except KeyError:
            names = ", ".join(p.name for p in Priority)
            raise ValueError(f"unknown priority {priority!r}; use one of {names}") from None
    raise TypeError("priority must be an integer or Priority enum value")


@dataclass(frozen=True)
class HookConfig(Config):
    """The base of hook configs: a ``priority`` (an int in [0, 100] or a level name), checked."""

    priority: int | str = "NORMAL"

    def __post_init__(self) -> None:
        try:
            get_priority(self.priority)
        except (ValueError, TypeError) as error:
            fail(self, "priority", f"is invalid ({error}), got {self.priority!r}")
