"""Sigmoid focal loss (RetinaNet), mmdet ``FocalLoss`` with ``use_sigmoid=True``.

References:
    Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017, https://arxiv.org/abs/1708.02002
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from detfn.config import Config, check_non_negative, check_unit_interval
from detfn.models.losses.base import Loss, bind_loss, check_loss_fields
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
        return _focal_loss_of_labels(pred, target, weight, reduction, avg_factor, gamma, alpha)
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


def _focal_loss_of_labels(
    pred: Tensor,
    labels: Tensor,
    weight: Tensor | None,
    reduction: Reduction,
    avg_factor: float | Tensor | None,
    gamma: float,
    alpha: float,
) -> Tensor:
    """:func:`sigmoid_focal_loss` of int labels (Tensor[N], ``C`` or negative: background) for
    logits Tensor[N, C]: the same numbers, bit for bit, in fewer passes over ``[N, C]``.

    With 0/1 targets, ``p (1 - t) + (1 - p) t`` is exactly ``p`` or ``1 - p`` (a product by 0 or
    1 and a sum with 0 round nothing), and so is ``alpha_t``; ``torch.where`` picks them
    directly instead of four products and two sums (forward) and their gradients (backward).
    RetinaNet evaluates this over every (anchor, class) pair of the batch: [36828, 80] per
    step at 2 x 256x384, where forward and backward take about 0.7x the one-hot formula's time.
    """
    positive = labels.unsqueeze(-1) == torch.arange(pred.shape[1], device=labels.device)
    target = positive.to(pred.dtype)  # [N, C] one-hot, all-zero rows for background
    prob = pred.sigmoid()
    one_minus_pt = torch.where(positive, 1 - prob, prob)  # 1 - p_t
    alpha_t = torch.where(positive, pred.new_tensor(alpha), pred.new_tensor(1 - alpha))
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
