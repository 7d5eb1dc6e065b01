"""Region proposal network head (mmdetection 2.x ``RPNHead``), batched over images.

Structure: a shared 3x3 conv + ReLU, then 1x1 convs giving ``A`` objectness logits (sigmoid) and
``4A`` box deltas per location and level.

Training targets: the anchors of all levels are concatenated per image ([B, N, 4]); anchors
outside an image's own padded extent are invalid; :func:`assign_max_iou` and
:func:`random_sample` label and sample the whole batch at once. Both losses are averaged over
the number of sampled anchors of the batch (mmdetection's ``num_total_pos + num_total_neg``,
each image counting at least 1 of each).

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
from detfn.models.anchors import AnchorGeneratorConfig, grid_anchors, inside_flags, valid_flags
from detfn.models.anchors import num_base_anchors as anchors_per_location
from detfn.models.assigners import MaxIoUAssignerConfig, assign_max_iou, gather_assigned
from detfn.models.coders import DeltaXYWHBBoxCoder, DeltaXYWHBBoxCoderConfig
from detfn.models.losses import (
    CrossEntropyLossConfig,
    FocalLossConfig,
    L1LossConfig,
    SmoothL1LossConfig,
)
from detfn.models.samplers import RandomSamplerConfig, random_sample
from detfn.registry import build, register

__all__ = [
    "ProposalConfig",
    "Proposals",
    "RPNHead",
    "RPNHeadConfig",
    "RPNTargets",
    "build_rpn_head",
    "flatten_levels",
    "rpn_targets",
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
class RPNHeadConfig(Config):
    """mmdetection's ``faster_rcnn_r50_fpn_1x_coco`` RPN head, train and test settings included."""

    in_channels: int = 256
    feat_channels: int = 256
    anchor_generator: AnchorGeneratorConfig = field(default_factory=AnchorGeneratorConfig)
    bbox_coder: DeltaXYWHBBoxCoderConfig = field(default_factory=DeltaXYWHBBoxCoderConfig)
    loss_cls: CrossEntropyLossConfig | FocalLossConfig = field(
        default_factory=lambda: CrossEntropyLossConfig(use_sigmoid=True)
    )
    loss_bbox: L1LossConfig | SmoothL1LossConfig = field(default_factory=L1LossConfig)
    assigner: MaxIoUAssignerConfig = field(
        default_factory=lambda: MaxIoUAssignerConfig(
            pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3, match_low_quality=True
        )
    )
    sampler: RandomSamplerConfig = field(
        default_factory=lambda: RandomSamplerConfig(
            num=256, pos_fraction=0.5, neg_pos_ub=-1, add_gt_as_proposals=False
        )
    )
    allowed_border: float = -1.0
    train_proposal: ProposalConfig = field(
        default_factory=lambda: ProposalConfig(nms_pre=2000, max_per_img=1000)
    )
    test_proposal: ProposalConfig = field(
        default_factory=lambda: ProposalConfig(nms_pre=1000, max_per_img=1000)
    )

    def __post_init__(self) -> None:
        check_positive(self, "in_channels", "feat_channels")
        if isinstance(self.loss_cls, CrossEntropyLossConfig):
            check(
                self,
                "loss_cls",
                self.loss_cls.use_sigmoid,
                "must be a sigmoid loss (CrossEntropyLossConfig(use_sigmoid=True)): the RPN "
                "predicts one objectness logit per anchor",
            )


class RPNTargets(NamedTuple):
    """Per-anchor training targets of a batch.

    Attributes:
        labels (Tensor[B, N]): float 1 for sampled positives, else 0.
        label_weights (Tensor[B, N]): 1 for sampled anchors (positive or negative), else 0.
        box_targets (Tensor[B, N, 4]): encoded deltas to the matched gt (0 where unmatched).
        box_weights (Tensor[B, N]): 1 for sampled positives, else 0.
        avg_factor (Tensor[]): sum over images of ``max(1, pos) + max(1, neg)`` sampled.
    """

    labels: Tensor
    label_weights: Tensor
    box_targets: Tensor
    box_weights: Tensor
    avg_factor: Tensor


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


def flatten_levels(maps: Sequence[Tensor], channels: int) -> Tensor:
    """Concatenate per-level head outputs in anchor order.

    Args:
        maps: per level Tensor[B, A * channels, H, W].
        channels: values per anchor (1 for objectness, 4 for deltas).

    Returns:
        Tensor[B, N, channels] with N = sum of H * W * A, location-major like the anchors.
    """
    flat = [m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, channels) for m in maps]
    return torch.cat(flat, dim=1)


def _shapes(metas, attribute: str, device) -> Tensor:
    """Tensor[B, 2] of ``(h, w)`` taken from each meta's ``attribute``."""
    return torch.tensor([getattr(m, attribute)[:2] for m in metas], device=device)


def rpn_targets(
    cfg: RPNHeadConfig, anchors: Tensor, valid: Tensor, batch, generator=None
) -> RPNTargets:
    """Objectness targets, box targets and weights of every anchor of the batch.

    Args:
        anchors (Tensor[N, 4]): xyxy anchors of all levels.
        valid (Tensor[B, N]): bool, anchors that may be assigned.
        batch: a :class:`~detfn.structures.Batch` (boxes, box_mask, ignore_boxes, ignore_mask).
        generator: randomness of the sampler.

    Returns:
        :class:`RPNTargets`.
    """
    batch_size = valid.shape[0]
    anchors_b = anchors.expand(batch_size, *anchors.shape)  # [B, N, 4]
    assigned = assign_max_iou(
        cfg.assigner,
        anchors_b,
        valid,
        batch.boxes,
        batch.box_mask,
        batch.ignore_boxes,
        batch.ignore_mask,
    ).assigned
    pos, neg = random_sample(cfg.sampler, assigned, generator)
    matched = gather_assigned(assigned, batch.boxes)  # [B, N, 4]
    # Unsampled anchors regress onto themselves: a finite zero target under a zero weight.
    matched = torch.where(pos[..., None], matched, anchors_b)
    box_targets = DeltaXYWHBBoxCoder(cfg.bbox_coder).encode(anchors_b, matched)
    # mmdetection counts at least one positive and one negative per image.
    avg_factor = pos.sum(1).clamp(min=1).sum() + neg.sum(1).clamp(min=1).sum()
    positive, sampled = pos.to(anchors.dtype), (pos | neg).to(anchors.dtype)
    return RPNTargets(positive, sampled, box_targets, positive, avg_factor)


def select_proposals(
    cfg: ProposalConfig,
    coder: DeltaXYWHBBoxCoder,
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


class RPNHead(nn.Module):
    """The RPN head; parameter names follow mmdetection (``rpn_conv``, ``rpn_cls``, ``rpn_reg``)."""

    def __init__(self, cfg: RPNHeadConfig):
        super().__init__()
        self.cfg = cfg
        self.num_anchors = anchors_per_location(cfg.anchor_generator)
        self.rpn_conv = nn.Conv2d(cfg.in_channels, cfg.feat_channels, 3, padding=1)
        self.rpn_cls = nn.Conv2d(cfg.feat_channels, self.num_anchors, 1)
        self.rpn_reg = nn.Conv2d(cfg.feat_channels, self.num_anchors * 4, 1)
        for conv in (self.rpn_conv, self.rpn_cls, self.rpn_reg):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        self.coder = DeltaXYWHBBoxCoder(cfg.bbox_coder)
        self.loss_cls = build(cfg.loss_cls)
        self.loss_bbox = build(cfg.loss_bbox)

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level ``cls_scores`` Tensor[B, A, H, W] (logits) and ``bbox_preds`` [B, 4A, H, W]."""
        if len(feats) != len(self.cfg.anchor_generator.strides):
            raise ValueError(
                f"RPNHead got {len(feats)} feature maps but anchor_generator.strides has "
                f"{len(self.cfg.anchor_generator.strides)} levels"
            )
        cls_scores, bbox_preds = [], []
        for feat in feats:
            hidden = F.relu(self.rpn_conv(feat))
            cls_scores.append(self.rpn_cls(hidden))
            bbox_preds.append(self.rpn_reg(hidden))
        return cls_scores, bbox_preds

    def anchors(self, cls_scores: Sequence[Tensor]) -> list[Tensor]:
        """Per level anchors Tensor[H * W * A, 4] matching the head's output sizes."""
        sizes = [tuple(s.shape[-2:]) for s in cls_scores]
        return grid_anchors(self.cfg.anchor_generator, sizes, cls_scores[0].device)

    def loss(
        self,
        cls_scores: Sequence[Tensor],
        bbox_preds: Sequence[Tensor],
        batch,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """``{"loss_rpn_cls", "loss_rpn_bbox"}`` of a :class:`~detfn.structures.Batch`."""
        anchors = torch.cat(self.anchors(cls_scores))  # [N, 4]
        device = anchors.device
        sizes = [tuple(s.shape[-2:]) for s in cls_scores]
        flags = torch.cat(
            valid_flags(
                self.cfg.anchor_generator, sizes, _shapes(batch.metas, "pad_shape", device)
            ),
            dim=1,
        )  # [B, N]
        img_shapes = _shapes(batch.metas, "img_shape", device)
        flags = inside_flags(anchors, flags, img_shapes, self.cfg.allowed_border)
        targets = rpn_targets(self.cfg, anchors, flags, batch, generator)
        avg_factor = targets.avg_factor
        logits = flatten_levels(cls_scores, 1)  # [B, N, 1]
        deltas = flatten_levels(bbox_preds, 4)  # [B, N, 4]
        # [B * N, 1] logits with float 0/1 targets: one binary problem per anchor.
        loss_cls = self.loss_cls(
            logits.reshape(-1, 1),
            targets.labels.reshape(-1, 1),
            targets.label_weights.reshape(-1),
            avg_factor,
        )
        loss_bbox = self.loss_bbox(
            deltas.reshape(-1, 4),
            targets.box_targets.reshape(-1, 4),
            targets.box_weights.reshape(-1),
            avg_factor,
        )
        return {"loss_rpn_cls": loss_cls, "loss_rpn_bbox": loss_bbox}

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


@register(RPNHeadConfig)
def build_rpn_head(cfg: RPNHeadConfig, **context) -> RPNHead:
    """Build an :class:`RPNHead`; ``context`` is unused (``in_channels`` is in the config)."""
    del context
    return RPNHead(cfg)
