"""NaN / Inf guard: stop the run with an error naming the iteration and the loss term.

It runs on ``after_train_iter`` at priority 35, before the optimizer hook (40), so a non-finite
loss never reaches the weights. One device sync per iteration: all terms are stacked and tested
at once; only on failure are they inspected one by one for the message.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from detfn.config import Config
from detfn.engine.events import Event, Hook, Stage
from detfn.engine.priority import get_priority
from detfn.engine.state import TrainState
from detfn.registry import register

__all__ = ["NAN_GUARD_HOOK", "NanGuardConfig", "NonFiniteLossError", "build_nan_guard", "nan_guard"]

NAN_GUARD_HOOK = "nan_guard"


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or Inf. ``iteration``, ``epoch`` and ``terms`` (name -> value)
    say where; the caller decides what to do (library code never exits the process)."""

    def __init__(self, message: str, iteration: int, epoch: int, terms: dict[str, float]):
        super().__init__(message)
        self.iteration = iteration
        self.epoch = epoch
        self.terms = terms


@dataclass(frozen=True)
class NanGuardConfig(Config):
    """``check_grads`` also tests the gradients (one more reduction per iteration)."""

    check_grads: bool = False
    priority: int | str = 35

    def __post_init__(self) -> None:
        get_priority(self.priority)


def _values(outputs) -> dict[str, torch.Tensor]:
    terms = {"loss": outputs["loss"]}
    for name, value in (outputs.get("losses") or {}).items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            terms[name] = value
    return terms


def _check_grads(state: TrainState, grads) -> None:
    names = list(grads)
    if not names:
        return
    maxes = torch.stack(torch._foreach_norm([grads[n] for n in names], float("inf")))
    if bool(maxes.isfinite().all()):
        return
    bad = [n for n, m in zip(names, maxes.tolist()) if not torch.isfinite(torch.tensor(m))]
    raise NonFiniteLossError(
        f"non-finite gradient at iteration {state.iter} (epoch {state.epoch}): "
        f"parameters {bad[:5]}{' ...' if len(bad) > 5 else ''}",
        state.iter,
        state.epoch,
        {},
    )


def nan_guard(cfg: NanGuardConfig) -> Hook:
    """The guard hook (see the module docstring)."""

    def fn(event: Event) -> None:
        if event.stage is not Stage.AFTER_TRAIN_ITER:
            return None
        state = event.state
        terms = _values(event.outputs)
        stacked = torch.stack([t.detach().float().reshape(()) for t in terms.values()])
        if not bool(stacked.isfinite().all()):
            values = dict(zip(terms, stacked.tolist()))
            bad = [n for n, v in values.items() if not torch.isfinite(torch.tensor(v))]
            culprit = next((n for n in bad if n != "loss"), "loss")
            listing = ", ".join(f"{n}={v:.4g}" for n, v in values.items())
            raise NonFiniteLossError(
                f"non-finite loss term {culprit!r} at iteration {state.iter} "
                f"(epoch {state.epoch}, inner iter {state.inner_iter}): {listing}",
                state.iter,
                state.epoch,
                values,
            )
        if cfg.check_grads:
            _check_grads(state, event.outputs.get("grads") or {})
        return None

    return Hook(NAN_GUARD_HOOK, fn, get_priority(cfg.priority))


@register(NanGuardConfig)
def build_nan_guard(cfg: NanGuardConfig) -> Hook:
    """``build(NanGuardConfig())``."""
    return nan_guard(cfg)
