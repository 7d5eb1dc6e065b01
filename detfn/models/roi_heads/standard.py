"""StandardRoIHead: the second stage of Faster R-CNN, batched.

Training (mmdetection's ``StandardRoIHead.forward_train`` semantics, without its per-image loop):
the ground-truth boxes are appended to each image's proposals (``add_gt_as_proposals``), the
padded ``[B, P + M]`` candidates are assigned with MaxIoU (0.5 / 0.5 / 0.5, no low-quality
matches) and sampled (512 per image, 25 % positive) in one call each, and the sampled RoIs of all
images are gathered into one ``[K, 5]`` tensor for pooling, the box head and its loss.

Testing: class-specific boxes are decoded and clipped to each image, then one batched multi-class
NMS (score > 0.05, IoU 0.5, 100 per image) gives padded :class:`Detections` in the resized-image
frame (:func:`detfn.models.postprocess.rescale_detections` maps them back).

With ``mask_branch`` set the head is Mask R-CNN's (mmdetection's ``StandardRoIHead`` with a
``mask_head``): the positive sampled RoIs train the mask branch, and at test time the final
detections get masks pasted into the original images (:meth:`StandardRoIHead.to_images`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor, nn

from detfn.config import Config, check, check_positive, check_unit_interval
from detfn.models.assigners import AssignInput, MaxIoUAssignerConfig, gather_assigned
from detfn.models.postprocess import Detections, multiclass_nms, rescale_detections
from detfn.models.roi_heads.bbox_head import Shared2FCBBoxHeadConfig
from detfn.models.roi_heads.mask_branch import MaskBranchConfig
from detfn.models.roi_heads.roi_extractor import SingleRoIExtractorConfig
from detfn.models.samplers import PseudoSamplerConfig, RandomSamplerConfig
from detfn.registry import build, register
from detfn.structures import Batch, ImageDetections, ImageMeta

__all__ = [
    "RoISamples",
    "StandardRoIHead",
    "StandardRoIHeadConfig",
    "check_nms_settings",
    "detections_of_rois",
    "mask_loss_of_samples",
    "rois_from_mask",
    "sample_rois",
]


def _rcnn_assigner() -> MaxIoUAssignerConfig:
    return MaxIoUAssignerConfig(
        pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5, match_low_quality=False
    )


def _rcnn_sampler() -> RandomSamplerConfig:
    return RandomSamplerConfig(
        num=512, pos_fraction=0.25, neg_pos_ub=-1.0, add_gt_as_proposals=True
    )


def check_nms_settings(cfg: Config) -> None:
    """Check a config's test-time ``score_thr``, ``nms_iou`` (both in [0, 1]) and
    ``max_per_img`` (positive), the fields a standard and a cascade RoI head share."""
    check_unit_interval(cfg, "score_thr", "nms_iou")
    check_positive(cfg, "max_per_img")


@dataclass(frozen=True)
class StandardRoIHeadConfig(Config):
    """R-CNN stage settings (train_cfg.rcnn and test_cfg.rcnn of faster_rcnn_r50_fpn_1x_coco).

    Attributes:
        bbox_roi_extractor: RoIAlign over the pyramid.
        bbox_head: the fc head (``num_classes`` lives there).
        assigner: proposal-to-gt matching for training.
        sampler: RoIs per image and positive fraction for training.
        score_thr: test-time minimum class score (strictly greater).
        nms_iou: test-time per-class NMS IoU threshold.
        max_per_img: detections kept per image.
        mask_branch: Mask R-CNN's mask extractor and head (None: boxes only).
    """

    bbox_roi_extractor: SingleRoIExtractorConfig = field(default_factory=SingleRoIExtractorConfig)
    bbox_head: Shared2FCBBoxHeadConfig = field(default_factory=Shared2FCBBoxHeadConfig)
    assigner: MaxIoUAssignerConfig = field(default_factory=_rcnn_assigner)
    sampler: RandomSamplerConfig | PseudoSamplerConfig = field(default_factory=_rcnn_sampler)
    score_thr: float = 0.05
    nms_iou: float = 0.5
    max_per_img: int = 100
    mask_branch: MaskBranchConfig | None = None

    def __post_init__(self) -> None:
        check_nms_settings(self)
        extractor, head = self.bbox_roi_extractor, self.bbox_head
        check(
            self,
            "bbox_head",
            head.roi_feat_size == extractor.output_size,
            f"roi_feat_size {head.roi_feat_size} must equal bbox_roi_extractor.output_size "
            f"{extractor.output_size}",
        )


class RoISamples(NamedTuple):
    """Sampled RoIs of a batch with their targets.

    Attributes:
        rois (Tensor[K, 5]): ``(batch_index, x1, y1, x2, y2)``, detached.
        labels (Tensor[K]): int64 gt class for positives, ``num_classes`` for negatives.
        gt_boxes (Tensor[K, 4]): xyxy matched gt box (zeros for negatives).
        gt_index (Tensor[K]): int64 row of the matched gt in its image (-1 for negatives).
        is_gt (Tensor[K]): bool, the RoI is a gt box added as a proposal (mmdet's
            ``pos_is_gt``); a cascade drops these rows from the refined proposals.
    """

    rois: Tensor
    labels: Tensor
    gt_boxes: Tensor
    gt_index: Tensor
    is_gt: Tensor

    @property
    def pos(self) -> Tensor:
        """Tensor[K] bool: the positive RoIs (matched to a gt)."""
        return self.gt_index >= 0


def rois_from_mask(boxes: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Gather the masked boxes of a padded batch into RoI format.

    Args:
        boxes (Tensor[B, N, 4]): xyxy.
        mask (Tensor[B, N]): bool, which boxes to take.

    Returns:
        rois (Tensor[K, 5]) ``(batch_index, x1, y1, x2, y2)`` in image-major order, and the
        ``(image, index)`` pair (Tensor[K] each) every RoI came from.
    """
    img, idx = torch.nonzero(mask, as_tuple=True)
    rois = torch.cat([img[:, None].to(boxes.dtype), boxes[img, idx]], dim=1)  # [K, 5]
    return rois, img, idx


def sample_rois(
    cfg: StandardRoIHeadConfig,
    proposals: Tensor,
    proposal_mask: Tensor,
    batch: Batch,
    generator: torch.Generator | None = None,
    *,
    num_classes: int,
) -> RoISamples:
    """Assign and sample training RoIs for the whole batch at once.

    Args:
        cfg: the head config; its assigner and sampler are built through the registry, so any
            registered assigner or sampler config works.
        proposals (Tensor[B, P, 4]): xyxy RPN proposals (gradients are cut here).
        proposal_mask (Tensor[B, P]): bool, True for real proposals.
        batch: ground truth ``boxes [B, M, 4]``, ``labels [B, M]``, ``box_mask`` and ignore regions.
        generator: randomness of the sampler.
        num_classes: foreground classes (the detector's); negatives get this label.
    """
    assigner, sampler = build(cfg.assigner), build(cfg.sampler)
    # RandomSampler's option; a sampler without it (pseudo) adds no gt boxes, as in mmdetection.
    add_gt_as_proposals = bool(getattr(cfg.sampler, "add_gt_as_proposals", False))
    _check_gt_labels(batch, num_classes)
    boxes, mask = proposals.detach(), proposal_mask
    if add_gt_as_proposals:
        boxes = torch.cat([boxes, batch.boxes.to(boxes.dtype)], dim=1)  # [B, P + M, 4]
        mask = torch.cat([mask, batch.box_mask], dim=1)  # [B, P + M]
    assigned = assigner(
        AssignInput(
            boxes,
            mask,
            (),
            batch.boxes,
            batch.box_mask,
            batch.ignore_boxes,
            batch.ignore_mask,
            batch.labels,
        )
    ).assigned
    if add_gt_as_proposals:
        assigned = _gt_rows_match_themselves(assigned, batch.box_mask)
    sample = sampler(assigned, generator)
    matched_boxes = gather_assigned(assigned, batch.boxes.to(boxes.dtype))  # [B, N, 4]
    matched_labels = gather_assigned(assigned, batch.labels, fill=num_classes)  # [B, N]
    labels = torch.where(
        sample.pos_mask, matched_labels, torch.full_like(matched_labels, num_classes)
    )
    rois, img, idx = rois_from_mask(boxes, sample.pos_mask | sample.neg_mask)
    gt_index = torch.where(sample.pos_mask, assigned - 1, torch.full_like(assigned, -1))
    is_gt = torch.zeros_like(mask)
    if add_gt_as_proposals:
        is_gt[:, proposals.shape[1] :] = batch.box_mask
    return RoISamples(
        rois, labels[img, idx], matched_boxes[img, idx], gt_index[img, idx], is_gt[img, idx]
    )


def _gt_rows_match_themselves(assigned: Tensor, gt_mask: Tensor) -> Tensor:
    """mmdet's ``AssignResult.add_gt_``: appended gt row j is matched to gt j (1-based j + 1),
    even when an identical gt box would win the IoU argmax."""
    num_gt = gt_mask.shape[1]
    own = torch.arange(1, num_gt + 1, device=assigned.device).expand_as(gt_mask)  # [B, M]
    gt_rows = assigned[:, assigned.shape[1] - num_gt :]
    gt_rows = torch.where(gt_mask, own, gt_rows)
    return torch.cat([assigned[:, : assigned.shape[1] - num_gt], gt_rows], dim=1)


def _check_gt_labels(batch: Batch, num_classes: int) -> None:
    labels = batch.labels[batch.box_mask]
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"StandardRoIHead: gt labels must be in [0, {num_classes}) (the detector's "
            f"num_classes), "
            f"got range [{int(labels.min())}, {int(labels.max())}]"
        )


class StandardRoIHead(nn.Module):
    """Extractor + box head: ``loss(...) -> dict`` for training, ``predict(...) -> Detections``."""

    def __init__(self, cfg: StandardRoIHeadConfig, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        self.bbox_roi_extractor = build(cfg.bbox_roi_extractor)
        self.bbox_head = build(cfg.bbox_head, in_channels=in_channels, num_classes=num_classes)
        self.mask_branch = None
        if cfg.mask_branch is not None:
            self.mask_branch = build(
                cfg.mask_branch, in_channels=in_channels, num_classes=num_classes
            )

    def forward(self, feats: tuple[Tensor, ...], rois: Tensor) -> tuple[Tensor, Tensor]:
        """``(cls_score [K, C + 1], bbox_pred [K, 4C])`` of ``rois`` (Tensor[K, 5])."""
        return self.bbox_head(self.bbox_roi_extractor(feats, rois))

    def loss(
        self,
        feats: tuple[Tensor, ...],
        proposals: Tensor,
        proposal_mask: Tensor,
        batch: Batch,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """``loss_cls``, ``loss_bbox``, ``acc`` (percent; not a loss) and, with a mask branch,
        ``loss_mask`` of a training batch.

        Args:
            feats: pyramid levels ``Tensor[B, C, H_l, W_l]``, finest first.
            proposals (Tensor[B, P, 4]), proposal_mask (Tensor[B, P]): RPN output.
            batch: the ground truth.
            generator: randomness of the RoI sampler.
        """
        samples = sample_rois(
            self.cfg, proposals, proposal_mask, batch, generator, num_classes=self.num_classes
        )
        losses, _, _ = self.loss_of_samples(feats, samples, batch)
        return losses

    def loss_of_samples(
        self, feats: tuple[Tensor, ...], samples: RoISamples, batch: Batch
    ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """The box (and mask) losses of already sampled RoIs, with the box head's outputs.

        The outputs ``cls_score`` (Tensor[K, C + 1]) and ``bbox_pred`` (Tensor[K, 4C or 4]) come
        back with the losses because a cascade stage refines its sampled RoIs with them.

        Returns:
            ``(losses, cls_score, bbox_pred)``; ``losses`` as :meth:`loss`.
        """
        cls_score, bbox_pred = self(feats, samples.rois)
        losses = self.bbox_head.loss(
            cls_score, bbox_pred, samples.rois, samples.labels, samples.gt_boxes
        )
        if self.mask_branch is not None:
            losses.update(mask_loss_of_samples(self.mask_branch, feats, samples, batch))
        return losses, cls_score, bbox_pred

    def predict(
        self,
        feats: tuple[Tensor, ...],
        proposals: Tensor,
        proposal_mask: Tensor,
        img_shapes: Tensor,
    ) -> Detections:
        """Detections of a batch in the resized-image frame.

        Args:
            feats: pyramid levels, finest first.
            proposals (Tensor[B, P, 4]), proposal_mask (Tensor[B, P]): RPN output.
            img_shapes (Tensor[B, 2]): ``(H, W)`` of each resized image before padding.

        Returns:
            :class:`Detections` with ``D = max_per_img``.
        """
        rois, img, idx = rois_from_mask(proposals.detach(), proposal_mask)
        cls_score, bbox_pred = self(feats, rois)
        return detections_of_rois(
            self.cfg,
            self.bbox_head,
            rois,
            img,
            idx,
            cls_score,
            bbox_pred,
            img_shapes,
            proposal_mask,
        )

    def to_images(
        self, feats: tuple[Tensor, ...], dets: Detections, metas: list[ImageMeta]
    ) -> list[ImageDetections]:
        """Per image, the detections in original pixels; with a mask branch, their masks
        (``Tensor[N, H_ori, W_ori]`` bool, pasted at ``mask_thr_binary``)."""
        if self.mask_branch is None:
            return rescale_detections(dets, metas)
        return self.mask_branch.predict(feats, dets, metas)


def detections_of_rois(
    cfg: StandardRoIHeadConfig,
    bbox_head: nn.Module,
    rois: Tensor,
    img: Tensor,
    idx: Tensor,
    cls_score: Tensor,
    bbox_pred: Tensor,
    img_shapes: Tensor,
    proposal_mask: Tensor,
) -> Detections:
    """Decode the box head's outputs on ``rois`` and keep the NMS survivors (test time).

    Args:
        cfg: ``score_thr``, ``nms_iou`` and ``max_per_img``.
        bbox_head: decodes ``bbox_pred`` onto ``rois`` with its coder.
        rois (Tensor[K, 5]), img (Tensor[K]), idx (Tensor[K]): the RoIs and the padded
            ``[B, P]`` slot each came from (:func:`rois_from_mask`).
        cls_score (Tensor[K, C + 1]): logits (a cascade passes the mean over its stages).
        bbox_pred (Tensor[K, 4C or 4]): deltas.
        img_shapes (Tensor[B, 2]): ``(H, W)`` of each resized image, for clipping.
        proposal_mask (Tensor[B, P]): the real slots.
    """
    num_classes = bbox_head.num_classes
    scores, boxes = bbox_head.decode(rois, cls_score, bbox_pred, img_shapes[img])
    batch, num = proposal_mask.shape
    # Back to the padded [B, P, ...] layout; padded slots stay masked out.
    padded_scores = scores.new_zeros(batch, num, num_classes)
    padded_scores = padded_scores.index_put((img, idx), scores[:, :num_classes])
    padded_boxes = boxes.new_zeros(batch, num, num_classes, 4)
    padded_boxes = padded_boxes.index_put((img, idx), boxes)
    return multiclass_nms(
        padded_boxes, padded_scores, proposal_mask, cfg.score_thr, cfg.nms_iou, cfg.max_per_img
    )


def mask_loss_of_samples(
    branch: nn.Module, feats: tuple[Tensor, ...], samples: RoISamples, batch: Batch
) -> dict[str, Tensor]:
    """``{"loss_mask"}`` of the positive sampled RoIs (mmdetection's ``pos_bboxes``, gt boxes
    added as proposals included), targets from each one's assigned gt mask; RoIs are clipped to
    each image's padded shape for the targets, as mmdetection's ``mask_target``."""
    if batch.masks is None:
        raise ValueError(
            "the RoI head has a mask branch but the batch has no masks: load the dataset "
            "with_mask=True (CocoDatasetConfig.with_mask)"
        )
    pos = samples.pos
    pad_shapes = torch.tensor(
        [m.pad_shape[:2] for m in batch.metas], dtype=samples.rois.dtype, device=samples.rois.device
    )
    return branch.loss(
        feats,
        samples.rois[pos],
        samples.gt_index[pos],
        samples.labels[pos],
        batch.masks,
        pad_shapes,
    )


@register(StandardRoIHeadConfig)
def build_standard_roi_head(
    cfg: StandardRoIHeadConfig, *, in_channels: int, num_classes: int, **context
) -> StandardRoIHead:
    """Build the RoI head on the neck's ``in_channels`` for ``num_classes`` classes."""
    del context
    return StandardRoIHead(cfg, in_channels, num_classes)
