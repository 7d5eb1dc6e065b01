"""The single-stage assembly: backbone -> neck -> one dense head (RetinaNet, FCOS, ATSS, ...).

Any head whose config subclasses :class:`~detfn.models.dense_heads.base.DenseHeadConfig` and
keeps the dense-head contract fits ``bbox_head``. :class:`SingleStageDetectorConfig`'s defaults
are mmdetection 2.x's ``retinanet_r50_fpn_1x_coco`` model: ResNet-50, FPN on C3-C5 with P6 from
C5 and P7 from P6 (``add_extra_convs="on_input"``), and the RetinaNet head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from detfn.models.backbones import MobileNetV2Config, ResNetConfig
from detfn.models.dense_heads.atss_head import ATSSHeadConfig
from detfn.models.dense_heads.fcos_head import FCOSHeadConfig
from detfn.models.dense_heads.retina_head import RetinaHeadConfig
from detfn.models.detectors.base import (
    Detector,
    DetectorConfig,
    build_backbone_and_neck,
    check_levels,
)
from detfn.models.necks import FPNConfig
from detfn.models.postprocess import rescale_detections
from detfn.registry import build, register
from detfn.structures import Batch, ImageDetections, ImageMeta, img_shapes_of

__all__ = [
    "SingleStageDetector",
    "SingleStageDetectorConfig",
    "build_single_stage_detector",
    "retinanet_fpn",
]


def retinanet_fpn() -> FPNConfig:
    """RetinaNet's neck: C3-C5 in, P3-P7 out, P6 a stride-2 conv on C5, P7 one on P6."""
    return FPNConfig(start_level=1, add_extra_convs="on_input", num_outs=5)


@dataclass(frozen=True)
class SingleStageDetectorConfig(DetectorConfig):
    """Backbone, neck and dense head (defaults: RetinaNet R50-FPN 1x on COCO)."""

    backbone: ResNetConfig | MobileNetV2Config = field(default_factory=ResNetConfig)
    neck: FPNConfig = field(default_factory=retinanet_fpn)
    bbox_head: RetinaHeadConfig | FCOSHeadConfig | ATSSHeadConfig = field(
        default_factory=RetinaHeadConfig
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("anchor_generator", "prior_generator"):
            priors = getattr(self.bbox_head, name, None)
            if priors is not None:
                check_levels(self, f"bbox_head.{name}.strides", priors.strides)


class SingleStageDetector(Detector):
    """Backbone, neck and dense head of a single-stage detector."""

    def __init__(self, backbone: nn.Module, neck: nn.Module, bbox_head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.bbox_head = bbox_head

    def loss(
        self, images: Tensor, batch: Batch, *, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """The dense head's losses of a batch."""
        return self.bbox_head.loss(self.features(images), batch, generator=generator)

    def predict(self, images: Tensor, metas: Sequence[ImageMeta]) -> list[ImageDetections]:
        """Detections per image in original-image pixels."""
        img_shapes = img_shapes_of(metas, images.device)
        dets = self.bbox_head.predict(self.features(images), img_shapes)
        return rescale_detections(dets, metas)


@register(SingleStageDetectorConfig)
def build_single_stage_detector(cfg: SingleStageDetectorConfig, **context) -> SingleStageDetector:
    """Build the modules; the neck's width and ``num_classes`` flow down as build context."""
    del context
    backbone, neck = build_backbone_and_neck(cfg)
    head = build(cfg.bbox_head, in_channels=cfg.neck.out_channels, num_classes=cfg.num_classes)
    detector = SingleStageDetector(backbone, neck, head)
    detector.channels_last = cfg.channels_last
    return detector
