"""Exponential moving average of the parameters (mmcv 1.x ``EMAHook``).

``momentum`` is the weight of the *new* value: every ``interval`` iterations (``iter % interval
== 0``), ``m = min(momentum ** interval, (1 + t) / (warm_up + t))`` and ``ema = (1 - m) * ema +
m * param``. ``after_train_epoch`` swaps the EMA weights into ``state.params``, so evaluation and
checkpoints see them; ``before_train_epoch`` swaps back. ``state.hooks["ema"] = {"params": EMA
weights, "raw": the training weights while swapped out, else None}``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from detfn.config import check, check_positive
from detfn.engine.combinators import compose, nth, only_at, when
from detfn.engine.events import Event, Hook, HookConfig, Stage, get_priority
from detfn.engine.state import TrainState, with_hook_state
from detfn.registry import register

EMA_HOOK = "ema"


@dataclass(frozen=True)
class EMAConfig(HookConfig):
    """mmcv ``EMAHook(momentum=0.0002, interval=1, warm_up=100)``; priority 49: after the
    optimizer update (40), before the checkpoint hook (50), as in mmdet's configs."""

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


@register(EMAConfig)
def ema_hook(cfg: EMAConfig) -> Hook:
    def swap(event: Event, into_params: bool) -> TrainState | None:
        """EMA weights into ``state.params`` (``into_params``; the training weights wait in
        ``raw``), or the training weights back; nothing when they already are where asked."""
        state, mine = event.state, event.state.hooks[EMA_HOOK]
        if (mine.get("raw") is not None) == into_params:
            return None
        params = mine["params"] if into_params else mine["raw"]
        raw = dict(state.params) if into_params else None
        return with_hook_state(replace(state, params=dict(params)), EMA_HOOK, {**mine, "raw": raw})

    def start(event: Event) -> TrainState | None:  # a resumed state already has the EMA
        if EMA_HOOK in event.state.hooks:
            return None
        copies = {n: p.detach().clone() for n, p in event.state.params.items()}
        return with_hook_state(event.state, EMA_HOOK, {"params": copies, "raw": None})

    def update(event: Event) -> None:
        """In-place EMA step over all parameters (EMA tensors are donated hook state)."""
        emas = event.state.hooks[EMA_HOOK]["params"]
        news = [event.state.params[n].detach() for n in emas]
        torch._foreach_lerp_(list(emas.values()), news, ema_momentum(cfg, event.state.iter))

    fn = compose(
        only_at(Stage.BEFORE_RUN, start),
        # mmcv counts 0-based here: update when iter % interval == 0
        only_at(Stage.AFTER_TRAIN_ITER, when(nth(cfg.interval, "iter", start=1), update)),
        only_at(Stage.AFTER_TRAIN_EPOCH, lambda event: swap(event, True)),
        only_at(Stage.BEFORE_TRAIN_EPOCH, lambda event: swap(event, False)),
    )
    return Hook(EMA_HOOK, fn, get_priority(cfg.priority))
