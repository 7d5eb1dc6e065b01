"""The optimizer hook: gradient accumulation, fp16 loss scaling, clipping, then the update.

It runs on ``after_train_iter`` at ABOVE_NORMAL, after the lr/momentum hooks have set
``state.lr`` / ``state.momentum`` and before checkpoints, timers and loggers. Its state lives in
``state.hooks["optimizer"]`` so a resume continues an accumulation window and the loss scale:
``{"accum": grads summed so far or None, "scaler": {"scale": float, "growth_tracker": int}}``.

Gradient accumulation follows mmcv's ``GradientCumulativeOptimizerHook``: the loss of every
micro-batch is divided by ``cumulative_iters``, except in the trailing remainder of the run, where
it is divided by the remainder's size; the update happens every ``cumulative_iters`` iterations
and at the last one. So k batches of size 1 give the update of one batch of size k (models
without BatchNorm statistics that depend on the batch). Dividing the gradients is the same as
dividing the loss, since gradients are linear in it.

fp16 follows ``torch.amp.GradScaler``: the step multiplies the loss by ``scale``; here the grads
are multiplied by ``1/scale``; a window with a non-finite gradient is skipped and the scale
backs off; after ``growth_interval`` finite windows it grows. A static scale (mmcv's default
``loss_scale=512.``) is ``dynamic=False``: growth and backoff factors are 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from detfn.config import Config, check, check_positive
from detfn.engine.events import Event, Hook, Stage
from detfn.engine.optim.base import Optimizer
from detfn.engine.priority import Priority
from detfn.engine.state import TrainState
from detfn.registry import register

__all__ = [
    "OPTIMIZER_HOOK",
    "GradClipConfig",
    "LossScaleConfig",
    "OptimizerHookConfig",
    "build_optimizer_hook",
    "clip_grad_norm_",
    "current_loss_scale",
    "loss_divisor",
    "optimizer_hook",
]

OPTIMIZER_HOOK = "optimizer"
ReduceGrads = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class GradClipConfig(Config):
    """``clip_grad_norm_`` arguments; the total norm is logged as ``grad_norm``."""

    max_norm: float = 35.0
    norm_type: float = 2.0

    def __post_init__(self) -> None:
        check_positive(self, "max_norm", "norm_type")


@dataclass(frozen=True)
class LossScaleConfig(Config):
    """fp16 loss scaling: static ``init_scale`` (mmcv's 512) or dynamic (GradScaler rules;
    torch's dynamic defaults are ``init_scale=65536.0``, growth 2, backoff 0.5, interval 2000)."""

    init_scale: float = 512.0
    dynamic: bool = False
    growth_factor: float = 2.0
    backoff_factor: float = 0.5
    growth_interval: int = 2000

    def __post_init__(self) -> None:
        check_positive(self, "init_scale", "growth_interval")
        check(self, "growth_factor", self.growth_factor > 1.0, "must be > 1")
        check(self, "backoff_factor", 0.0 < self.backoff_factor < 1.0, "must be in (0, 1)")


@dataclass(frozen=True)
class OptimizerHookConfig(Config):
    """Attributes:
    grad_clip: clip the global gradient norm (None: no clipping, no ``grad_norm`` output).
    cumulative_iters: micro-batches per update (mmcv's gradient accumulation).
    precision: "fp32"; "bf16" autocast; "fp16" autocast with loss scaling.
    loss_scale: fp16 only.
    """

    grad_clip: GradClipConfig | None = None
    cumulative_iters: int = 1
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    loss_scale: LossScaleConfig = field(default_factory=LossScaleConfig)

    def __post_init__(self) -> None:
        check_positive(self, "cumulative_iters")
        ok = self.precision in ("fp32", "bf16", "fp16")
        check(self, "precision", ok, f"must be 'fp32', 'bf16' or 'fp16', got {self.precision!r}")

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype for ``make_train_step(autocast_dtype=...)``."""
        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]


def current_loss_scale(state: TrainState) -> float | None:
    """The fp16 loss scale held in the optimizer hook's state (None without fp16).

    Pass it as ``make_train_step(loss_scale=current_loss_scale)``.
    """
    scaler = (state.hooks.get(OPTIMIZER_HOOK) or {}).get("scaler")
    return None if scaler is None else float(scaler["scale"])


def loss_divisor(iteration: int, total_iters: int, cumulative_iters: int) -> int:
    """mmcv's divisor: ``cumulative_iters``, or the size of the run's trailing remainder."""
    divisible = total_iters // cumulative_iters * cumulative_iters
    return cumulative_iters if iteration < divisible else total_iters - divisible


def clip_grad_norm_(grads: list[torch.Tensor], max_norm: float, norm_type: float) -> torch.Tensor:
    """Scale ``grads`` in place so their total norm is at most ``max_norm`` (as
    ``torch.nn.utils.clip_grad_norm_``); returns the total norm before clipping."""
    if not grads:
        return torch.zeros(())
    norms = torch._foreach_norm(grads, norm_type)
    total = torch.linalg.vector_norm(torch.stack(norms), norm_type)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    torch._foreach_mul_(grads, coef)
    return total


def _all_finite(grads: list[torch.Tensor]) -> bool:
    if not grads:
        return True
    return bool(torch.stack(torch._foreach_norm(grads, float("inf"))).isfinite().all())


def _next_scaler(scaler: dict[str, Any], finite: bool, cfg: LossScaleConfig) -> dict[str, Any]:
    """GradScaler's update rule; a static scale never changes."""
    if not cfg.dynamic:
        return scaler
    if not finite:
        return {"scale": scaler["scale"] * cfg.backoff_factor, "growth_tracker": 0}
    tracker = scaler["growth_tracker"] + 1
    if tracker == cfg.growth_interval:
        return {"scale": scaler["scale"] * cfg.growth_factor, "growth_tracker": 0}
    return {"scale": scaler["scale"], "growth_tracker": tracker}


def _accumulate(accum: dict | None, grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sum ``grads`` into ``accum`` in place (``accum`` takes ownership of new entries)."""
    if accum is None:
        return dict(grads)
    shared = [n for n in grads if n in accum]
    if shared:
        torch._foreach_add_([accum[n] for n in shared], [grads[n] for n in shared])
    for name in grads:
        if name not in accum:
            accum[name] = grads[name]
    return accum


def optimizer_hook(
    cfg: OptimizerHookConfig, optimizer: Optimizer, reduce_grads: ReduceGrads | None = None
) -> Hook:
    """The hook function over ``optimizer`` (see the module docstring). ``reduce_grads``
    (data parallel: the ranks' average) is applied to the accumulated gradients on the steps
    that update, before the fp16 check and clipping, so accumulation communicates once."""
    fp16 = cfg.precision == "fp16"

    def initial() -> dict[str, Any]:
        scaler = {"scale": cfg.loss_scale.init_scale, "growth_tracker": 0} if fp16 else None
        return {"accum": None, "scaler": scaler}

    def on_iter(event: Event) -> TrainState:
        state, outputs = event.state, event.outputs
        mine = dict(state.hooks.get(OPTIMIZER_HOOK) or initial())
        grads = dict(outputs["grads"])
        divisor = loss_divisor(state.iter, state.max_iters, cfg.cumulative_iters)
        factor = 1.0 / divisor
        if fp16:
            factor /= mine["scaler"]["scale"]
            outputs["loss_scale"] = mine["scaler"]["scale"]
        if factor != 1.0 and grads:
            torch._foreach_mul_(list(grads.values()), factor)
        accum = _accumulate(mine["accum"], grads)
        last = state.iter + 1 == state.max_iters
        if (state.iter + 1) % cfg.cumulative_iters != 0 and not last:
            return _with(state, {**mine, "accum": accum})
        mine["accum"] = None
        if reduce_grads is not None:
            accum = reduce_grads(accum)
        names = list(accum)
        if fp16:
            finite = _all_finite([accum[n] for n in names])
            mine["scaler"] = _next_scaler(mine["scaler"], finite, cfg.loss_scale)
            if not finite:
                return _with(state, mine)
        if cfg.grad_clip is not None:
            clip = cfg.grad_clip
            outputs["grad_norm"] = clip_grad_norm_(
                [accum[n] for n in names], clip.max_norm, clip.norm_type
            )
        params, opt_state = optimizer.update(
            accum, state.opt_state, state.params, state.lr, state.momentum
        )
        return replace(_with(state, mine), params=params, opt_state=opt_state)

    def fn(event: Event) -> TrainState | None:
        if event.stage is Stage.BEFORE_RUN and OPTIMIZER_HOOK not in event.state.hooks:
            return _with(event.state, initial())
        if event.stage is Stage.AFTER_TRAIN_ITER:
            return on_iter(event)
        return None

    return Hook(OPTIMIZER_HOOK, fn, int(Priority.ABOVE_NORMAL))


def _with(state: TrainState, mine: dict[str, Any]) -> TrainState:
    return replace(state, hooks={**state.hooks, OPTIMIZER_HOOK: mine})


@register(OptimizerHookConfig)
def build_optimizer_hook(
    cfg: OptimizerHookConfig, *, optimizer: Optimizer, reduce_grads: ReduceGrads | None = None
) -> Hook:
    """``build(OptimizerHookConfig(...), optimizer=opt)``."""
    return optimizer_hook(cfg, optimizer, reduce_grads)
