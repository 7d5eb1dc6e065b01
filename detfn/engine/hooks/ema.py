"""Exponential moving average of the parameters, with mmcv 1.x ``EMAHook`` semantics.

``momentum`` is the weight of the *new* value (the opposite of torch's "decay" convention)::

    every `interval` iterations (when state.iter % interval == 0):
        m = min(momentum ** interval, (1 + t) / (warm_up + t))       t = state.iter
        ema = (1 - m) * ema + m * param

The warm-up term lets early averages follow the fast-changing weights. At ``after_train_epoch``
the hook swaps the raw and EMA weights, so evaluation and checkpoints that run after it (its
default priority 49 sits between the optimizer, 40, and the checkpoint hook, 50) see the EMA
weights in ``state.params``; ``before_train_epoch`` swaps back before training continues.

State: ``state.hooks["ema"] = {"params": {name: Tensor}, "raw": {name: Tensor} | None}``:
``params`` always holds the EMA weights (evaluation hooks may read them at any time); ``raw``
holds the training weights while they are swapped out, else None.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from detfn.config import Config, check, check_positive
from detfn.engine.events import Event, Hook, Stage
from detfn.engine.priority import get_priority
from detfn.engine.state import TrainState
from detfn.registry import register

__all__ = ["EMA_HOOK", "EMAConfig", "build_ema_hook", "ema_hook", "ema_momentum", "ema_params"]

EMA_HOOK = "ema"


@dataclass(frozen=True)
class EMAConfig(Config):
    """mmcv ``EMAHook(momentum=0.0002, interval=1, warm_up=100)``.

    ``priority`` 49: after the optimizer update (40) of the same iteration, before the
    checkpoint hook (50), so epoch checkpoints hold the EMA weights, as mmdet's configs do.
    """

    momentum: float = 0.0002
    interval: int = 1
    warm_up: int = 100
    priority: int | str = 49

    def __post_init__(self) -> None:
        check(
            self, "momentum", 0.0 < self.momentum < 1.0, f"must be in (0, 1), got {self.momentum}"
        )
        check_positive(self, "interval", "warm_up")
        get_priority(self.priority)


def ema_momentum(cfg: EMAConfig, iteration: int) -> float:
    """The weight of the new value at ``iteration`` (mmcv's formula)."""
    return min(cfg.momentum**cfg.interval, (1 + iteration) / (cfg.warm_up + iteration))


def ema_params(state: TrainState) -> Mapping[str, torch.Tensor]:
    """The EMA weights, whether or not they are swapped into ``state.params`` right now."""
    mine = state.hooks.get(EMA_HOOK)
    if mine is None:
        raise KeyError("ema_params: the state has no EMA (no EMA hook ran before_run)")
    return mine["params"]


def _swap_in(state: TrainState, mine: Mapping[str, Any]) -> TrainState:
    """EMA weights into ``state.params``; the training weights wait in ``raw``."""
    new_mine = {"params": mine["params"], "raw": dict(state.params)}
    return replace(state, params=dict(mine["params"]), hooks={**state.hooks, EMA_HOOK: new_mine})


def _swap_out(state: TrainState, mine: Mapping[str, Any]) -> TrainState:
    """The training weights back into ``state.params``."""
    new_mine = {"params": mine["params"], "raw": None}
    return replace(state, params=dict(mine["raw"]), hooks={**state.hooks, EMA_HOOK: new_mine})


def _update(cfg: EMAConfig, state: TrainState, mine: Mapping[str, Any]) -> None:
    """In-place EMA step over all parameters (EMA tensors are donated hook state)."""
    m = ema_momentum(cfg, state.iter)
    names = list(mine["params"])
    emas = [mine["params"][n] for n in names]
    torch._foreach_lerp_(emas, [state.params[n].detach() for n in names], m)


def ema_hook(cfg: EMAConfig) -> Hook:
    """The EMA hook, named ``"ema"`` like its state (see the module docstring)."""

    def fn(event: Event) -> TrainState | None:
        state = event.state
        mine = state.hooks.get(EMA_HOOK)
        if event.stage is Stage.BEFORE_RUN:
            if mine is not None:
                return None
            copies = {n: p.detach().clone() for n, p in state.params.items()}
            return replace(state, hooks={**state.hooks, EMA_HOOK: {"params": copies, "raw": None}})
        if mine is None:
            raise RuntimeError("EMA hook: no EMA state; the hook must see before_run first")
        swapped = mine.get("raw") is not None
        if event.stage is Stage.AFTER_TRAIN_ITER and state.iter % cfg.interval == 0:
            _update(cfg, state, mine)
        elif event.stage is Stage.AFTER_TRAIN_EPOCH and not swapped:
            return _swap_in(state, mine)
        elif event.stage is Stage.BEFORE_TRAIN_EPOCH and swapped:
            return _swap_out(state, mine)
        return None

    return Hook(EMA_HOOK, fn, get_priority(cfg.priority))


@register(EMAConfig)
def build_ema_hook(cfg: EMAConfig) -> Hook:
    """``build(EMAConfig(...))``."""
    return ema_hook(cfg)
