"""Losses: pure functions over tensors plus a config and builder for each (mmdet 2.x semantics).

``build(cfg)`` returns a :class:`Loss`, called as
``loss(pred, target, weight=None, avg_factor=None, reduction_override=None) -> Tensor``.
Importing this package registers every loss config.
"""

from detfn.models.losses.base import Loss
from detfn.models.losses.cross_entropy import (
    CrossEntropyLossConfig,
    binary_cross_entropy,
    cross_entropy,
    labels_to_one_hot,
)
from detfn.models.losses.focal import FocalLossConfig, sigmoid_focal_loss
from detfn.models.losses.giou import GIoULossConfig, aligned_giou, giou_loss
from detfn.models.losses.iou import IoULossConfig, aligned_iou, iou_loss
from detfn.models.losses.l1 import L1LossConfig, SmoothL1LossConfig, l1_loss, smooth_l1_loss
from detfn.models.losses.reduction import Reduction, weight_reduce_loss

__all__ = [
    "CrossEntropyLossConfig",
    "FocalLossConfig",
    "GIoULossConfig",
    "IoULossConfig",
    "L1LossConfig",
    "Loss",
    "Reduction",
    "SmoothL1LossConfig",
    "aligned_giou",
    "aligned_iou",
    "binary_cross_entropy",
    "cross_entropy",
    "giou_loss",
    "iou_loss",
    "l1_loss",
    "labels_to_one_hot",
    "sigmoid_focal_loss",
    "smooth_l1_loss",
    "weight_reduce_loss",
]
