"""Exponential moving average of the parameters (mmcv 1.x ``EMAHook``).

``momentum`` is the weight of the *new* value: every ``interval`` iterations (``iter % interval
== 0``), ``m = min(momentum ** interval, (1 + t) / (warm_up + t))`` and ``ema = (1 - m) * ema +
m * param``. At ``after_train_epoch`` the raw and EMA weights are swapped, so evaluation and
checkpoints after it (priority 49: after the optimizer, 40, before checkpoints, 50) see the EMA
weights; ``before_train_epoch`` swaps back. State: ``state.hooks["ema"] = {"params": EMA weights,
"raw": the training weights while swapped out, else None}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from detfn.config import check, check_positive
from detfn.engine.combinators import compose, nth, only_at, when
from detfn.engine.events import Event, Hook, HookConfig, Stage, get_priority
from detfn.engine.state import TrainState, with_hook_state
from detfn.registry import register

EMA_HOOK = "ema"


@dataclass(frozen=True)
class EMAConfig(HookConfig):
    """mmcv ``EMAHook(momentum=0.0002, interval=1, warm_up=100)``.

    ``priority`` 49: after the optimizer update (40) of the same iteration, before the
    checkpoint hook (50), so epoch checkpoints hold the EMA weights, as mmdet's configs do.
    """

    momentum: float = 0.0002
    interval: int = 1
    warm_up: int = 100
    priority: int | str = 49

    def __post_init__(self) -> None:
        super().__post_init__()
        ok = 0.0 < self.momentum < 1.0
        check(self, "momentum", ok, f"must be in (0, 1), got {self.momentum}")
        check_positive(self, "interval", "warm_up")


def ema_momentum(cfg: EMAConfig, iteration: int) -> float:
    """The weight of the new value at ``iteration`` (mmcv's formula)."""
    return min(cfg.momentum**cfg.interval, (1 + iteration) / (cfg.warm_up + iteration))


def ema_params(state: TrainState) -> Mapping[str, torch.Tensor]:
    """The EMA weights, whether or not they are swapped into ``state.params`` right now."""
    mine = state.hooks.get(EMA_HOOK)
    if mine is None:
        raise KeyError("ema_params: the state has no EMA (no EMA hook ran before_run)")
    return mine["params"]


def _mine(state: TrainState) -> Mapping[str, Any]:
    mine = state.hooks.get(EMA_HOOK)
    if mine is None:
        raise RuntimeError("EMA hook: no EMA state; the hook must see before_run first")
    return mine


def _start(event: Event) -> TrainState | None:
    """A copy of the weights, unless a resumed state already has the EMA."""
    state = event.state
    if EMA_HOOK in state.hooks:
        return None
    copies = {n: p.detach().clone() for n, p in state.params.items()}
    return with_hook_state(state, EMA_HOOK, {"params": copies, "raw": None})


def _swap_in(event: Event) -> TrainState | None:
    """EMA weights into ``state.params``; the training weights wait in ``raw``."""
    state, mine = event.state, _mine(event.state)
    if mine.get("raw") is not None:
        return None
    new_mine = {"params": mine["params"], "raw": dict(state.params)}
    return with_hook_state(replace(state, params=dict(mine["params"])), EMA_HOOK, new_mine)


def _swap_out(event: Event) -> TrainState | None:
    """The training weights back into ``state.params``."""
    state, mine = event.state, _mine(event.state)
    if mine.get("raw") is None:
        return None
    new_mine = {"params": mine["params"], "raw": None}
    return with_hook_state(replace(state, params=dict(mine["raw"])), EMA_HOOK, new_mine)


def ema_hook(cfg: EMAConfig) -> Hook:
    """The EMA hook, named ``"ema"`` like its state (see the module docstring)."""

    def update(event: Event) -> None:
        """In-place EMA step over all parameters (EMA tensors are donated hook state)."""
        state, mine = event.state, _mine(event.state)
        names = list(mine["params"])
        emas = [mine["params"][n] for n in names]
        weight = ema_momentum(cfg, state.iter)
        torch._foreach_lerp_(emas, [state.params[n].detach() for n in names], weight)

    fn = compose(
        only_at(Stage.BEFORE_RUN, _start),
        # mmcv counts 0-based here: update when iter % interval == 0
        only_at(Stage.AFTER_TRAIN_ITER, when(nth(cfg.interval, "iter", start=1), update)),
        only_at(Stage.AFTER_TRAIN_EPOCH, _swap_in),
        only_at(Stage.BEFORE_TRAIN_EPOCH, _swap_out),
    )
    return Hook(EMA_HOOK, fn, get_priority(cfg.priority))


register(EMAConfig)(ema_hook)
