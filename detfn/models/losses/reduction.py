"""Element-wise weighting and reduction shared by every detfn loss (mmdet's ``weight_reduce_loss``).

A loss function first computes an element-wise loss tensor, then calls :func:`weight_reduce_loss`:

* ``weight`` multiplies it element-wise. A weight with the loss's leading shape (``[N]`` for a
  loss ``[N, 4]`` or ``[N, C]``) is a per-row weight and is broadcast along the last axis; any other
  weight must broadcast to the loss's shape without enlarging it.
* ``reduction`` is ``"none"`` (return the weighted tensor), ``"sum"`` or ``"mean"``.
* ``avg_factor`` replaces the element count of ``"mean"``: ``sum / avg_factor``. Detection heads
  pass the number of sampled or positive anchors so the loss depends neither on padding nor on
  how many elements each anchor has. With ``"sum"`` it is an error, as in mmdet.

An empty loss reduces to a zero that still depends on the prediction (``sum() * 0``), so a batch
without any sampled box gives a zero loss and zero gradients instead of NaN or a detached tensor.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

__all__ = ["AVG_FACTOR_EPS", "REDUCTIONS", "Reduction", "check_reduction", "weight_reduce_loss"]

Reduction = Literal["none", "mean", "sum"]
REDUCTIONS: tuple[str, ...] = get_args(Reduction)

# mmdet adds float32's machine epsilon to avg_factor, so avg_factor = 0 (no positives) gives a
# finite 0 / eps = 0 instead of 0 / 0.
AVG_FACTOR_EPS = float(torch.finfo(torch.float32).eps)


def check_reduction(reduction: str) -> Reduction:
    """``reduction`` itself if it is ``"none"``, ``"mean"`` or ``"sum"``; else ``ValueError``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"loss reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction  # type: ignore[return-value]


def broadcast_weight(weight: Tensor, loss: Tensor) -> Tensor:
    """``weight`` shaped to multiply ``loss`` element-wise, in the loss's dtype.

    Args:
        weight (Tensor): either ``loss.shape[:-1]`` (one weight per row, e.g. per box ``[N]`` for a
            loss ``[N, 4]``) or any shape that broadcasts to ``loss.shape`` without enlarging it.
        loss (Tensor): the element-wise loss.

    Raises:
        ValueError: naming both shapes when they do not fit.
    """
    if loss.dim() >= 1 and weight.dim() == loss.dim() - 1 and weight.shape == loss.shape[:-1]:
        weight = weight.unsqueeze(-1)  # [..., 1]: one weight per row
    try:
        fits = torch.broadcast_shapes(weight.shape, loss.shape) == loss.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"loss weight of shape {tuple(weight.shape)} does not fit a loss of shape "
            f"{tuple(loss.shape)}: give one weight per element or one per row "
            f"{tuple(loss.shape[:-1])}"
        )
    return weight.to(loss.dtype)


def weight_reduce_loss(
    loss: Tensor,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: float | Tensor | None = None,
) -> Tensor:
    """Weight an element-wise loss, then reduce it (see the module docstring for the rules).

    Args:
        loss (Tensor): element-wise loss, any shape.
        weight (Tensor | None): element-wise or per-row weight.
        reduction: ``"none"`` returns ``loss.shape``; ``"mean"`` and ``"sum"`` a 0-d tensor.
        avg_factor (float | Tensor | None): divisor of the sum for ``"mean"``; unused by "none".

    Returns:
        Tensor: the weighted loss, reduced as asked.
    """
    check_reduction(reduction)
    if weight is not None:
        loss = loss * broadcast_weight(weight, loss)
    if reduction == "none":
        return loss
    if avg_factor is not None:
        if reduction == "sum":
            raise ValueError(
                'avg_factor cannot be used with reduction="sum"; use "mean" (sum / avg_factor)'
            )
        if isinstance(avg_factor, (int, float)) and avg_factor < 0:
            raise ValueError(f"avg_factor must be >= 0, got {avg_factor!r}")
        return loss.sum() / (avg_factor + AVG_FACTOR_EPS)
    if reduction == "sum":
        return loss.sum()
    if loss.numel() == 0:
        return loss.sum() * 0.0  # the mean of nothing: 0 with a gradient path, not NaN
    return loss.mean()
