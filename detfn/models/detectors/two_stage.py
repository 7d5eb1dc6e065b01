"""The two-stage assembly: backbone -> neck -> RPN proposals -> RoI head.

:class:`TwoStageDetectorConfig`'s defaults are mmdetection 2.x's ``faster_rcnn_r50_fpn_1x_coco``
model, train_cfg and test_cfg (the component configs hold them), so Faster R-CNN is a value of
this assembly (:data:`detfn.models.detectors.presets.FASTER_RCNN_R50_FPN`), not a class.

The neck's ``out_channels`` is given once; the RPN head, the box head and the RoI extractor
receive it as build context, and the detector's ``num_classes`` likewise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from detfn.config import check
from detfn.models.backbones import MobileNetV2Config, ResNetConfig
from detfn.models.dense_heads.rpn import RPNHeadConfig
from detfn.models.detectors.base import (
    Detector,
    DetectorConfig,
    build_backbone_and_neck,
    check_levels,
)
from detfn.models.necks import FPNConfig
from detfn.models.roi_heads.cascade import CascadeRoIHeadConfig
from detfn.models.roi_heads.standard import StandardRoIHeadConfig
from detfn.registry import build, register
from detfn.structures import Batch, ImageDetections, ImageMeta, img_shapes_of

__all__ = ["TwoStageDetector", "TwoStageDetectorConfig", "build_two_stage_detector"]


@dataclass(frozen=True)
class TwoStageDetectorConfig(DetectorConfig):
    """Backbone, neck, RPN head and RoI head (defaults: Faster R-CNN R50-FPN 1x on COCO)."""

    backbone: ResNetConfig | MobileNetV2Config = field(default_factory=ResNetConfig)
    neck: FPNConfig = field(default_factory=FPNConfig)
    rpn_head: RPNHeadConfig = field(default_factory=RPNHeadConfig)
    roi_head: StandardRoIHeadConfig | CascadeRoIHeadConfig = field(
        default_factory=StandardRoIHeadConfig
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_levels(
            self, "rpn_head.anchor_generator.strides", self.rpn_head.anchor_generator.strides
        )
        stages = getattr(self.roi_head, "stages", (self.roi_head,))
        prefixes = [f"roi_head.stages[{i}]." for i in range(len(stages))]
        if isinstance(self.roi_head, StandardRoIHeadConfig):
            prefixes = ["roi_head."]
        for prefix, stage in zip(prefixes, stages):
            extractors = [("bbox_roi_extractor", stage.bbox_roi_extractor)]
            if stage.mask_branch is not None:
                extractors.append(("mask_branch.roi_extractor", stage.mask_branch.roi_extractor))
            for name, extractor in extractors:
                check(
                    self,
                    f"{prefix}{name}.featmap_strides",
                    len(extractor.featmap_strides) <= self.neck.num_outs,
                    f"has more levels than the neck's outputs ({self.neck.num_outs})",
                )


class TwoStageDetector(Detector):
    """Backbone, neck, RPN head and RoI head of a two-stage detector."""

    def __init__(self, backbone: nn.Module, neck: nn.Module, rpn_head: nn.Module, roi_head):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.rpn_head = rpn_head
        self.roi_head = roi_head

    def loss(
        self, images: Tensor, batch: Batch, *, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """RPN and R-CNN losses (``loss_rpn_cls``, ``loss_rpn_bbox``, ``loss_cls``,
        ``loss_bbox``, ``loss_mask`` with a mask branch; a cascade's are ``s{i}.``-prefixed) and
        the R-CNN ``acc``; proposals carry no gradient into the RoI head."""
        feats = self.features(images)
        cls_scores, bbox_preds = self.rpn_head(feats)
        losses = dict(self.rpn_head.loss_by_outputs(cls_scores, bbox_preds, batch, generator))
        img_shapes = batch.img_shapes.to(images.device)
        with torch.no_grad():
            boxes, _, mask = self.rpn_head.proposals(cls_scores, bbox_preds, img_shapes, True)
        losses.update(self.roi_head.loss(feats, boxes.detach(), mask, batch, generator))
        return losses

    def predict(self, images: Tensor, metas: Sequence[ImageMeta]) -> list[ImageDetections]:
        """Detections per image in original-image pixels (with ``masks`` for a mask head)."""
        feats = self.features(images)
        img_shapes = img_shapes_of(metas, images.device)
        cls_scores, bbox_preds = self.rpn_head(feats)
        boxes, _, mask = self.rpn_head.proposals(cls_scores, bbox_preds, img_shapes, False)
        dets = self.roi_head.predict(feats, boxes, mask, img_shapes)
        return self.roi_head.to_images(feats, dets, list(metas))


@register(TwoStageDetectorConfig)
def build_two_stage_detector(cfg: TwoStageDetectorConfig, **context) -> TwoStageDetector:
    """Build the modules; the neck's width and ``num_classes`` flow down as build context."""
    del context
    backbone, neck = build_backbone_and_neck(cfg)
    width, num_classes = cfg.neck.out_channels, cfg.num_classes
    detector = TwoStageDetector(
        backbone,
        neck,
        build(cfg.rpn_head, in_channels=width, num_classes=num_classes),
        build(cfg.roi_head, in_channels=width, num_classes=num_classes),
    )
    detector.channels_last = cfg.channels_last
    return detector
