"""Faster R-CNN: backbone -> FPN -> RPN proposals -> RoI head.

The defaults of :class:`FasterRCNNConfig` are mmdetection 2.x's ``faster_rcnn_r50_fpn_1x_coco``
model, train_cfg and test_cfg (the component configs hold them). The module computes either the
named losses of a batch or the detections of a batch; :mod:`detfn.models.functional` turns it
into the pure functions ``loss(params, buffers, batch)`` and ``predict(params, buffers, ...)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from detfn.config import Config, fail
from detfn.models.backbones import MobileNetV2Config, ResNetConfig
from detfn.models.dense_heads.rpn import RPNHeadConfig
from detfn.models.necks import FPNConfig
from detfn.models.roi_heads.standard import StandardRoIHeadConfig
from detfn.registry import build, register
from detfn.structures import Batch, Detections

__all__ = [
    "Detections",
    "FasterRCNN",
    "FasterRCNNConfig",
    "build_faster_rcnn",
    "sum_losses",
]


@dataclass(frozen=True)
class FasterRCNNConfig(Config):
    """A two-stage detector; ``num_classes`` lives in ``roi_head.bbox_head``."""

    backbone: ResNetConfig | MobileNetV2Config = field(default_factory=ResNetConfig)
    neck: FPNConfig = field(default_factory=FPNConfig)
    rpn_head: RPNHeadConfig = field(default_factory=RPNHeadConfig)
    roi_head: StandardRoIHeadConfig = field(default_factory=StandardRoIHeadConfig)

    @property
    def num_classes(self) -> int:
        return self.roi_head.bbox_head.num_classes

    def __post_init__(self) -> None:
        if self.rpn_head.in_channels != self.neck.out_channels:
            fail(
                self,
                "rpn_head.in_channels",
                f"must equal neck.out_channels={self.neck.out_channels}, "
                f"got {self.rpn_head.in_channels}",
            )
        extractor = self.roi_head.bbox_roi_extractor
        if extractor.out_channels != self.neck.out_channels:
            fail(
                self,
                "roi_head.bbox_roi_extractor.out_channels",
                f"must equal neck.out_channels={self.neck.out_channels}, "
                f"got {extractor.out_channels}",
            )
        if len(self.rpn_head.anchor_generator.strides) != self.neck.num_outs:
            fail(
                self,
                "rpn_head.anchor_generator.strides",
                f"needs one stride per FPN output (neck.num_outs={self.neck.num_outs}), "
                f"got {self.rpn_head.anchor_generator.strides}",
            )
        if len(extractor.featmap_strides) > self.neck.num_outs:
            fail(
                self,
                "roi_head.bbox_roi_extractor.featmap_strides",
                f"has more levels than the FPN outputs ({self.neck.num_outs})",
            )


def sum_losses(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """Total loss: the sum of every entry whose name contains ``loss`` (``acc`` is not summed)."""
    return sum(value for name, value in losses.items() if "loss" in name)


class FasterRCNN(nn.Module):
    """Backbone, neck, RPN head and RoI head of a Faster R-CNN."""

    def __init__(self, backbone: nn.Module, neck: nn.Module, rpn_head: nn.Module, roi_head):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.rpn_head = rpn_head
        self.roi_head = roi_head

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """FPN features of a padded image batch ``Tensor[B, 3, H, W]``."""
        return tuple(self.neck(self.backbone(images)))

    def forward(
        self,
        images: torch.Tensor,
        img_shapes: torch.Tensor,
        batch: Batch | None = None,
        mode: Literal["loss", "predict"] = "loss",
    ):
        """``mode="loss"``: ``(total, named losses)`` for ``batch``'s targets.

        ``mode="predict"``: :class:`Detections` padded per image, in the resized-image frame.
        """
        feats = self.features(images)
        cls_scores, bbox_preds = self.rpn_head(feats)
        if mode == "predict":
            boxes, _, mask = self.rpn_head.proposals(cls_scores, bbox_preds, img_shapes, False)
            return self.roi_head.predict(feats, boxes, mask, img_shapes)
        if batch is None:
            raise ValueError("FasterRCNN(mode='loss') needs the batch with its targets")
        losses = dict(self.rpn_head.loss(cls_scores, bbox_preds, batch, None))
        with torch.no_grad():
            boxes, _, mask = self.rpn_head.proposals(cls_scores, bbox_preds, img_shapes, True)
        losses.update(self.roi_head.loss(feats, boxes.detach(), mask, batch, None))
        return sum_losses(losses), losses


@register(FasterRCNNConfig)
def build_faster_rcnn(cfg: FasterRCNNConfig, **context) -> FasterRCNN:
    """Build the modules and check that their channel counts agree."""
    backbone = build(cfg.backbone)
    in_channels = tuple(backbone.out_channels)
    if tuple(cfg.neck.in_channels) != in_channels:
        raise ValueError(
            f"FasterRCNNConfig.neck.in_channels={cfg.neck.in_channels} does not match the "
            f"backbone's output channels {in_channels}"
        )
    return FasterRCNN(backbone, build(cfg.neck), build(cfg.rpn_head), build(cfg.roi_head))
