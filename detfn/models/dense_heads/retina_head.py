"""RetinaNet head (mmdetection 2.x ``RetinaHead``; Lin et al., "Focal Loss for Dense Object
Detection", ICCV 2017, https://arxiv.org/abs/1708.02002).

Two towers of ``stacked_convs`` 3x3 conv + ReLU (with bias, no norm), one for classification and
one for regression, shared by every level; then ``retina_cls`` (3x3 -> A * C sigmoid logits) and
``retina_reg`` (3x3 -> A * 4 deltas). Every conv starts from N(0, 0.01) with zero bias, except
the classifier's bias: ``-log((1 - p) / p)`` with prior ``p = 0.01``, so that at the start every
anchor predicts background with probability 0.99 and the focal loss of the many easy negatives
does not swamp the first iterations.

Defaults are ``retinanet_r50_fpn_1x_coco``: octave anchors (base scale 4, 3 scales per octave,
ratios 0.5/1/2, strides 8-128), MaxIoU 0.5 / 0.4 / min 0 with low-quality matches, no sampling
(PseudoSampler), focal loss (gamma 2, alpha 0.25), L1 on the deltas, test top 1000 per level,
score > 0.05, NMS 0.5, 100 per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor, nn

from detfn.config import check_positive, check_unit_interval
from detfn.models.anchors import AnchorGeneratorConfig
from detfn.models.assigners import MaxIoUAssignerConfig
from detfn.models.dense_heads.anchor_head import AnchorHead, AnchorHeadConfig
from detfn.registry import register

__all__ = ["RetinaHead", "RetinaHeadConfig", "bias_from_prior", "build_retina_head"]


def _octave_anchors() -> AnchorGeneratorConfig:
    return AnchorGeneratorConfig(
        strides=(8, 16, 32, 64, 128),
        ratios=(0.5, 1.0, 2.0),
        scales=None,
        octave_base_scale=4.0,
        scales_per_octave=3,
    )


def _retina_assigner() -> MaxIoUAssignerConfig:
    return MaxIoUAssignerConfig(
        pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0, match_low_quality=True
    )


@dataclass(frozen=True)
class RetinaHeadConfig(AnchorHeadConfig):
    """mmdetection's ``RetinaHead`` of ``retinanet_r50_fpn_1x_coco`` (train and test cfg included).

    Attributes:
        stacked_convs: 3x3 convs in each tower.
        prior_prob: initial foreground probability of the classifier (its bias).
    """

    anchor_generator: AnchorGeneratorConfig = field(default_factory=_octave_anchors)
    assigner: MaxIoUAssignerConfig = field(default_factory=_retina_assigner)
    stacked_convs: int = 4
    prior_prob: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "stacked_convs")
        check_unit_interval(self, "prior_prob")


def bias_from_prior(prior_prob: float) -> float:
    """The logit whose sigmoid is ``prior_prob``: ``-log((1 - p) / p)`` (-4.595 for 0.01)."""
    return -math.log((1 - prior_prob) / prior_prob)


class RetinaHead(AnchorHead):
    """Towers ``cls_convs`` / ``reg_convs`` and predictors ``retina_cls`` / ``retina_reg``
    (mmdetection's parameter names)."""

    def __init__(self, cfg: RetinaHeadConfig, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.build_parts(cfg, num_classes)
        width = cfg.feat_channels

        def tower() -> nn.ModuleList:
            return nn.ModuleList(
                nn.Conv2d(in_channels if i == 0 else width, width, 3, padding=1)
                for i in range(cfg.stacked_convs)
            )

        self.cls_convs = tower()
        self.reg_convs = tower()
        self.retina_cls = nn.Conv2d(width, self.num_anchors * num_classes, 3, padding=1)
        self.retina_reg = nn.Conv2d(width, self.num_anchors * 4, 3, padding=1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)
        nn.init.constant_(self.retina_cls.bias, bias_from_prior(cfg.prior_prob))

    def forward_level(self, feat: Tensor) -> tuple[Tensor, Tensor]:
        """``(cls_score [B, A * C, H, W], bbox_pred [B, A * 4, H, W])`` of one level."""
        cls_feat, reg_feat = feat, feat
        for conv in self.cls_convs:
            cls_feat = F.relu(conv(cls_feat))
        for conv in self.reg_convs:
            reg_feat = F.relu(conv(reg_feat))
        return self.retina_cls(cls_feat), self.retina_reg(reg_feat)


@register(RetinaHeadConfig)
def build_retina_head(
    cfg: RetinaHeadConfig, *, in_channels: int, num_classes: int, **context
) -> RetinaHead:
    """Build a :class:`RetinaHead` on the neck's ``in_channels`` for ``num_classes`` classes."""
    del context
    return RetinaHead(cfg, in_channels, num_classes)
