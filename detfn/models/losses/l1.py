"""L1 and smooth L1 losses for box regression (mmdet ``L1Loss`` and ``SmoothL1Loss``).

Both compare ``pred`` and ``target`` element-wise (usually encoded deltas ``[N, 4]``); a per-box
weight ``[N]`` is broadcast over the four coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from detfn.config import Config, check_positive
from detfn.models.losses.base import Loss, bind_loss, check_loss_fields
from detfn.models.losses.reduction import Reduction, weight_reduce_loss
from detfn.registry import register

__all__ = [
    "L1LossConfig",
    "SmoothL1LossConfig",
    "build_l1_loss",
    "build_smooth_l1_loss",
    "l1_loss",
    "smooth_l1_loss",
]


def l1_loss(
    pred: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    *,
    reduction: Reduction = "mean",
    avg_factor: float | Tensor | None = None,
) -> Tensor:
    """``|pred - target|`` element-wise, then weighted and reduced.

    Args:
        pred (Tensor[..., K]): predictions, e.g. box deltas ``[N, 4]``.
        target (Tensor[..., K]): same shape as ``pred``.
        weight: element-wise ``[..., K]`` or per-row ``[...]`` weight.
    """
    _check_same_shape("l1_loss", pred, target)
    loss = (pred - target).abs()
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


def smooth_l1_loss(
    pred: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    *,
    reduction: Reduction = "mean",
    avg_factor: float | Tensor | None = None,
    beta: float = 1.0,
) -> Tensor:
    """Huber-style loss of ``d = |pred - target|``: ``0.5 * d**2 / beta`` below beta, else
    ``d - beta / 2``.

    The two branches meet with equal value and slope at ``d = beta``. Shapes as :func:`l1_loss`.
    """
    if beta <= 0:
        raise ValueError(f"smooth_l1_loss beta must be > 0, got {beta!r}")
    _check_same_shape("smooth_l1_loss", pred, target)
    diff = (pred - target).abs()
    loss = torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


def _check_same_shape(name: str, pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"{name} takes pred and target of the same shape, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )


@dataclass(frozen=True)
class L1LossConfig(Config):
    """mmdet ``L1Loss``: the box loss of Faster R-CNN's RPN and R-CNN heads."""

    loss_weight: float = 1.0
    reduction: Reduction = "mean"

    def __post_init__(self) -> None:
        check_loss_fields(self)


@dataclass(frozen=True)
class SmoothL1LossConfig(Config):
    """mmdet ``SmoothL1Loss``; ``beta=1/9`` was the RPN value of early Faster R-CNN configs."""

    beta: float = 1.0
    loss_weight: float = 1.0
    reduction: Reduction = "mean"

    def __post_init__(self) -> None:
        check_positive(self, "beta")
        check_loss_fields(self)


@register(L1LossConfig)
def build_l1_loss(cfg: L1LossConfig, **context: object) -> Loss:
    """``Loss`` calling :func:`l1_loss`."""
    del context
    return bind_loss(l1_loss, cfg)


@register(SmoothL1LossConfig)
def build_smooth_l1_loss(cfg: SmoothL1LossConfig, **context: object) -> Loss:
    """``Loss`` calling :func:`smooth_l1_loss` with the config's beta."""
    del context
    return bind_loss(smooth_l1_loss, cfg, beta=cfg.beta)
