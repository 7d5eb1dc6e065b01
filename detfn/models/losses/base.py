"""The object every loss builder returns: a pure loss function bound to its config.

Heads call all losses the same way, as mmdet's loss modules are called::

    loss_cls = build(CrossEntropyLossConfig(use_sigmoid=True))
    value = loss_cls(pred, target, weight, avg_factor=num_samples)

``Loss`` holds no parameters and no state; it is not an ``nn.Module``, so it never appears in a
model's parameter or buffer dicts and works unchanged under ``torch.func.functional_call``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from detfn.config import check, check_non_negative
from detfn.models.losses.reduction import REDUCTIONS, Reduction, check_reduction

__all__ = ["Loss", "LossFunction", "bind_loss", "check_loss_fields"]

# fn(pred, target, weight, *, reduction, avg_factor) -> Tensor, options already bound.
LossFunction = Callable[..., Tensor]


@dataclass(frozen=True)
class Loss:
    """A configured loss: ``loss_weight * fn(pred, target, weight, reduction, avg_factor)``.

    Attributes:
        fn: the pure loss function with its options (gamma, beta, ...) bound.
        loss_weight: multiplier of the result (mmdet's ``loss_weight``).
        reduction: the default reduction; a call's ``reduction_override`` replaces it.
        cfg: the config it was built from, so callers can read e.g. ``loss.cfg.use_sigmoid``.
    """

    fn: LossFunction
    loss_weight: float
    reduction: Reduction
    cfg: Any

    def __call__(
        self,
        pred: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
        reduction_override: Reduction | None = None,
    ) -> Tensor:
        """Weighted, reduced loss of ``pred`` against ``target`` (shapes: see the loss function)."""
        reduction = self.reduction if reduction_override is None else reduction_override
        check_reduction(reduction)
        value = self.fn(pred, target, weight, reduction=reduction, avg_factor=avg_factor)
        return self.loss_weight * value


def check_loss_fields(cfg: Any) -> None:
    """Check the two fields every loss config has: ``loss_weight >= 0`` and a known ``reduction``.

    Called from the ``__post_init__`` of every loss config.
    """
    check_non_negative(cfg, "loss_weight")
    check(
        cfg,
        "reduction",
        cfg.reduction in REDUCTIONS,
        f"must be one of {REDUCTIONS}, got {cfg.reduction!r}",
    )


def bind_loss(fn: LossFunction, cfg: Any, **options: Any) -> Loss:
    """The :class:`Loss` of ``cfg``: ``fn`` with ``options`` bound (``fn`` itself when none)."""
    bound = functools.partial(fn, **options) if options else fn
    return Loss(bound, cfg.loss_weight, cfg.reduction, cfg)
