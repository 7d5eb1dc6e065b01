"""Sigmoid focal loss (RetinaNet), mmdet ``FocalLoss`` with ``use_sigmoid=True``.

References:
    Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017, https://arxiv.org/abs/1708.02002
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from detfn.config import Config, check_non_negative, check_unit_interval
from detfn.models.losses.base import Loss, bind_loss, check_loss_fields
from detfn.models.losses.cross_entropy import labels_to_one_hot
from detfn.models.losses.reduction import Reduction, weight_reduce_loss
from detfn.registry import register

__all__ = ["FocalLossConfig", "build_focal_loss", "sigmoid_focal_loss"]


def sigmoid_focal_loss(
    pred: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    *,
    reduction: Reduction = "mean",
    avg_factor: float | Tensor | None = None,
    gamma: float = 2.0,
    alpha: float = 0.25,
) -> Tensor:
    """``alpha_t * (1 - p_t) ** gamma * BCE(pred, target)`` element-wise, then weighted and reduced.

    Args:
        pred (Tensor[N, C]): logits, one sigmoid per class (no background logit).
        target: float 0/1 targets ``[N, C]``, or int class indices ``[N]`` where ``C`` means
            background (all-zero row).
        weight: element-wise ``[N, C]`` or per-anchor ``[N]`` weight.
        gamma: focusing exponent; 0 gives alpha-balanced BCE.
        alpha: weight of positives, ``1 - alpha`` of negatives.

    Returns:
        Tensor: ``[N, C]`` for ``reduction="none"``, else 0-d.
    """
    if pred.dim() == 2 and target.shape == pred.shape[:1] and not target.is_floating_point():
        target = labels_to_one_hot(target, pred.shape[1])
    if target.shape != pred.shape:
        raise ValueError(
            f"sigmoid_focal_loss takes a target of pred's shape {tuple(pred.shape)} "
            f"(or int labels [N] for pred [N, C]), got {tuple(target.shape)}"
        )
    target = target.to(pred.dtype)
    prob = pred.sigmoid()
    one_minus_pt = prob * (1 - target) + (1 - prob) * target  # 1 - p_t
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    bce = F.binary_cross_entropy_with_logits(pred, target, reduction="none")
    loss = alpha_t * one_minus_pt.pow(gamma) * bce
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


@dataclass(frozen=True)
class FocalLossConfig(Config):
    """mmdet ``FocalLoss`` (sigmoid only): ``gamma=2.0``, ``alpha=0.25`` as in RetinaNet."""

    gamma: float = 2.0
    alpha: float = 0.25
    loss_weight: float = 1.0
    reduction: Reduction = "mean"

    def __post_init__(self) -> None:
        check_non_negative(self, "gamma")
        check_unit_interval(self, "alpha")
        check_loss_fields(self)


@register(FocalLossConfig)
def build_focal_loss(cfg: FocalLossConfig, **context: object) -> Loss:
    """``Loss`` calling :func:`sigmoid_focal_loss` with the config's gamma and alpha."""
    del context
    return bind_loss(sigmoid_focal_loss, cfg, gamma=cfg.gamma, alpha=cfg.alpha)
