"""Generalized IoU loss for box regression in pixel space (mmdet ``GIoULoss``).

References:
    Rezatofighi et al., "Generalized Intersection over Union", CVPR 2019,
    https://arxiv.org/abs/1902.09630
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from detfn.config import Config, check_positive
from detfn.models.losses.base import Loss, bind_loss, check_loss_fields
from detfn.models.losses.iou import aligned_inter_union, box_loss_weight
from detfn.models.losses.reduction import Reduction, weight_reduce_loss
from detfn.registry import register

__all__ = ["GIoULossConfig", "aligned_giou", "build_giou_loss", "giou_loss"]


def aligned_giou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-6) -> Tensor:
    """GIoU of each box with the box at the same index (not all pairs).

    Union and enclosing area are clamped to ``eps`` (mmdet's convention), so degenerate boxes give a
    finite value.

    Args:
        boxes1 (Tensor[..., 4]): xyxy.
        boxes2 (Tensor[..., 4]): xyxy, same shape.

    Returns:
        Tensor[...]: GIoU in ``[-1, 1]``.
    """
    inter, union = aligned_inter_union(boxes1, boxes2)
    union = union.clamp(min=eps)
    hull_wh = (
        torch.maximum(boxes1[..., 2:], boxes2[..., 2:])
        - torch.minimum(boxes1[..., :2], boxes2[..., :2])
    ).clamp(min=0)  # [..., 2]
    hull = (hull_wh[..., 0] * hull_wh[..., 1]).clamp(min=eps)
    return inter / union - (hull - union) / hull


def giou_loss(
    pred: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    *,
    reduction: Reduction = "mean",
    avg_factor: float | Tensor | None = None,
    eps: float = 1e-6,
) -> Tensor:
    """``1 - GIoU(pred, target)`` per box, then weighted and reduced.

    Args:
        pred (Tensor[N, 4]): decoded boxes, xyxy pixels.
        target (Tensor[N, 4]): xyxy pixels.
        weight: per-box ``[N]``, or ``[N, 4]`` averaged over the coordinates (as mmdet does).

    Returns:
        Tensor: ``[N]`` for ``reduction="none"``, else 0-d.
    """
    weight = box_loss_weight("giou_loss", pred, target, weight)
    loss = 1 - aligned_giou(pred, target, eps)
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


@dataclass(frozen=True)
class GIoULossConfig(Config):
    """mmdet ``GIoULoss`` (``eps=1e-6``); the head must decode boxes before calling it."""

    eps: float = 1e-6
    loss_weight: float = 1.0
    reduction: Reduction = "mean"

    def __post_init__(self) -> None:
        check_positive(self, "eps")
        check_loss_fields(self)


@register(GIoULossConfig)
def build_giou_loss(cfg: GIoULossConfig, **context: object) -> Loss:
    """``Loss`` calling :func:`giou_loss` with the config's eps."""
    del context
    return bind_loss(giou_loss, cfg, eps=cfg.eps)
