"""The anchor-head base (mmdetection 2.x ``AnchorHead``): one implementation of anchor targets,
losses and dense post-processing, shared by the RPN (one class, no gt labels) and RetinaNet.

A subclass only defines its layers and ``forward_level(feat) -> (cls_score, bbox_pred)``; the
target parts come from the config through the registry, so any registered assigner, sampler,
coder or prior generator can stand in:

* priors: ``build(cfg.anchor_generator)``; priors outside an image's own padded extent, or
  further than ``allowed_border`` outside the image, are invalid;
* assignment: ``build(cfg.assigner)(AssignInput(...))`` for the whole batch at once;
* sampling: ``build(cfg.sampler)(assigned, generator)``. A sampler with ``sampling=True``
  (random) normalises both losses by positives + negatives, one without (pseudo) by the
  positives alone, each image counting at least 1 of each kind (mmdetection's rule);
* box targets: ``build(cfg.bbox_coder).encode(anchor, matched gt)``.

Classification is one sigmoid per class (``cls_out_channels = num_classes``); the target of a
positive is the one-hot row of its gt's class, of a negative the zero row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms

from detfn.config import Config, check_positive, check_unit_interval
from detfn.models.anchors import AnchorGeneratorConfig, inside_flags
from detfn.models.assigners import AssignInput, MaxIoUAssignerConfig, gather_assigned
from detfn.models.coders import DeltaXYWHBBoxCoderConfig
from detfn.models.dense_heads.base import DenseHead, DenseHeadConfig
from detfn.models.losses import (
    CrossEntropyLossConfig,
    FocalLossConfig,
    L1LossConfig,
    SmoothL1LossConfig,
)
from detfn.models.postprocess import pack_per_image
from detfn.models.samplers import PseudoSamplerConfig, RandomSamplerConfig
from detfn.registry import build
from detfn.structures import Batch, Detections

__all__ = [
    "AnchorHead",
    "AnchorHeadConfig",
    "AnchorTargets",
    "DenseTestConfig",
    "flatten_levels",
    "select_detections",
]


@dataclass(frozen=True)
class DenseTestConfig(Config):
    """A dense head's ``test_cfg`` (mmdetection RetinaNet's values).

    Per level the ``nms_pre`` best (prior, class) pairs scoring above ``score_thr`` are decoded;
    then class-wise NMS at ``iou_threshold`` over all levels keeps ``max_per_img`` per image.
    """

    nms_pre: int = 1000
    score_thr: float = 0.05
    iou_threshold: float = 0.5
    max_per_img: int = 100

    def __post_init__(self) -> None:
        check_positive(self, "nms_pre", "max_per_img")
        check_unit_interval(self, "score_thr", "iou_threshold")


@dataclass(frozen=True)
class AnchorHeadConfig(DenseHeadConfig):
    """Fields every anchor head has; subclasses set their own defaults. ``test_cfg`` drives
    :meth:`AnchorHead.predict` (the RPN selects proposals by its own two proposal configs).

    ``in_channels`` and ``num_classes`` are not fields: the detector passes them as build
    context (the neck's ``out_channels`` and the detector's ``num_classes``).
    """

    feat_channels: int = 256
    anchor_generator: AnchorGeneratorConfig = field(default_factory=AnchorGeneratorConfig)
    bbox_coder: DeltaXYWHBBoxCoderConfig = field(default_factory=DeltaXYWHBBoxCoderConfig)
    loss_cls: CrossEntropyLossConfig | FocalLossConfig = field(default_factory=FocalLossConfig)
    loss_bbox: L1LossConfig | SmoothL1LossConfig = field(default_factory=L1LossConfig)
    assigner: MaxIoUAssignerConfig = field(default_factory=MaxIoUAssignerConfig)
    sampler: RandomSamplerConfig | PseudoSamplerConfig = field(default_factory=PseudoSamplerConfig)
    allowed_border: float = -1.0
    test_cfg: DenseTestConfig = field(default_factory=DenseTestConfig)

    def __post_init__(self) -> None:
        check_positive(self, "feat_channels")


class AnchorTargets(NamedTuple):
    """Per-anchor training targets of a batch.

    Attributes:
        labels (Tensor[B, N]): int64 class of sampled positives, ``num_classes`` elsewhere.
        label_weights (Tensor[B, N]): 1 for sampled anchors (positive or negative), else 0.
        box_targets (Tensor[B, N, 4]): encoded targets to the matched gt (anchors' own where
            unmatched: finite values under a zero weight).
        box_weights (Tensor[B, N]): 1 for sampled positives, else 0.
        avg_factor (Tensor[]): the loss normaliser (see the module docstring).
    """

    labels: Tensor
    label_weights: Tensor
    box_targets: Tensor
    box_weights: Tensor
    avg_factor: Tensor


def flatten_levels(maps: Sequence[Tensor], channels: int) -> Tensor:
    """Concatenate per-level head outputs in prior order.

    Args:
        maps: per level Tensor[B, A * channels, H, W].
        channels: values per prior (classes for scores, 4 for deltas).

    Returns:
        Tensor[B, N, channels] with N = sum of H * W * A, location-major like the priors.
    """
    flat = [m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, channels) for m in maps]
    return torch.cat(flat, dim=1)


def select_detections(
    cfg: DenseTestConfig,
    coder,
    priors: Sequence[Tensor],
    scores: Sequence[Tensor],
    preds: Sequence[Tensor],
    img_shapes: Tensor,
) -> Detections:
    """Dense detections of a batch: per-level top-k, decoding, one class-wise NMS for the batch.

    mmdetection's ``filter_scores_and_topk``: on each level the (prior, class) pairs above
    ``score_thr`` are ranked and the best ``nms_pre`` decoded; torchvision's RetinaNet does the
    same. NMS is keyed by (image, class).

    Args:
        priors: per level Tensor[n_l, 4].
        scores: per level Tensor[B, n_l, C] probabilities.
        preds: per level Tensor[B, n_l, 4] box predictions the coder decodes.
        img_shapes (Tensor[B, 2]): ``(h, w)`` to clip to.
    """
    batch_size, num_classes = img_shapes.shape[0], scores[0].shape[-1]
    kept_boxes, kept_scores, kept_labels, kept_valid = [], [], [], []
    for prior, score, pred in zip(priors, scores, preds):
        flat = score.reshape(batch_size, -1)  # [B, n_l * C], prior-major
        k = min(cfg.nms_pre, flat.shape[1])
        best, index = flat.topk(k, dim=1)  # [B, k], sorted
        which = index // num_classes  # [B, k] prior index
        kept_labels.append(index % num_classes)
        kept_scores.append(best)
        kept_valid.append(best > cfg.score_thr)
        chosen = pred.gather(1, which[..., None].expand(-1, -1, pred.shape[-1]))
        kept_boxes.append(coder.decode(prior[which], chosen, max_shape=img_shapes))
    boxes, score = torch.cat(kept_boxes, 1), torch.cat(kept_scores, 1)  # [B, K, 4], [B, K]
    labels, valid = torch.cat(kept_labels, 1), torch.cat(kept_valid, 1)
    img, idx = valid.nonzero(as_tuple=True)
    cand_boxes, cand_scores, cand_labels = boxes[img, idx], score[img, idx], labels[img, idx]
    keep = batched_nms(
        cand_boxes.float(),
        cand_scores.float(),
        img * num_classes + cand_labels,
        cfg.iou_threshold,
    )
    return pack_per_image(
        cand_boxes[keep],
        cand_scores[keep],
        cand_labels[keep],
        img[keep],
        batch_size,
        cfg.max_per_img,
    )


class AnchorHead(DenseHead):
    """Targets, losses and post-processing of an anchor-based dense head.

    Subclasses create their layers, then call :meth:`build_parts`, and define
    :meth:`forward_level`.
    """

    cfg: AnchorHeadConfig
    num_classes: int

    def build_parts(self, cfg: AnchorHeadConfig, num_classes: int) -> None:
        """Build the configured target parts and losses (called by subclasses' ``__init__``)."""
        self.cfg = cfg
        self.num_classes = num_classes
        self.prior_generator = build(cfg.anchor_generator)
        self.num_anchors = self.prior_generator.num_base_priors
        self.assigner = build(cfg.assigner)
        self.sampler = build(cfg.sampler)
        self.coder = build(cfg.bbox_coder)
        self.loss_cls = build(cfg.loss_cls)
        self.loss_bbox = build(cfg.loss_bbox)

    def forward_level(self, feat: Tensor) -> tuple[Tensor, Tensor]:
        """``(cls_score [B, A * C, H, W], bbox_pred [B, A * 4, H, W])`` of one level."""
        raise NotImplementedError(f"{type(self).__name__} must define forward_level()")

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level ``cls_scores`` [B, A * C, H, W] (logits) and ``bbox_preds`` [B, 4A, H, W]."""
        levels = self.prior_generator.num_levels
        if len(feats) != levels:
            raise ValueError(
                f"{type(self).__name__} got {len(feats)} feature maps but anchor_generator.strides "
                f"has {levels} levels; the neck's num_outs must match"
            )
        outs = [self.forward_level(feat) for feat in feats]
        return [o[0] for o in outs], [o[1] for o in outs]

    def anchors(self, maps: Sequence[Tensor]) -> list[Tensor]:
        """Per level anchors Tensor[H * W * A, 4] matching the head's output sizes."""
        sizes = [tuple(m.shape[-2:]) for m in maps]
        return self.prior_generator.grid_priors(sizes, maps[0].device)

    def gt_labels(self, batch: Batch) -> Tensor:
        """Tensor[B, M] class of each gt; the RPN overrides it (every object is class 0)."""
        return batch.labels

    def valid_anchors(self, anchors: Tensor, maps: Sequence[Tensor], batch: Batch) -> Tensor:
        """Tensor[B, N] bool: anchors on each image's own padded extent and inside the border."""
        sizes = [tuple(m.shape[-2:]) for m in maps]
        pad_shapes = torch.tensor([m.pad_shape[:2] for m in batch.metas], device=anchors.device)
        flags = torch.cat(self.prior_generator.valid_flags(sizes, pad_shapes), dim=1)
        img_shapes = batch.img_shapes.to(anchors.device)
        return inside_flags(anchors, flags, img_shapes, self.cfg.allowed_border)

    def targets(
        self,
        anchors: Tensor,
        valid: Tensor,
        num_per_level: tuple[int, ...],
        batch: Batch,
        generator: torch.Generator | None = None,
    ) -> AnchorTargets:
        """Assign, sample and encode the targets of every anchor of the batch.

        Args:
            anchors (Tensor[N, 4]): xyxy anchors of all levels.
            valid (Tensor[B, N]): bool, anchors that may be assigned.
            num_per_level: anchors per level (for level-aware assigners).
            batch: ground truth (boxes, labels, box_mask, ignore regions).
            generator: randomness of the sampler.
        """
        batch_size = valid.shape[0]
        anchors_b = anchors.expand(batch_size, *anchors.shape)  # [B, N, 4]
        labels_gt = self.gt_labels(batch)
        assigned = self.assigner(
            AssignInput(
                anchors_b,
                valid,
                num_per_level,
                batch.boxes,
                batch.box_mask,
                batch.ignore_boxes,
                batch.ignore_mask,
                labels_gt,
            )
        ).assigned
        pos, neg = self.sampler(assigned, generator)
        matched = gather_assigned(assigned, batch.boxes)  # [B, N, 4]
        # Unsampled anchors regress onto themselves: a finite target under a zero weight.
        matched = torch.where(pos[..., None], matched, anchors_b)
        box_targets = self.coder.encode(anchors_b, matched)
        labels = gather_assigned(assigned, labels_gt, fill=self.num_classes)
        labels = torch.where(pos, labels, torch.full_like(labels, self.num_classes))
        avg_factor = pos.sum(1).clamp(min=1).sum()
        if self.sampler.sampling:
            avg_factor = avg_factor + neg.sum(1).clamp(min=1).sum()
        positive, sampled = pos.to(anchors.dtype), (pos | neg).to(anchors.dtype)
        return AnchorTargets(labels, sampled, box_targets, positive, avg_factor)

    def loss_by_outputs(
        self,
        cls_scores: Sequence[Tensor],
        bbox_preds: Sequence[Tensor],
        batch: Batch,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """``{"loss_cls", "loss_bbox"}`` (named by :meth:`loss_names`) of the head's outputs."""
        per_level = self.anchors(cls_scores)
        anchors = torch.cat(per_level)  # [N, 4]
        valid = self.valid_anchors(anchors, cls_scores, batch)
        num_per_level = tuple(a.shape[0] for a in per_level)
        targets = self.targets(anchors, valid, num_per_level, batch, generator)
        logits = flatten_levels(cls_scores, self.num_classes).reshape(-1, self.num_classes)
        deltas = flatten_levels(bbox_preds, 4).reshape(-1, 4)
        loss_cls = self.loss_cls(
            logits,
            self.class_targets(targets.labels.reshape(-1), logits.dtype),
            targets.label_weights.reshape(-1),
            targets.avg_factor,
        )
        loss_bbox = self.loss_bbox(
            deltas,
            targets.box_targets.reshape(-1, 4),
            targets.box_weights.reshape(-1),
            targets.avg_factor,
        )
        cls_name, bbox_name = self.loss_names()
        return {cls_name: loss_cls, bbox_name: loss_bbox}

    def class_targets(self, labels: Tensor, dtype: torch.dtype) -> Tensor:
        """The classification loss's target for int labels (Tensor[N], ``num_classes`` is the
        background): the focal loss takes the labels themselves (its label path gives the
        one-hot formula's numbers in fewer passes over ``[N, C]``), the cross-entropy one-hot
        rows of ``dtype`` (Tensor[N, C]; background the all-zero row)."""
        if isinstance(self.cfg.loss_cls, FocalLossConfig):
            return labels
        return F.one_hot(labels, self.num_classes + 1)[:, :-1].to(dtype)

    def loss_names(self) -> tuple[str, str]:
        """Keys of the two losses (the RPN prefixes them with ``rpn``)."""
        return "loss_cls", "loss_bbox"

    def loss(
        self, feats: Sequence[Tensor], batch: Batch, *, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """The dense-head contract: losses of a batch from the neck's features."""
        cls_scores, bbox_preds = self(feats)
        return self.loss_by_outputs(cls_scores, bbox_preds, batch, generator)

    def predict(self, feats: Sequence[Tensor], img_shapes: Tensor) -> Detections:
        """Detections in the resized-image frame (see :func:`select_detections`)."""
        cls_scores, bbox_preds = self(feats)
        batch_size = img_shapes.shape[0]
        scores = [
            s.permute(0, 2, 3, 1).reshape(batch_size, -1, self.num_classes).sigmoid()
            for s in cls_scores
        ]
        deltas = [d.permute(0, 2, 3, 1).reshape(batch_size, -1, 4) for d in bbox_preds]
        return select_detections(
            self.cfg.test_cfg,
            self.coder,
            self.anchors(cls_scores),
            scores,
            deltas,
            img_shapes.to(scores[0].device),
        )
