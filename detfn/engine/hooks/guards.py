"""NaN / Inf guard: stop the run with an error naming the iteration and the loss term, at
priority 35, before the optimizer hook (40), so a non-finite loss never reaches the weights. One
device sync per iteration: all terms are stacked and tested at once. (Non-finite gradients of a
finite loss are the optimizer hook's ``check_grads``.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from detfn.engine.combinators import only_at
from detfn.engine.events import Event, Hook, HookConfig, Stage, get_priority
from detfn.registry import register


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or Inf (at ``iteration``, ``epoch``; ``terms``: name -> value)."""

    def __init__(self, message: str, iteration: int, epoch: int, terms: dict[str, float]):
        super().__init__(message)
        self.iteration = iteration
        self.epoch = epoch
        self.terms = terms


@dataclass(frozen=True)
class NanGuardConfig(HookConfig):
    """Priority 35: before the optimizer step."""

    priority: int | str = 35


def check_losses(event: Event) -> None:
    """Raise :class:`NonFiniteLossError` when the loss or a floating loss term is not finite."""
    state, outputs = event.state, event.outputs
    terms = {"loss": outputs.loss}
    for name, value in outputs.losses.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            terms[name] = value
    stacked = torch.stack([t.detach().float().reshape(()) for t in terms.values()])
    if bool(stacked.isfinite().all()):
        return
    values = dict(zip(terms, stacked.tolist()))
    bad = [n for n, v in values.items() if not math.isfinite(v) and n != "loss"]
    culprit = bad[0] if bad else "loss"
    listing = ", ".join(f"{n}={v:.4g}" for n, v in values.items())
    raise NonFiniteLossError(
        f"non-finite loss term {culprit!r} at iteration {state.iter} "
        f"(epoch {state.epoch}, inner iter {state.inner_iter}): {listing}",
        *(state.iter, state.epoch, values),
    )


@register(NanGuardConfig)
def nan_guard(cfg: NanGuardConfig) -> Hook:
    fn = only_at(Stage.AFTER_TRAIN_ITER, check_losses)
    return Hook("nan_guard", fn, get_priority(cfg.priority), reads=("loss", "losses"))
