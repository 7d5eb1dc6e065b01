"""RetinaNet head (mmdetection 2.x ``RetinaHead``; Lin et al., "Focal Loss for Dense Object
Detection", ICCV 2017, https://arxiv.org/abs/1708.02002).

Two towers of ``stacked_convs`` 3x3 conv + ReLU, one for classification and one for regression,
shared by every level (with bias and no norm by default; ``norm="GN"`` puts GroupNorm(32) after
each conv and drops its bias, as mmdetection's ``norm_cfg`` does: what a from-scratch RetinaNet
needs, see ``retinanet_bccd_preset``); then ``retina_cls`` (3x3 -> A * C sigmoid logits) and
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

from dataclasses import dataclass, field

from torch import Tensor

from detfn.config import check, check_positive, check_unit_interval
from detfn.models.anchors import AnchorGeneratorConfig
from detfn.models.assigners import MaxIoUAssignerConfig
from detfn.models.dense_heads.anchor_head import AnchorHead, AnchorHeadConfig
from detfn.models.dense_heads.towers import HeadNorm, conv_tower, init_head_convs_
from detfn.ops.winograd import Conv3x3
from detfn.registry import register

__all__ = ["RetinaHead", "RetinaHeadConfig", "build_retina_head"]


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
        norm: the towers' norm, ``"none"`` (mmdetection's RetinaHead default) or ``"GN"``
            (GroupNorm(32), conv without bias; needs ``feat_channels`` divisible by 32).
    """

    anchor_generator: AnchorGeneratorConfig = field(default_factory=_octave_anchors)
    assigner: MaxIoUAssignerConfig = field(default_factory=_retina_assigner)
    stacked_convs: int = 4
    prior_prob: float = 0.01
    norm: HeadNorm = "none"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "stacked_convs")
        check_unit_interval(self, "prior_prob")
        check(self, "norm", self.norm in ("GN", "none"), f"must be 'GN' or 'none': {self.norm!r}")
        if self.norm == "GN":
            check(self, "feat_channels", self.feat_channels % 32 == 0, "GN needs a multiple of 32")


class RetinaHead(AnchorHead):
    """Towers ``cls_convs`` / ``reg_convs`` (blocks ``cls_convs.0.conv`` / ``.gn``) and predictors
    ``retina_cls`` / ``retina_reg``: mmdetection's parameter names, so its checkpoints map one to
    one."""

    def __init__(self, cfg: RetinaHeadConfig, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.build_parts(cfg, num_classes)
        width = cfg.feat_channels
        self.cls_convs = conv_tower(in_channels, width, cfg.stacked_convs, cfg.norm, None)
        self.reg_convs = conv_tower(in_channels, width, cfg.stacked_convs, cfg.norm, None)
        self.retina_cls = Conv3x3(width, self.num_anchors * num_classes)
        self.retina_reg = Conv3x3(width, self.num_anchors * 4)
        init_head_convs_(self, self.retina_cls, cfg.prior_prob)

    def forward_level(self, feat: Tensor) -> tuple[Tensor, Tensor]:
        """``(cls_score [B, A * C, H, W], bbox_pred [B, A * 4, H, W])`` of one level."""
        return self.retina_cls(self.cls_convs(feat)), self.retina_reg(self.reg_convs(feat))


@register(RetinaHeadConfig)
def build_retina_head(
    cfg: RetinaHeadConfig, *, in_channels: int, num_classes: int, **context
) -> RetinaHead:
    """Build a :class:`RetinaHead` on the neck's ``in_channels`` for ``num_classes`` classes."""
    del context
    return RetinaHead(cfg, in_channels, num_classes)
