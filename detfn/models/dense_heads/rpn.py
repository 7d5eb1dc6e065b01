"""Region proposal network head (mmdetection 2.x ``RPNHead``), batched over images.

Structure: a shared 3x3 conv + ReLU, then 1x1 convs giving ``A`` objectness logits (sigmoid) and
``4A`` box deltas per location and level. It is the one-class case of
:class:`~detfn.models.dense_heads.anchor_head.AnchorHead`: targets, sampling and losses are the
base's, with every ground-truth box of class 0 (objectness). Both losses are averaged over the
sampled anchors of the batch (mmdetection's ``num_total_pos + num_total_neg``, each image
counting at least 1 of each).

Proposals: per level the ``nms_pre`` best-scored anchors of each image (one batched ``topk``),
decoding, clipping to the image, dropping boxes not wider and taller than ``min_bbox_size``,
then ONE ``batched_nms`` whose keys are ``image * num_levels + level`` (mmdetection 2.x runs
the RPN's NMS per level), and the ``max_per_img`` best boxes of each image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms

from detfn.config import Config, check, check_non_negative, check_positive, check_unit_interval
from detfn.models.assigners import MaxIoUAssignerConfig
from detfn.models.dense_heads.anchor_head import AnchorHead, AnchorHeadConfig, flatten_levels
from detfn.models.losses import CrossEntropyLossConfig, FocalLossConfig
from detfn.models.samplers import PseudoSamplerConfig, RandomSamplerConfig
from detfn.ops.winograd import Conv3x3
from detfn.registry import register
from detfn.structures import Batch, Detections

__all__ = [
    "ProposalConfig",
    "Proposals",
    "RPNHead",
    "RPNHeadConfig",
    "build_rpn_head",
    "flatten_levels",
    "select_proposals",
]


@dataclass(frozen=True)
class ProposalConfig(Config):
    """How proposals are selected: mmdetection's ``rpn_proposal`` (train) / ``rpn`` (test) cfg.

    ``nms_pre`` is per level and image (``<= 0`` keeps all); ``max_per_img`` is per image after
    NMS; a box is kept only if its width and height are both ``> min_bbox_size``.
    """

    nms_pre: int = 1000
    max_per_img: int = 1000
    iou_threshold: float = 0.7
    min_bbox_size: float = 0.0

    def __post_init__(self) -> None:
        check_positive(self, "max_per_img")
        check_unit_interval(self, "iou_threshold")
        check_non_negative(self, "min_bbox_size")


@dataclass(frozen=True)
class RPNHeadConfig(AnchorHeadConfig):
    """mmdetection's ``faster_rcnn_r50_fpn_1x_coco`` RPN head, train and test settings included.

    ``in_channels`` comes from the neck (build context); the RPN has one class whatever the
    detector's ``num_classes``.
    """

    feat_channels: int = 256
    loss_cls: CrossEntropyLossConfig | FocalLossConfig = field(
        default_factory=lambda: CrossEntropyLossConfig(use_sigmoid=True)
    )
    assigner: MaxIoUAssignerConfig = field(
        default_factory=lambda: MaxIoUAssignerConfig(
            pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3, match_low_quality=True
        )
    )
    sampler: RandomSamplerConfig | PseudoSamplerConfig = field(
        default_factory=lambda: RandomSamplerConfig(
            num=256, pos_fraction=0.5, neg_pos_ub=-1, add_gt_as_proposals=False
        )
    )
    train_proposal: ProposalConfig = field(
        default_factory=lambda: ProposalConfig(nms_pre=2000, max_per_img=1000)
    )
    test_proposal: ProposalConfig = field(
        default_factory=lambda: ProposalConfig(nms_pre=1000, max_per_img=1000)
    )

    def __post_init__(self) -> None:
        check_positive(self, "feat_channels")
        if isinstance(self.loss_cls, CrossEntropyLossConfig):
            check(
                self,
                "loss_cls",
                self.loss_cls.use_sigmoid,
                "must be a sigmoid loss (CrossEntropyLossConfig(use_sigmoid=True)): the RPN "
                "predicts one objectness logit per anchor",
            )


class Proposals(NamedTuple):
    """Padded proposals of a batch, each image's sorted by decreasing score.

    Attributes:
        boxes (Tensor[B, P, 4]): xyxy in the resized-image frame; zeros past the mask.
        scores (Tensor[B, P]): objectness probabilities; zeros past the mask.
        mask (Tensor[B, P]): bool, True for real proposals.
    """

    boxes: Tensor
    scores: Tensor
    mask: Tensor


def select_proposals(
    cfg: ProposalConfig,
    coder,
    anchors: Sequence[Tensor],
    scores: Sequence[Tensor],
    deltas: Sequence[Tensor],
    img_shapes: Tensor,
) -> Proposals:
    """Proposals of every image of a batch, with one NMS call for all images and levels.

    Args:
        anchors: per level Tensor[n_l, 4] (xyxy).
        scores: per level Tensor[B, n_l] objectness probabilities.
        deltas: per level Tensor[B, n_l, 4].
        img_shapes (Tensor[B, 2]): ``(h, w)`` to clip to.

    Returns:
        :class:`Proposals`; each image's boxes sorted by score, ``P = min(max_per_img, most
        kept in an image)``.
    """
    batch_size = img_shapes.shape[0]
    top_boxes, top_scores, top_deltas, top_levels = [], [], [], []
    for level, (anchor, score, delta) in enumerate(zip(anchors, scores, deltas)):
        k = score.shape[1] if cfg.nms_pre <= 0 else min(cfg.nms_pre, score.shape[1])
        best, index = score.topk(k, dim=1)  # [B, k], sorted
        top_scores.append(best)
        top_boxes.append(anchor[index])  # [B, k, 4]
        top_deltas.append(delta.gather(1, index[..., None].expand(-1, -1, 4)))  # [B, k, 4]
        top_levels.append(torch.full_like(index, level))
    boxes = coder.decode(torch.cat(top_boxes, 1), torch.cat(top_deltas, 1), max_shape=img_shapes)
    score = torch.cat(top_scores, 1)  # [B, K]
    widths, heights = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    big_enough = (widths > cfg.min_bbox_size) & (heights > cfg.min_bbox_size)  # [B, K]
    images = torch.arange(batch_size, device=score.device)[:, None].expand_as(score)  # [B, K]
    keys = images * len(anchors) + torch.cat(top_levels, 1)  # [B, K]

    candidates = big_enough.reshape(-1).nonzero().squeeze(1)  # indices into B * K
    flat_boxes = boxes.reshape(-1, 4)
    kept = candidates[
        batched_nms(
            flat_boxes[candidates],
            score.reshape(-1)[candidates],
            keys.reshape(-1)[candidates],
            cfg.iou_threshold,
        )
    ]  # by decreasing score
    return _top_per_image(cfg.max_per_img, kept, flat_boxes, score.reshape(-1), score.shape)


def _top_per_image(max_per_img: int, kept: Tensor, boxes: Tensor, scores: Tensor, shape):
    """Scatter score-sorted flat indices ``kept`` into padded per-image rows of ``max_per_img``."""
    batch_size, per_image = shape
    image = kept // per_image
    order = image.argsort(stable=True)  # groups images, keeps score order inside each
    kept, image = kept[order], image[order]
    counts = torch.bincount(image, minlength=batch_size)  # [B]
    starts = counts.cumsum(0) - counts  # [B]
    rank = torch.arange(kept.shape[0], device=kept.device) - starts[image]
    take = rank < max_per_img
    kept, image, rank = kept[take], image[take], rank[take]
    width = int(counts.clamp(max=max_per_img).max()) if batch_size > 0 else 0
    out_boxes = boxes.new_zeros(batch_size, width, 4)
    out_scores = scores.new_zeros(batch_size, width)
    mask = torch.zeros(batch_size, width, dtype=torch.bool, device=boxes.device)
    out_boxes[image, rank] = boxes[kept]
    out_scores[image, rank] = scores[kept]
    mask[image, rank] = True
    return Proposals(out_boxes, out_scores, mask)


class RPNHead(AnchorHead):
    """The RPN head; parameter names follow mmdetection (``rpn_conv``, ``rpn_cls``, ``rpn_reg``)."""

    def __init__(self, cfg: RPNHeadConfig, in_channels: int = 256):
        super().__init__()
        self.build_parts(cfg, num_classes=1)
        self.rpn_conv = Conv3x3(in_channels, cfg.feat_channels)
        self.rpn_cls = nn.Conv2d(cfg.feat_channels, self.num_anchors, 1)
        self.rpn_reg = nn.Conv2d(cfg.feat_channels, self.num_anchors * 4, 1)
        for conv in (self.rpn_conv, self.rpn_cls, self.rpn_reg):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward_level(self, feat: Tensor) -> tuple[Tensor, Tensor]:
        """``(objectness [B, A, H, W], deltas [B, 4A, H, W])`` of one level."""
        hidden = F.relu(self.rpn_conv(feat))
        return self.rpn_cls(hidden), self.rpn_reg(hidden)

    def gt_labels(self, batch: Batch) -> Tensor:
        """Every object is class 0: the RPN scores objectness, not classes."""
        return torch.zeros_like(batch.labels)

    def loss_names(self) -> tuple[str, str]:
        return "loss_rpn_cls", "loss_rpn_bbox"

    def proposals(
        self,
        cls_scores: Sequence[Tensor],
        bbox_preds: Sequence[Tensor],
        img_shapes: Tensor,
        training: bool,
    ) -> Proposals:
        """Proposals ``(boxes [B, P, 4], scores [B, P], mask [B, P])``; no gradient flows back.

        Args:
            img_shapes (Tensor[B, 2]): ``(h, w)`` of each image before padding.
            training: use ``train_proposal`` (else ``test_proposal``).
        """
        cfg = self.cfg.train_proposal if training else self.cfg.test_proposal
        with torch.no_grad():
            scores = [s.detach().permute(0, 2, 3, 1).reshape(s.shape[0], -1) for s in cls_scores]
            deltas = [d.detach().permute(0, 2, 3, 1).reshape(d.shape[0], -1, 4) for d in bbox_preds]
            return select_proposals(
                cfg,
                self.coder,
                self.anchors(cls_scores),
                [s.sigmoid() for s in scores],
                deltas,
                img_shapes.to(scores[0].device),
            )

    def predict(self, feats: Sequence[Tensor], img_shapes: Tensor) -> Detections:
        """Test proposals as class-0 detections (an RPN-only detector's output)."""
        boxes, scores, mask = self.proposals(*self(feats), img_shapes, training=False)
        labels = torch.where(mask, 0, -1)
        return Detections(boxes, scores, labels, mask)


@register(RPNHeadConfig)
def build_rpn_head(cfg: RPNHeadConfig, *, in_channels: int, **context) -> RPNHead:
    """Build an :class:`RPNHead` on ``in_channels`` feature channels (the neck's width)."""
    del context  # num_classes: the RPN always has one
    return RPNHead(cfg, in_channels)
