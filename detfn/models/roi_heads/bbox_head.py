"""Shared2FCBBoxHead: the R-CNN box head of Faster R-CNN R50-FPN (mmdetection 2.x semantics).

RoI features ``[K, 256, 7, 7]`` are flattened and go through two shared fc layers of 1024 with
ReLU, then a classifier over ``num_classes + 1`` logits (background is the LAST index,
``num_classes``, as in mmdetection 2.x) and a class-specific box regressor with ``4 * num_classes``
outputs. Losses follow mmdetection's ``BBoxHead.loss``: softmax cross-entropy and L1 on the
deltas of the ground-truth class, both divided by the number of sampled RoIs; ``acc`` is the
classification accuracy in percent, reported but not part of the total.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detfn.config import Config, check, check_positive
from detfn.models.coders import DeltaXYWHBBoxCoderConfig
from detfn.models.losses import (
    CrossEntropyLossConfig,
    GIoULossConfig,
    L1LossConfig,
    SmoothL1LossConfig,
)
from detfn.registry import build, register

__all__ = ["Shared2FCBBoxHead", "Shared2FCBBoxHeadConfig", "accuracy"]

# mmdet 2.x R-CNN coder: the targets are small, so the stds scale them to about unit variance.
RCNN_TARGET_STDS = (0.1, 0.1, 0.2, 0.2)


@dataclass(frozen=True)
class Shared2FCBBoxHeadConfig(Config):
    """mmdet ``Shared2FCBBoxHead`` settings of faster_rcnn_r50_fpn_1x_coco.

    ``in_channels`` (the pooled features' channels, the neck's width) and ``num_classes`` (the
    detector's) come as build context.

    Attributes:
        fc_out_channels: width of the two shared fc layers.
        roi_feat_size: pooled side (the extractor's ``output_size``).
        bbox_coder: delta coder of the regression targets.
        reg_class_agnostic: one box per RoI instead of one per class.
        reg_decoded_bbox: apply ``loss_bbox`` to decoded boxes (for IoU-type losses) rather than
            to deltas.
        loss_cls: softmax cross-entropy (``use_sigmoid`` must be False).
        loss_bbox: box regression loss.
        init: "mmdet": shared fcs Xavier-uniform, classifier N(0, 0.01), regressor N(0, 0.001),
            zero biases; "pytorch": every fc keeps ``nn.Linear``'s own U(+-1 / sqrt(fan_in))
            weights and biases, as torchvision's ``TwoMLPHead`` and ``FastRCNNPredictor``.
    """

    fc_out_channels: int = 1024
    roi_feat_size: int = 7
    bbox_coder: DeltaXYWHBBoxCoderConfig = field(
        default_factory=lambda: DeltaXYWHBBoxCoderConfig(target_stds=RCNN_TARGET_STDS)
    )
    reg_class_agnostic: bool = False
    reg_decoded_bbox: bool = False
    loss_cls: CrossEntropyLossConfig = field(default_factory=CrossEntropyLossConfig)
    loss_bbox: L1LossConfig | SmoothL1LossConfig | GIoULossConfig = field(
        default_factory=L1LossConfig
    )
    init: Literal["mmdet", "pytorch"] = "mmdet"

    def __post_init__(self) -> None:
        check_positive(self, "fc_out_channels", "roi_feat_size")
        check(
            self,
            "loss_cls",
            not self.loss_cls.use_sigmoid,
            "must be a softmax loss (use_sigmoid=False): the head predicts num_classes + 1 logits",
        )
        check(
            self,
            "loss_bbox",
            self.reg_decoded_bbox or not isinstance(self.loss_bbox, GIoULossConfig),
            "GIoULossConfig compares boxes, so it needs reg_decoded_bbox=True",
        )


def accuracy(cls_score: Tensor, labels: Tensor) -> Tensor:
    """Top-1 accuracy in percent (mmdet's ``accuracy``); 0-d, no gradient.

    Args:
        cls_score (Tensor[K, C + 1]): logits.
        labels (Tensor[K]): int64 targets.
    """
    if labels.numel() == 0:
        return cls_score.new_zeros(())
    correct = (cls_score.detach().argmax(dim=1) == labels).float()
    return correct.mean() * 100.0


class Shared2FCBBoxHead(nn.Module):
    """``forward(roi_feats) -> (cls_score [K, C + 1], bbox_pred [K, 4C])``; loss and decoding."""

    def __init__(self, cfg: Shared2FCBBoxHeadConfig, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        flat = in_channels * cfg.roi_feat_size * cfg.roi_feat_size
        self.shared_fcs = nn.ModuleList(
            [
                nn.Linear(flat, cfg.fc_out_channels),
                nn.Linear(cfg.fc_out_channels, cfg.fc_out_channels),
            ]
        )
        self.fc_cls = nn.Linear(cfg.fc_out_channels, num_classes + 1)
        reg_out = 4 if cfg.reg_class_agnostic else 4 * num_classes
        self.fc_reg = nn.Linear(cfg.fc_out_channels, reg_out)
        self.coder = build(cfg.bbox_coder)
        self.loss_cls = build(cfg.loss_cls)
        self.loss_bbox = build(cfg.loss_bbox)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialize by ``cfg.init`` (see :class:`Shared2FCBBoxHeadConfig`)."""
        if self.cfg.init == "pytorch":
            for fc in (*self.shared_fcs, self.fc_cls, self.fc_reg):
                fc.reset_parameters()
            return
        for fc in self.shared_fcs:
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)
        nn.init.normal_(self.fc_cls.weight, std=0.01)
        nn.init.zeros_(self.fc_cls.bias)
        nn.init.normal_(self.fc_reg.weight, std=0.001)
        nn.init.zeros_(self.fc_reg.bias)

    def forward(self, roi_feats: Tensor) -> tuple[Tensor, Tensor]:
        """Classify and regress each RoI.

        Args:
            roi_feats (Tensor[K, in_channels, S, S]): pooled features.

        Returns:
            cls_score (Tensor[K, C + 1]) logits, background last; bbox_pred (Tensor[K, 4C]) deltas
            (``[K, 4]`` when class-agnostic).
        """
        x = roi_feats.flatten(1)
        for fc in self.shared_fcs:
            x = F.relu(fc(x))
        return self.fc_cls(x), self.fc_reg(x)

    def _class_deltas(self, bbox_pred: Tensor, labels: Tensor) -> Tensor:
        """The ``[K, 4]`` deltas of class ``labels`` (background clamped to any class)."""
        if self.cfg.reg_class_agnostic:
            return bbox_pred
        per_class = bbox_pred.view(bbox_pred.shape[0], self.num_classes, 4)  # [K, C, 4]
        index = labels.clamp(min=0, max=self.num_classes - 1)
        return per_class[torch.arange(labels.shape[0], device=labels.device), index]

    def loss(
        self, cls_score: Tensor, bbox_pred: Tensor, rois: Tensor, labels: Tensor, gt_boxes: Tensor
    ) -> dict[str, Tensor]:
        """R-CNN losses over the sampled RoIs of a whole batch.

        Args:
            cls_score (Tensor[K, C + 1]), bbox_pred (Tensor[K, 4C]): :meth:`forward` outputs.
            rois (Tensor[K, 5]): ``(batch_index, x1, y1, x2, y2)`` sampled RoIs.
            labels (Tensor[K]): int64; the matched gt's class for positives, ``num_classes`` for
                negatives.
            gt_boxes (Tensor[K, 4]): xyxy matched gt box of each positive (ignored for negatives).

        Returns:
            ``loss_cls`` and ``loss_bbox`` (0-d, mean over the K RoIs as mmdet's avg_factor) and
            ``acc`` (percent, detached).
        """
        num_rois = labels.shape[0]
        avg_factor = float(max(num_rois, 1))
        pos = (labels >= 0) & (labels < self.num_classes)  # [K]
        proposals = rois[:, 1:]
        # Negatives get weight 0 and a target equal to their own RoI (zero deltas), selected with
        # where() so that a degenerate negative RoI cannot put NaN into the sum.
        target_boxes = torch.where(pos[:, None], gt_boxes, proposals).detach()
        pred = self._class_deltas(bbox_pred, labels)  # [K, 4]
        if self.cfg.reg_decoded_bbox:
            pred = self.coder.decode(proposals, pred)
            target = target_boxes
        else:
            deltas = self.coder.encode(proposals.detach(), target_boxes)
            target = torch.where(pos[:, None], deltas, torch.zeros_like(deltas))
        weight = pos.to(pred.dtype)[:, None].expand(-1, 4)  # [K, 4]
        return {
            "loss_cls": self.loss_cls(cls_score, labels, avg_factor=avg_factor),
            "loss_bbox": self.loss_bbox(pred, target, weight, avg_factor=avg_factor),
            "acc": accuracy(cls_score, labels),
        }

    def decode(self, rois: Tensor, cls_score: Tensor, bbox_pred: Tensor, img_shapes: Tensor):
        """Class probabilities and class-specific boxes of each RoI (test time).

        Args:
            rois (Tensor[K, 5]): ``(batch_index, x1, y1, x2, y2)``.
            cls_score (Tensor[K, C + 1]), bbox_pred (Tensor[K, 4C]): :meth:`forward` outputs.
            img_shapes (Tensor[K, 2]): ``(H, W)`` of each RoI's image, for clipping.

        Returns:
            scores (Tensor[K, C + 1]) softmax probabilities, background last; boxes
            (Tensor[K, C, 4]) xyxy clipped to the image.
        """
        scores = F.softmax(cls_score, dim=-1)
        num_rois = rois.shape[0]
        per_class = 1 if self.cfg.reg_class_agnostic else self.num_classes
        deltas = bbox_pred.view(num_rois, per_class, 4)  # [K, C or 1, 4]; K may be 0
        deltas = deltas.expand(num_rois, self.num_classes, 4)  # [K, C, 4]
        proposals = rois[:, None, 1:].expand(num_rois, self.num_classes, 4)  # [K, C, 4]
        boxes = self.coder.decode(proposals, deltas, max_shape=img_shapes)
        return scores, boxes


@register(Shared2FCBBoxHeadConfig)
def build_shared2fc_bbox_head(
    cfg: Shared2FCBBoxHeadConfig, *, in_channels: int, num_classes: int, **context
) -> Shared2FCBBoxHead:
    """Build the head on ``in_channels`` pooled channels for ``num_classes`` classes."""
    del context
    return Shared2FCBBoxHead(cfg, in_channels, num_classes)
