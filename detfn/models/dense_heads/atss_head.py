"""ATSS head (mmdetection 2.x ``ATSSHead``, ``atss_r50_fpn_1x_coco``), batched over images.

A RetinaNet-like anchor head with one square anchor per location (side ``8 * stride``) plus
FCOS's centerness: two towers of ``stacked_convs`` x (3x3 conv, GroupNorm(32), ReLU);
``atss_cls`` (C logits per anchor), ``atss_reg`` (4 deltas per anchor, times a learnable
per-level :class:`Scale`) and ``atss_centerness`` (1 logit per anchor), the last two on the
regression tower.

Training: anchors are labelled by the configured assigner (ATSS by default, built through the
registry) with every valid anchor sampled (mmdetection's PseudoSampler). Losses, with
``num_total_samples = max(sum over images of max(#pos_i, 1), 1)``:

* focal loss over the labelled anchors (ignored ones weigh 0) / ``num_total_samples``;
* GIoU loss (weight 2) between the decoded predicted boxes of the positives and their gts,
  each weighted by its centerness target, divided by the sum of those targets (at least 1);
* centerness BCE over the positives / ``num_total_samples``; the target is the centerness of
  the anchor's centre within its gt.

Test: :func:`~detfn.models.dense_heads.centerness_predict.predict_with_centerness` with NMS 0.6.

References:
    Zhang et al., "Bridging the Gap Between Anchor-based and Anchor-free Detection via Adaptive
    Training Sample Selection", CVPR 2020, https://arxiv.org/abs/1912.02424
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor, nn

from detfn.config import check, check_positive
from detfn.models.anchors import AnchorGeneratorConfig, inside_flags
from detfn.models.assigners import AssignInput, MaxIoUAssignerConfig, gather_assigned
from detfn.models.atss_assigner import ATSSAssignerConfig
from detfn.models.coders import DeltaXYWHBBoxCoderConfig
from detfn.models.dense_heads.anchor_head import flatten_levels
from detfn.models.dense_heads.base import DenseHead, DenseHeadConfig
from detfn.models.dense_heads.centerness_predict import (
    CenternessTestConfig,
    predict_with_centerness,
)
from detfn.models.dense_heads.fcos_targets import centerness_targets
from detfn.models.dense_heads.towers import (
    HeadNorm,
    Scale,
    conv_tower,
    init_head_convs_,
)
from detfn.models.distance_coder import boxes_to_distances
from detfn.models.losses import CrossEntropyLossConfig, FocalLossConfig, GIoULossConfig
from detfn.models.losses.iou import IoULossConfig
from detfn.ops.winograd import Conv3x3
from detfn.registry import build, register
from detfn.structures import Batch, Detections

__all__ = ["ATSSHead", "ATSSHeadConfig", "ATSSOutputs", "ATSSTargets", "build_atss_head"]


def _atss_anchors() -> AnchorGeneratorConfig:
    return AnchorGeneratorConfig(
        strides=(8, 16, 32, 64, 128),
        ratios=(1.0,),
        scales=None,
        octave_base_scale=8.0,
        scales_per_octave=1,
    )


@dataclass(frozen=True)
class ATSSHeadConfig(DenseHeadConfig):
    """mmdetection's ``atss_r50_fpn_1x_coco`` head, train and test settings included.

    ``in_channels`` and ``num_classes`` come from the build context. ``conv_bias=None`` is
    mmdetection's ``'auto'`` (a bias only without norm). ``assigner`` is built through the
    registry: ATSS by default, MaxIoU to compare with a RetinaNet-style assignment.
    """

    feat_channels: int = 256
    stacked_convs: int = 4
    norm: HeadNorm = "GN"
    conv_bias: bool | None = None
    prior_prob: float = 0.01
    anchor_generator: AnchorGeneratorConfig = field(default_factory=_atss_anchors)
    bbox_coder: DeltaXYWHBBoxCoderConfig = field(
        default_factory=lambda: DeltaXYWHBBoxCoderConfig(target_stds=(0.1, 0.1, 0.2, 0.2))
    )
    assigner: ATSSAssignerConfig | MaxIoUAssignerConfig = field(default_factory=ATSSAssignerConfig)
    allowed_border: float = -1.0
    loss_cls: FocalLossConfig = field(default_factory=FocalLossConfig)
    loss_bbox: GIoULossConfig | IoULossConfig = field(
        default_factory=lambda: GIoULossConfig(loss_weight=2.0)
    )
    loss_centerness: CrossEntropyLossConfig = field(
        default_factory=lambda: CrossEntropyLossConfig(use_sigmoid=True)
    )
    test_cfg: CenternessTestConfig = field(
        default_factory=lambda: CenternessTestConfig(iou_threshold=0.6)
    )

    def __post_init__(self) -> None:
        check_positive(self, "feat_channels", "stacked_convs")
        check(self, "prior_prob", 0.0 < self.prior_prob < 1.0, "must be in (0, 1)")
        check(self, "norm", self.norm in ("GN", "none"), f"must be 'GN' or 'none': {self.norm!r}")
        check(
            self,
            "loss_centerness",
            self.loss_centerness.use_sigmoid,
            "must be a sigmoid loss (CrossEntropyLossConfig(use_sigmoid=True)): centerness is "
            "one logit per anchor",
        )


class ATSSOutputs(NamedTuple):
    """Raw head outputs, one entry per level (A anchors per location).

    Attributes:
        cls_scores: Tensor[B, A * C, H, W] class logits.
        bbox_preds: Tensor[B, A * 4, H, W] encoded deltas (already scaled per level).
        centernesses: Tensor[B, A, H, W] centerness logits.
    """

    cls_scores: list[Tensor]
    bbox_preds: list[Tensor]
    centernesses: list[Tensor]


class ATSSTargets(NamedTuple):
    """Per-anchor targets of a batch (N anchors of all levels).

    Attributes:
        labels (Tensor[B, N]): int64 class, ``num_classes`` for background.
        label_weights (Tensor[B, N]): 1 for positives and negatives, 0 for ignored or invalid.
        gt_boxes (Tensor[B, N, 4]): xyxy gt of each positive (zeros elsewhere).
        positive (Tensor[B, N]): bool.
        num_total_samples (Tensor[]): ``max(sum_i max(#pos_i, 1), 1)``, float.
    """

    labels: Tensor
    label_weights: Tensor
    gt_boxes: Tensor
    positive: Tensor
    num_total_samples: Tensor


def _shapes(batch: Batch, attribute: str, device: torch.device) -> Tensor:
    """Tensor[B, 2] of ``(h, w)`` from each meta's ``attribute`` (``pad_shape``, ``img_shape``)."""
    return torch.tensor([getattr(m, attribute)[:2] for m in batch.metas], device=device)


class ATSSHead(DenseHead):
    """The ATSS head; parameter names follow mmdetection (``cls_convs``, ``atss_cls``, ...)."""

    def __init__(self, cfg: ATSSHeadConfig, in_channels: int, num_classes: int):
        super().__init__()
        self.cfg, self.num_classes = cfg, num_classes
        self.prior_generator = build(cfg.anchor_generator)
        self.num_anchors = self.prior_generator.num_base_anchors
        tower = (in_channels, cfg.feat_channels, cfg.stacked_convs, cfg.norm, cfg.conv_bias)
        self.cls_convs = conv_tower(*tower)
        self.reg_convs = conv_tower(*tower)
        feat, anchors = cfg.feat_channels, self.num_anchors
        self.atss_cls = Conv3x3(feat, anchors * num_classes)
        self.atss_reg = Conv3x3(feat, anchors * 4)
        self.atss_centerness = Conv3x3(feat, anchors)
        self.scales = nn.ModuleList(Scale(1.0) for _ in cfg.anchor_generator.strides)
        init_head_convs_(self, self.atss_cls, cfg.prior_prob)
        self.coder = build(cfg.bbox_coder)
        self.assigner = build(cfg.assigner)
        self.loss_cls = build(cfg.loss_cls)
        self.loss_bbox = build(cfg.loss_bbox)
        self.loss_centerness = build(cfg.loss_centerness)

    def forward(self, feats: Sequence[Tensor]) -> ATSSOutputs:
        """:class:`ATSSOutputs` of the FPN levels ``feats`` (Tensor[B, in_channels, H, W] each)."""
        if len(feats) != len(self.scales):
            raise ValueError(
                f"ATSSHead got {len(feats)} feature maps but anchor_generator.strides has "
                f"{len(self.scales)} levels"
            )
        out = ATSSOutputs([], [], [])
        for feat, scale in zip(feats, self.scales):
            cls_feat, reg_feat = self.cls_convs(feat), self.reg_convs(feat)
            out.cls_scores.append(self.atss_cls(cls_feat))
            out.bbox_preds.append(scale(self.atss_reg(reg_feat)).float())
            out.centernesses.append(self.atss_centerness(reg_feat))
        return out

    def anchors(self, maps: Sequence[Tensor]) -> list[Tensor]:
        """Per level anchors Tensor[H * W * A, 4] for the head's output sizes."""
        sizes = [tuple(m.shape[-2:]) for m in maps]
        return self.prior_generator.grid_anchors(sizes, maps[0].device)

    def targets(self, anchors: Sequence[Tensor], sizes, batch: Batch) -> ATSSTargets:
        """:class:`ATSSTargets` of the per-level ``anchors`` for ``batch``."""
        flat = torch.cat(anchors)  # [N, 4]
        device = flat.device
        pad_shapes = _shapes(batch, "pad_shape", device)
        flags = torch.cat(self.prior_generator.valid_flags(sizes, pad_shapes), dim=1)
        valid = inside_flags(
            flat, flags, batch.img_shapes.to(device), self.cfg.allowed_border
        )  # [B, N]
        batch_size = valid.shape[0]
        assigned = self.assigner(
            AssignInput(
                flat.expand(batch_size, -1, -1),
                valid,
                tuple(a.shape[0] for a in anchors),
                batch.boxes.to(flat.dtype),
                batch.box_mask,
                batch.ignore_boxes.to(flat.dtype),
                batch.ignore_mask,
                batch.labels,
            )
        ).assigned  # [B, N]
        positive = assigned > 0
        labels = torch.where(positive, gather_assigned(assigned, batch.labels), self.num_classes)
        num_total = positive.sum(dim=1).clamp(min=1).sum().to(flat.dtype).clamp(min=1.0)
        return ATSSTargets(
            labels,
            (assigned >= 0).to(flat.dtype),
            gather_assigned(assigned, batch.boxes.to(flat.dtype)),
            positive,
            num_total,
        )

    def loss(
        self, feats: Sequence[Tensor], batch: Batch, *, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """``{"loss_cls", "loss_bbox", "loss_centerness"}``; ATSS draws no random numbers."""
        del generator
        outputs = self(feats)
        anchors = self.anchors(outputs.cls_scores)
        sizes = [tuple(m.shape[-2:]) for m in outputs.cls_scores]
        targets = self.targets(anchors, sizes, batch)
        logits = flatten_levels(outputs.cls_scores, self.num_classes)  # [B, N, C]
        deltas = flatten_levels(outputs.bbox_preds, 4)  # [B, N, 4]
        centerness = flatten_levels(outputs.centernesses, 1).squeeze(2)  # [B, N]
        avg = targets.num_total_samples
        loss_cls = self.loss_cls(
            logits.reshape(-1, self.num_classes),
            targets.labels.reshape(-1),
            targets.label_weights.reshape(-1),
            avg_factor=avg,
        )
        positive = targets.positive
        pos_anchors = torch.cat(anchors).expand(positive.shape[0], -1, -1)[positive]  # [P, 4]
        pos_gt = targets.gt_boxes[positive]  # [P, 4]
        centres = (pos_anchors[:, :2] + pos_anchors[:, 2:]) * 0.5  # [P, 2]
        ctr_targets = centerness_targets(boxes_to_distances(centres, pos_gt))  # [P]
        loss_bbox = self.loss_bbox(
            self.coder.decode(pos_anchors, deltas[positive]),  # not clipped, as mmdetection
            pos_gt,
            ctr_targets,
            avg_factor=ctr_targets.sum().detach().clamp(min=1.0),
        )
        loss_centerness = self.loss_centerness(centerness[positive], ctr_targets, avg_factor=avg)
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "loss_centerness": loss_centerness}

    def predict(self, feats: Sequence[Tensor], img_shapes: Tensor) -> Detections:
        """Detections in the resized-image frame; ``img_shapes`` (Tensor[B, 2]) unpadded (h, w)."""
        outputs = self(feats)

        def decode(priors: Tensor, pred: Tensor, shapes: Tensor) -> Tensor:
            return self.coder.decode(priors, pred, max_shape=shapes)

        anchors = self.anchors(outputs.cls_scores)
        return predict_with_centerness(
            self.cfg.test_cfg,
            anchors,
            outputs.cls_scores,
            outputs.bbox_preds,
            outputs.centernesses,
            decode,
            img_shapes.to(anchors[0].device),
        )


@register(ATSSHeadConfig)
def build_atss_head(
    cfg: ATSSHeadConfig, *, in_channels: int, num_classes: int, **context
) -> ATSSHead:
    """Build an :class:`ATSSHead` for the neck's ``in_channels`` and the detector's classes."""
    del context
    return ATSSHead(cfg, in_channels, num_classes)
