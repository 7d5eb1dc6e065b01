"""The optimizer hook and, before it, the NaN guard.

The NaN guard (priority 35) stops the run with an error naming the iteration and the loss term,
so a non-finite loss never reaches the weights (one device sync: all terms tested at once).

The optimizer hook (``after_train_iter``, ABOVE_NORMAL: after the schedules set ``state.hyper``):
accumulation, fp16 loss scaling, clipping, the gradient check, the update. Its state (``accum``,
``scaler``) is in ``state.hooks["optimizer"]``, so a resume continues an accumulation window and
the loss scale.

* Accumulation (mmcv's ``GradientCumulativeOptimizerHook``): grads are divided by
  ``cumulative_iters`` (the remainder's size at the end of the run); the update happens every
  ``cumulative_iters`` iterations and at the last one.
* fp16 (``torch.amp.GradScaler`` rules): grads are multiplied by ``1/scale``; a window with a
  non-finite gradient is skipped and the scale backs off; it grows after ``growth_interval``
  finite windows. ``dynamic=False`` is mmcv's static ``loss_scale=512.``.
* ``check_grads``: a finite loss can have infinite gradients; the total norm (one fused
  ``_foreach_norm``, which clipping needs anyway; logged as ``grad_norm``) must be finite or
  :class:`NonFiniteGradError` names the parameters, before any weight changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from detfn.config import Config, check, check_positive
from detfn.engine.combinators import any_of, compose, last, nth, only_at
from detfn.engine.events import Event, Hook, HookConfig, Priority, Stage, get_priority
from detfn.engine.optim import Optimizer
from detfn.engine.state import TrainState, with_hook_state
from detfn.registry import register

OPTIMIZER_HOOK = "optimizer"


class NonFiniteGradError(FloatingPointError):
    """A gradient became NaN or Inf while the loss was finite (at ``iteration``, in ``names``)."""

    def __init__(self, message: str, iteration: int, names: list[str]):
        super().__init__(message)
        self.iteration, self.names = iteration, names


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
    grad_clip: clip the global gradient norm (None: no clipping).
    cumulative_iters: micro-batches per update (mmcv's gradient accumulation).
    precision: "fp32"; "bf16" autocast; "fp16" autocast with loss scaling.
    loss_scale: fp16 only.
    check_grads: refuse an update with a non-finite gradient norm (see module docstring).
    """

    grad_clip: GradClipConfig | None = None
    cumulative_iters: int = 1
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    loss_scale: LossScaleConfig = field(default_factory=LossScaleConfig)
    check_grads: bool = True

    def __post_init__(self) -> None:
        check_positive(self, "cumulative_iters")
        ok = self.precision in ("fp32", "bf16", "fp16")
        check(self, "precision", ok, f"must be 'fp32', 'bf16' or 'fp16', got {self.precision!r}")

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]


def current_loss_scale(state: TrainState) -> float | None:
    """The fp16 loss scale in the optimizer hook's state (None without fp16), for
    ``make_train_step(loss_scale=current_loss_scale)``."""
    scaler = (state.hooks.get(OPTIMIZER_HOOK) or {}).get("scaler")
    return None if scaler is None else float(scaler["scale"])


def loss_divisor(iteration: int, total_iters: int, cumulative_iters: int) -> int:
    """mmcv's divisor: ``cumulative_iters``, or the size of the run's trailing remainder."""
    divisible = total_iters // cumulative_iters * cumulative_iters
    return cumulative_iters if iteration < divisible else total_iters - divisible


def total_norm(grads: list[torch.Tensor], norm_type: float = 2.0) -> torch.Tensor:
    return torch.nn.utils.get_total_norm(grads, norm_type) if grads else torch.zeros(())


def clip_grad_norm_(grads: list[torch.Tensor], max_norm: float, norm_type: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` over gradient tensors (not parameters): scales
    ``grads`` in place to a total norm of at most ``max_norm``; returns the norm before."""
    total = total_norm(grads, norm_type)
    if grads:
        torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total


def _next_scaler(scaler: dict[str, Any], finite: bool, cfg: LossScaleConfig) -> dict[str, Any]:
    """GradScaler's update rule; a static scale never changes."""
    if not cfg.dynamic:
        return scaler
    tracker = scaler["growth_tracker"] + 1 if finite else 0
    if tracker == cfg.growth_interval:
        return {"scale": scaler["scale"] * cfg.growth_factor, "growth_tracker": 0}
    factor = 1.0 if finite else cfg.backoff_factor
    return {"scale": scaler["scale"] * factor, "growth_tracker": tracker}


def _accumulate(accum: dict | None, grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sum ``grads`` into ``accum`` in place (``accum`` takes ownership of new entries)."""
    if accum is None:
        return dict(grads)
    shared = [n for n in grads if n in accum]
    if shared:
        torch._foreach_add_([accum[n] for n in shared], [grads[n] for n in shared])
    accum.update({n: g for n, g in grads.items() if n not in accum})
    return accum


@register(OptimizerHookConfig)
def optimizer_hook(
    cfg: OptimizerHookConfig, optimizer: Optimizer, reduce_grads: Callable | None = None
) -> Hook:
    """``reduce_grads`` (data parallel: the ranks' average) is applied to the accumulated grads on
    the steps that update, before the fp16 check and clipping: accumulation communicates once."""
    fp16 = cfg.precision == "fp16"
    update_due = any_of(nth(cfg.cumulative_iters, "iter"), last("iter"))  # the window's end

    def initial() -> dict[str, Any]:
        scaler = {"scale": cfg.loss_scale.init_scale, "growth_tracker": 0} if fp16 else None
        return {"accum": None, "scaler": scaler}

    def on_iter(event: Event) -> TrainState:
        state, outputs = event.state, event.outputs
        mine = dict(state.hooks.get(OPTIMIZER_HOOK) or initial())
        grads = dict(outputs.grads or {})
        factor = 1.0 / loss_divisor(state.iter, state.max_iters, cfg.cumulative_iters)
        if fp16:
            factor /= mine["scaler"]["scale"]
            outputs.loss_scale = mine["scaler"]["scale"]
        if factor != 1.0 and grads:
            torch._foreach_mul_(list(grads.values()), factor)
        accum = _accumulate(mine["accum"], grads)
        if not update_due(event):
            return with_hook_state(state, OPTIMIZER_HOOK, {**mine, "accum": accum})
        mine["accum"] = None
        if reduce_grads is not None:
            accum = reduce_grads(accum)
        tensors = list(accum.values())
        if fp16:
            finite = bool(torch.isfinite(total_norm(tensors, float("inf"))))
            mine["scaler"] = _next_scaler(mine["scaler"], finite, cfg.loss_scale)
            if not finite:
                return with_hook_state(state, OPTIMIZER_HOOK, mine)
        if cfg.grad_clip is not None:
            clip = cfg.grad_clip
            outputs.grad_norm = clip_grad_norm_(tensors, clip.max_norm, clip.norm_type)
        elif cfg.check_grads:
            outputs.grad_norm = total_norm(tensors)
        if cfg.check_grads and not bool(torch.isfinite(outputs.grad_norm)):  # one device sync
            bad = [n for n, g in accum.items() if not bool(torch.isfinite(g).all())]
            names = f"{len(bad)} parameters: {bad[:5]}{' ...' if len(bad) > 5 else ''}"
            where = f"at iteration {state.iter} (total norm {float(outputs.grad_norm)}) in {names}"
            refused = "the update is refused so no non-finite weights are saved"
            raise NonFiniteGradError(f"non-finite gradient {where}; {refused}", state.iter, bad)
        params, opt_state = optimizer.update(accum, state.opt_state, state.params, state.hyper)
        new = replace(state, params=params, opt_state=opt_state)
        return with_hook_state(new, OPTIMIZER_HOOK, mine)

    def start(event: Event) -> TrainState | None:  # a resumed state keeps its window and scale
        if OPTIMIZER_HOOK in event.state.hooks:
            return None
        return with_hook_state(event.state, OPTIMIZER_HOOK, initial())

    fn = compose(only_at(Stage.BEFORE_RUN, start), only_at(Stage.AFTER_TRAIN_ITER, on_iter))
    outputs = dict(reads=("grads",), writes=("grad_norm", "loss_scale"))
    return Hook(OPTIMIZER_HOOK, fn, int(Priority.ABOVE_NORMAL), **outputs)


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or Inf (at ``iteration``, ``epoch``; ``terms``: name -> value)."""

    def __init__(self, message: str, iteration: int, epoch: int, terms: dict[str, float]):
        super().__init__(message)
        self.iteration, self.epoch, self.terms = iteration, epoch, terms


@dataclass(frozen=True)
class NanGuardConfig(HookConfig):
    """Priority 35: before the optimizer step."""

    priority: int | str = 35


@register(NanGuardConfig)
def nan_guard(cfg: NanGuardConfig) -> Hook:
    def check_losses(event: Event) -> None:
        """Raise :class:`NonFiniteLossError` when the loss or a floating loss term is not finite."""
        state, outputs = event.state, event.outputs
        tensors = [(n, v) for n, v in outputs.losses.items() if isinstance(v, torch.Tensor)]
        terms = {"loss": outputs.loss, **{n: v for n, v in tensors if v.is_floating_point()}}
        stacked = torch.stack([t.detach().float().reshape(()) for t in terms.values()])
        if bool(stacked.isfinite().all()):
            return
        values = dict(zip(terms, stacked.tolist()))
        bad = [n for n, v in values.items() if not math.isfinite(v) and n != "loss"]
        culprit = bad[0] if bad else "loss"
        listing = ", ".join(f"{n}={v:.4g}" for n, v in values.items())
        where = f"at iteration {state.iter} (epoch {state.epoch}, inner iter {state.inner_iter})"
        message = f"non-finite loss term {culprit!r} {where}: {listing}"
        raise NonFiniteLossError(message, state.iter, state.epoch, values)

    fn = only_at(Stage.AFTER_TRAIN_ITER, check_losses)
    return Hook("nan_guard", fn, get_priority(cfg.priority), reads=("loss", "losses"))
