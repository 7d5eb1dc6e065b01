"""IoU loss for box regression in pixel space (mmdet ``IoULoss``, used by FCOS).

``mode="log"`` (FCOS's default, from UnitBox) is ``-log(IoU)``; ``"linear"`` is ``1 - IoU`` and
``"square"`` is ``1 - IoU ** 2``. The IoU is clamped to ``eps`` first, so a prediction that misses
its target entirely gives a finite ``-log(eps)`` rather than ``inf``.

References:
    Yu et al., "UnitBox: An Advanced Object Detection Network", ACM MM 2016,
    https://arxiv.org/abs/1608.01471
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from detfn.boxes import EPS
from detfn.config import Config, check, check_positive
from detfn.models.losses.base import Loss, bind_loss, check_loss_fields
from detfn.models.losses.reduction import Reduction, weight_reduce_loss
from detfn.registry import register

__all__ = [
    "IoULossConfig",
    "IoUMode",
    "aligned_inter_union",
    "aligned_iou",
    "box_loss_weight",
    "build_iou_loss",
    "iou_loss",
]

IoUMode = Literal["linear", "square", "log"]


def aligned_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of each box with the box at the same index (not all pairs).

    The union is clamped to ``detfn.boxes.EPS`` (mmdetection's ``bbox_overlaps`` does the same),
    so two empty boxes give 0, not 0 / 0.

    Args:
        boxes1 (Tensor[..., 4]): xyxy.
        boxes2 (Tensor[..., 4]): xyxy, same shape.

    Returns:
        Tensor[...]: IoU in ``[0, 1]``.
    """
    inter, union = aligned_inter_union(boxes1, boxes2)
    return inter / union.clamp(min=EPS)


def aligned_inter_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Intersection and union areas of each box with the box at the same index.

    The union is not clamped: IoU and GIoU clamp it to their own ``eps``.

    Args:
        boxes1 (Tensor[..., 4]): xyxy.
        boxes2 (Tensor[..., 4]): xyxy, same shape.

    Returns:
        inter (Tensor[...]) and union (Tensor[...]).
    """
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])
    inter_wh = (
        torch.minimum(boxes1[..., 2:], boxes2[..., 2:])
        - torch.maximum(boxes1[..., :2], boxes2[..., :2])
    ).clamp(min=0)  # [..., 2]
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    return inter, area1 + area2 - inter


def box_loss_weight(
    loss_name: str, pred: Tensor, target: Tensor, weight: Tensor | None
) -> Tensor | None:
    """Check that ``pred`` and ``target`` are boxes ``[N, 4]`` of one shape, and make ``weight``
    one per box: a ``[N, 4]`` weight is averaged over the coordinates (as mmdet does).

    Args:
        loss_name: the loss function, named in the error.
        pred (Tensor[N, 4]), target (Tensor[N, 4]): xyxy boxes.
        weight: ``None``, per-box ``[N]`` or per-coordinate ``[N, 4]``.

    Returns:
        ``None`` or Tensor[N].
    """
    if pred.shape != target.shape or pred.shape[-1:] != (4,):
        raise ValueError(
            f"{loss_name} takes pred and target boxes [N, 4] of the same shape, got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if weight is not None and weight.shape == pred.shape:
        weight = weight.mean(dim=-1)  # [N]: one weight per box
    return weight


def iou_loss(
    pred: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    *,
    reduction: Reduction = "mean",
    avg_factor: float | Tensor | None = None,
    mode: IoUMode = "log",
    eps: float = 1e-6,
) -> Tensor:
    """IoU loss per box, then weighted and reduced.

    Args:
        pred (Tensor[N, 4]): decoded boxes, xyxy pixels.
        target (Tensor[N, 4]): xyxy pixels.
        weight: per-box ``[N]``, or ``[N, 4]`` averaged over the coordinates (as mmdet does).
        mode: ``"log"``, ``"linear"`` or ``"square"`` (see the module docstring).
        eps: lower clamp of the IoU.

    Returns:
        Tensor: ``[N]`` for ``reduction="none"``, else 0-d.
    """
    weight = box_loss_weight("iou_loss", pred, target, weight)
    ious = aligned_iou(pred, target).clamp(min=eps)
    if mode == "linear":
        loss = 1 - ious
    elif mode == "square":
        loss = 1 - ious**2
    elif mode == "log":
        loss = -ious.log()
    else:
        raise ValueError(f"iou_loss mode must be 'linear', 'square' or 'log', got {mode!r}")
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


@dataclass(frozen=True)
class IoULossConfig(Config):
    """mmdet ``IoULoss``: ``mode="log"``, ``eps=1e-6`` (FCOS's ``loss_bbox``)."""

    mode: IoUMode = "log"
    eps: float = 1e-6
    loss_weight: float = 1.0
    reduction: Reduction = "mean"

    def __post_init__(self) -> None:
        check_positive(self, "eps")
        check_loss_fields(self)
        check(
            self,
            "mode",
            self.mode in ("linear", "square", "log"),
            f"must be 'linear', 'square' or 'log', got {self.mode!r}",
        )


@register(IoULossConfig)
def build_iou_loss(cfg: IoULossConfig, **context: object) -> Loss:
    """``Loss`` calling :func:`iou_loss` with the config's mode and eps."""
    del context
    return bind_loss(iou_loss, cfg, mode=cfg.mode, eps=cfg.eps)
