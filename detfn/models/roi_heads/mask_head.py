"""FCNMaskHead: Mask R-CNN's mask branch (mmdetection 2.x ``FCNMaskHead`` semantics).

RoI features ``[K, 256, 14, 14]`` (from their own RoIAlign at 14x14, not the box branch's 7x7:
:func:`mask_roi_extractor_config`) go through ``num_convs`` 3x3 convs with ReLU, a 2x2 stride-2
transposed conv with ReLU (14 -> 28) and a 1x1 conv to one logit map per class. The loss is
binary cross-entropy on the channel of each positive RoI's ground-truth class only, averaged
over every pixel of every positive (mmdetection's ``mask_cross_entropy``): the classes do not
compete, which is what decouples masks from classification in Mask R-CNN.

``in_channels`` (the RoI features' channels) and ``num_classes`` come from the detector at
build time (``build(cfg, in_channels=256, num_classes=80)``), never from this config, so one
mask-head config fits any dataset and any neck.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detfn.config import Config, check_positive
from detfn.models.roi_heads.roi_extractor import SingleRoIExtractorConfig
from detfn.registry import register

__all__ = [
    "FCNMaskHead",
    "FCNMaskHeadConfig",
    "build_fcn_mask_head",
    "mask_loss",
    "mask_roi_extractor_config",
    "select_class_masks",
]


def mask_roi_extractor_config() -> SingleRoIExtractorConfig:
    """mmdetection's mask RoI extractor of mask_rcnn_r50_fpn_1x_coco: RoIAlign 14x14, adaptive
    sampling, ``aligned=True``, strides 4-32, ``finest_scale=56`` (a separate module from the
    box branch's 7x7 extractor)."""
    return SingleRoIExtractorConfig(output_size=14)


@dataclass(frozen=True)
class FCNMaskHeadConfig(Config):
    """mmdet ``FCNMaskHead`` settings of mask_rcnn_r50_fpn_1x_coco.

    Attributes:
        num_convs: 3x3 convs (padding 1) + ReLU before the upsampling.
        roi_feat_size: side of the pooled RoI features (the mask extractor's ``output_size``).
        conv_out_channels: width of the convs and of the transposed conv.
        upsample_ratio: stride and kernel of the transposed conv; the output side is
            ``roi_feat_size * upsample_ratio`` (28 = mmdetection's ``mask_size``).
        class_agnostic: one mask per RoI instead of one per class.
        loss_weight: multiplier of the mask loss (mmdetection's ``loss_mask.loss_weight``).
    """

    num_convs: int = 4
    roi_feat_size: int = 14
    conv_out_channels: int = 256
    upsample_ratio: int = 2
    class_agnostic: bool = False
    loss_weight: float = 1.0

    def __post_init__(self) -> None:
        check_positive(self, "num_convs", "roi_feat_size", "conv_out_channels", "upsample_ratio")

    @property
    def mask_size(self) -> int:
        """Side of the predicted masks and of the training targets (28)."""
        return self.roi_feat_size * self.upsample_ratio


def mask_loss(mask_logits: Tensor, targets: Tensor, labels: Tensor) -> Tensor:
    """BCE with logits on each positive's class channel, mean over RoIs and pixels.

    Args:
        mask_logits (Tensor[P, C, S, S]): head output of the positive RoIs (``C = 1`` when
            class-agnostic).
        targets (Tensor[P, S, S]): float targets in ``[0, 1]`` (see ``mask_targets``).
        labels (Tensor[P]): int64 ground-truth class of each positive.

    Returns:
        0-d tensor; with no positives, 0 that still depends on ``mask_logits`` (so every
        parameter gets a gradient, as mmdetection's ``mask_pred.sum() * 0``).
    """
    if mask_logits.shape[0] == 0:
        return mask_logits.sum() * 0
    selected = select_class_masks(mask_logits, labels)
    return F.binary_cross_entropy_with_logits(selected, targets.to(selected.dtype))


def select_class_masks(mask_logits: Tensor, labels: Tensor) -> Tensor:
    """Tensor[P, S, S]: channel ``labels[i]`` of row ``i`` (channel 0 when class-agnostic)."""
    if mask_logits.shape[1] == 1:
        return mask_logits[:, 0]
    rows = torch.arange(mask_logits.shape[0], device=mask_logits.device)
    return mask_logits[rows, labels.to(mask_logits.device)]


class FCNMaskHead(nn.Module):
    """``forward(roi_feats) -> mask_logits [K, C, 28, 28]``; ``loss`` and ``probabilities``."""

    def __init__(self, cfg: FCNMaskHeadConfig, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        convs = []
        for i in range(cfg.num_convs):
            width_in = in_channels if i == 0 else cfg.conv_out_channels
            convs.append(nn.Conv2d(width_in, cfg.conv_out_channels, 3, padding=1))
        self.convs = nn.ModuleList(convs)
        width = cfg.conv_out_channels if cfg.num_convs else in_channels
        ratio = cfg.upsample_ratio
        self.upsample = nn.ConvTranspose2d(width, cfg.conv_out_channels, ratio, stride=ratio)
        out = 1 if cfg.class_agnostic else num_classes
        self.conv_logits = nn.Conv2d(cfg.conv_out_channels, out, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """mmdetection's init: every conv (mmcv ConvModule's default), the transposed conv and
        the logits conv get Kaiming-normal weights (fan_out, ReLU gain) and zero biases."""
        for module in (*self.convs, self.upsample, self.conv_logits):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)

    def forward(self, roi_feats: Tensor) -> Tensor:
        """Mask logits of each RoI.

        Args:
            roi_feats (Tensor[K, in_channels, 14, 14]): pooled by the mask RoI extractor.

        Returns:
            Tensor[K, C, 28, 28] logits (``C = 1`` when class-agnostic).
        """
        x = roi_feats
        for conv in self.convs:
            x = F.relu(conv(x))
        return self.conv_logits(F.relu(self.upsample(x)))

    def loss(self, mask_logits: Tensor, targets: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """``{"loss_mask": ...}``: :func:`mask_loss` times ``loss_weight`` over the positives."""
        return {"loss_mask": mask_loss(mask_logits, targets, labels) * self.cfg.loss_weight}

    def probabilities(self, mask_logits: Tensor, labels: Tensor) -> Tensor:
        """Tensor[D, 28, 28]: sigmoid of each detection's predicted-class channel (test time)."""
        return select_class_masks(mask_logits, labels).sigmoid()


@register(FCNMaskHeadConfig)
def build_fcn_mask_head(
    cfg: FCNMaskHeadConfig, in_channels: int = 256, num_classes: int | None = None, **context: Any
) -> FCNMaskHead:
    """Build the head; ``num_classes`` (foreground classes) must come from the detector."""
    del context
    if num_classes is None or num_classes < 1:
        raise ValueError(
            f"FCNMaskHeadConfig: build it with num_classes=<foreground classes> from the "
            f"detector, got {num_classes!r}"
        )
    return FCNMaskHead(cfg, in_channels, num_classes)
