"""The explicit, checkpointable state of a training run.

Everything that changes while training lives here and nowhere else, so a checkpoint of this value
resumes the run exactly. It is a frozen dataclass: hooks return ``dataclasses.replace(state, ...)``.

Counters follow mmcv's runner: while the events of an iteration are dispatched, ``iter`` is the
0-based index of that iteration (the number completed before it) and ``inner_iter`` its index in
the epoch; ``epoch`` is the 0-based index of the running epoch. The loop advances ``iter`` and
``inner_iter`` after ``after_train_iter`` and ``epoch`` after ``after_train_epoch``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["TrainState"]


@dataclass(frozen=True)
class TrainState:
    """Attributes:
    params: trainable parameters by name (what the optimizer updates).
    buffers: everything else the model needs by name: BN statistics, frozen parameters.
    opt_state: the optimizer's state (momentum buffers, Adam moments, step count).
    epoch, iter, inner_iter: progress counters (see module docstring).
    max_epochs, max_iters: the run's length; one of them is set.
    iters_per_epoch: length of the train loader (needed by by-epoch schedules and warmup).
    base_lr: the configured lr of each parameter group (lr multipliers applied).
    lr, momentum: the current lr and momentum (beta1 for Adam) of each parameter group.
    rng: the global RNG states (torch CPU and CUDA, Python, NumPy; see
        :mod:`detfn.engine.rng`), captured by the loop before ``after_train_iter`` and
        ``after_train_epoch`` and restored when a run starts, for exact resume. The loader's
        position is not stored here: the loop derives it from ``epoch`` and ``inner_iter``.
    hooks: per-hook state keyed by hook name (best score, kept checkpoints, EMA weights,
        grad-scaler state, timer...). Values must be checkpointable (tensors, numbers, str,
        lists/dicts of them).
    stop_reason: set by a hook that asks the loop to stop; once set it stays set.
    """

    params: Mapping[str, torch.Tensor]
    buffers: Mapping[str, torch.Tensor]
    opt_state: Any
    epoch: int = 0
    iter: int = 0
    inner_iter: int = 0
    max_epochs: int | None = None
    max_iters: int | None = None
    iters_per_epoch: int = 0
    base_lr: tuple[float, ...] = ()
    lr: tuple[float, ...] = ()
    momentum: tuple[float, ...] = ()
    rng: Mapping[str, Any] = field(default_factory=dict)
    hooks: Mapping[str, Any] = field(default_factory=dict)
    stop_reason: str | None = None
