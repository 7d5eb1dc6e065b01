"""CascadeRoIHead: Cascade R-CNN (and, with a mask branch per stage, Cascade Mask R-CNN), batched.

A cascade is a tuple of stage configs - each a :class:`StandardRoIHeadConfig` (its own RoI
extractor, box head with its coder stds, assigner IoU and sampler, optional mask branch) - plus
the inter-stage policy of mmdetection 2.x's ``CascadeRoIHead``:

* training: stage ``i`` assigns and samples its own RoIs from its input (the sampler adds the gt
  boxes again at every stage), and its losses are multiplied by ``stage_loss_weights[i]``
  (keys ``s{i}.loss_cls``, ``s{i}.loss_bbox``, ``s{i}.loss_mask``; ``s{i}.acc`` unscaled).
  Between stages the sampled RoIs are regressed by the stage's deltas under ``no_grad``
  (mmdetection's ``refine_bboxes``) and the RoIs that were gt boxes added as proposals are
  dropped, so the next stage sees the previous stage's refined *sampled* RoIs;
* test: every proposal goes through all stages, refined after each but the last; the class
  score is the softmax of the mean of the stages' logits and the box is the last stage's
  regression of the twice-refined RoI; masks (mask variant) are the mean of the stages' mask
  probabilities on the final detections, pasted once.

The stage configs' own ``score_thr``, ``nms_iou`` and ``max_per_img`` are not read: the
cascade's test settings are its own fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from detfn.config import Config, check
from detfn.models.assigners import MaxIoUAssignerConfig
from detfn.models.coders import DeltaXYWHBBoxCoderConfig
from detfn.models.losses import SmoothL1LossConfig
from detfn.models.postprocess import Detections, rescale_detections
from detfn.models.roi_heads.bbox_head import Shared2FCBBoxHeadConfig
from detfn.models.roi_heads.mask_branch import MaskBranchConfig, masks_for_detections
from detfn.models.roi_heads.standard import (
    StandardRoIHead,
    StandardRoIHeadConfig,
    check_nms_settings,
    detections_of_rois,
    rois_from_mask,
    sample_rois,
)
from detfn.registry import register
from detfn.structures import Batch, ImageDetections, ImageMeta

__all__ = [
    "CASCADE_IOUS",
    "CASCADE_TARGET_STDS",
    "CascadeRoIHead",
    "CascadeRoIHeadConfig",
    "build_cascade_roi_head",
    "cascade_stage",
    "pad_rois",
    "refine_rois",
]

# cascade_rcnn_r50_fpn: each stage trains on higher-quality RoIs (IoU) with tighter deltas (stds).
CASCADE_IOUS = (0.5, 0.6, 0.7)
CASCADE_TARGET_STDS = (
    (0.1, 0.1, 0.2, 0.2),
    (0.05, 0.05, 0.1, 0.1),
    (0.033, 0.033, 0.067, 0.067),
)


def cascade_stage(
    iou: float, target_stds: tuple[float, float, float, float], mask: bool = False
) -> StandardRoIHeadConfig:
    """One stage of cascade_rcnn_r50_fpn: MaxIoU at ``iou`` (pos = neg = min_pos, no low-quality
    matches), the Faster R-CNN sampler (512, 25 %, gts added), a class-agnostic Shared2FC head
    with Smooth L1 (beta 1) and the stage's ``target_stds``; ``mask`` adds a mask branch."""
    return StandardRoIHeadConfig(
        bbox_head=Shared2FCBBoxHeadConfig(
            bbox_coder=DeltaXYWHBBoxCoderConfig(target_stds=target_stds),
            reg_class_agnostic=True,
            loss_bbox=SmoothL1LossConfig(beta=1.0),
        ),
        assigner=MaxIoUAssignerConfig(
            pos_iou_thr=iou, neg_iou_thr=iou, min_pos_iou=iou, match_low_quality=False
        ),
        mask_branch=MaskBranchConfig() if mask else None,
    )


def _default_stages() -> tuple[StandardRoIHeadConfig, ...]:
    return tuple(cascade_stage(i, s) for i, s in zip(CASCADE_IOUS, CASCADE_TARGET_STDS))


@dataclass(frozen=True)
class CascadeRoIHeadConfig(Config):
    """mmdet ``CascadeRoIHead`` settings of cascade_rcnn_r50_fpn_1x_coco.

    Attributes:
        stages: one config per stage, in order.
        stage_loss_weights: multiplier of each stage's losses.
        score_thr, nms_iou, max_per_img: test-time ``multiclass_nms`` settings.
    """

    stages: tuple[StandardRoIHeadConfig, ...] = field(default_factory=_default_stages)
    stage_loss_weights: tuple[float, ...] = (1.0, 0.5, 0.25)
    score_thr: float = 0.05
    nms_iou: float = 0.5
    max_per_img: int = 100

    def __post_init__(self) -> None:
        check_nms_settings(self)
        check(self, "stages", len(self.stages) >= 1, "needs at least one stage")
        check(
            self,
            "stage_loss_weights",
            len(self.stage_loss_weights) == len(self.stages),
            f"has {len(self.stage_loss_weights)} weights for {len(self.stages)} stages",
        )
        with_mask = [s.mask_branch is not None for s in self.stages]
        check(
            self,
            "stages",
            all(with_mask) or not any(with_mask),
            f"either every stage has a mask_branch or none (got {with_mask})",
        )

    @property
    def with_mask(self) -> bool:
        """The stages have mask branches (Cascade Mask R-CNN)."""
        return self.stages[0].mask_branch is not None


def refine_rois(
    bbox_head: nn.Module,
    rois: Tensor,
    labels: Tensor,
    cls_score: Tensor,
    bbox_pred: Tensor,
    img_shapes: Tensor,
) -> Tensor:
    """A stage's regression applied to its RoIs (mmdetection's ``regress_by_class``).

    Args:
        bbox_head: the stage's box head (its coder and stds decode the deltas).
        rois (Tensor[K, 5]): ``(batch_index, x1, y1, x2, y2)``.
        labels (Tensor[K]): int64 class whose deltas to use; background (``num_classes``) takes
            the argmax of the foreground logits instead, as mmdetection does (irrelevant for a
            class-agnostic head).
        cls_score (Tensor[K, C + 1]), bbox_pred (Tensor[K, 4C or 4]): the stage's outputs.
        img_shapes (Tensor[B, 2]): ``(H, W)``; the refined boxes are clipped to their image.

    Returns:
        Tensor[K, 5]: the refined RoIs, same batch indices.
    """
    num_classes = bbox_head.num_classes
    foreground = cls_score[:, :num_classes].argmax(dim=1)
    labels = torch.where(labels == num_classes, foreground, labels)
    deltas = bbox_head._class_deltas(bbox_pred, labels)  # [K, 4]
    shapes = img_shapes[rois[:, 0].long()]  # [K, 2]
    boxes = bbox_head.coder.decode(rois[:, 1:], deltas, max_shape=shapes)
    return torch.cat([rois[:, :1], boxes], dim=1)


def pad_rois(rois: Tensor, num_images: int) -> tuple[Tensor, Tensor]:
    """Image-major RoIs back to a padded proposal batch (the next stage's input).

    Args:
        rois (Tensor[K, 5]): ``(batch_index, x1, y1, x2, y2)``, sorted by batch index.
        num_images: B.

    Returns:
        boxes (Tensor[B, P, 4]) and mask (Tensor[B, P]) bool, ``P`` the most RoIs of one image.
    """
    img = rois[:, 0].long()
    counts = torch.bincount(img, minlength=num_images)  # [B]
    width = int(counts.max()) if img.numel() else 0
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(img.shape[0], device=rois.device) - starts[img]
    boxes = rois.new_zeros(num_images, width, 4)
    mask = torch.zeros(num_images, width, dtype=torch.bool, device=rois.device)
    boxes[img, slot] = rois[:, 1:]
    mask[img, slot] = True
    return boxes, mask


class CascadeRoIHead(nn.Module):
    """Stages of :class:`StandardRoIHead`: ``loss`` (weighted, refined between stages),
    ``predict`` (mean logits, last-stage boxes) and ``to_images`` (mean mask probabilities)."""

    def __init__(self, cfg: CascadeRoIHeadConfig, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        self.stages = nn.ModuleList(
            StandardRoIHead(stage, in_channels, num_classes) for stage in cfg.stages
        )

    def loss(
        self,
        feats: tuple[Tensor, ...],
        proposals: Tensor,
        proposal_mask: Tensor,
        batch: Batch,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """``s{i}.loss_cls``, ``s{i}.loss_bbox``, ``s{i}.acc`` (and ``s{i}.loss_mask``) per stage.

        Args:
            feats: pyramid levels, finest first.
            proposals (Tensor[B, P, 4]), proposal_mask (Tensor[B, P]): RPN output.
            batch: the ground truth.
            generator: randomness of every stage's sampler.
        """
        img_shapes = batch.img_shapes.to(proposals.device)
        boxes, mask = proposals.detach(), proposal_mask
        losses: dict[str, Tensor] = {}
        last = len(self.stages) - 1
        for i, (stage, weight) in enumerate(zip(self.stages, self.cfg.stage_loss_weights)):
            samples = sample_rois(
                stage.cfg, boxes, mask, batch, generator, num_classes=self.num_classes
            )
            stage_losses, cls_score, bbox_pred = stage.loss_of_samples(feats, samples, batch)
            for name, value in stage_losses.items():
                losses[f"s{i}.{name}"] = value * weight if "loss" in name else value
            if i < last:
                with torch.no_grad():
                    refined = refine_rois(
                        stage.bbox_head,
                        samples.rois,
                        samples.labels,
                        cls_score,
                        bbox_pred,
                        img_shapes,
                    )
                # mmdetection's refine_bboxes drops the rows that were gt boxes (pos_is_gt).
                boxes, mask = pad_rois(refined[~samples.is_gt], len(batch))
        return losses

    def predict(
        self,
        feats: tuple[Tensor, ...],
        proposals: Tensor,
        proposal_mask: Tensor,
        img_shapes: Tensor,
    ) -> Detections:
        """Detections of a batch in the resized-image frame (``D = max_per_img``).

        Args:
            feats: pyramid levels, finest first.
            proposals (Tensor[B, P, 4]), proposal_mask (Tensor[B, P]): RPN output.
            img_shapes (Tensor[B, 2]): ``(H, W)`` of each resized image before padding.
        """
        rois, img, idx = rois_from_mask(proposals.detach(), proposal_mask)
        logits = []
        last = len(self.stages) - 1
        for i, stage in enumerate(self.stages):
            cls_score, bbox_pred = stage(feats, rois)
            logits.append(cls_score)
            if i < last:
                background = torch.full_like(img, self.num_classes)
                rois = refine_rois(
                    stage.bbox_head, rois, background, cls_score, bbox_pred, img_shapes
                )
        mean_logits = torch.stack(logits).mean(0)  # [K, C + 1]
        return detections_of_rois(
            self.cfg,
            self.stages[last].bbox_head,
            rois,
            img,
            idx,
            mean_logits,
            bbox_pred,
            img_shapes,
            proposal_mask,
        )

    def to_images(
        self, feats: tuple[Tensor, ...], dets: Detections, metas: list[ImageMeta]
    ) -> list[ImageDetections]:
        """Per image, detections in original pixels; in the mask variant, with the mean of
        the stages' mask probabilities pasted once by the last stage's settings."""
        if not self.cfg.with_mask:
            return rescale_detections(dets, metas)
        probs = torch.stack([s.mask_branch.probabilities(feats, dets) for s in self.stages])
        last = self.cfg.stages[-1].mask_branch
        return masks_for_detections(
            probs.mean(0), dets, metas, last.mask_thr_binary, last.conventions
        )


@register(CascadeRoIHeadConfig)
def build_cascade_roi_head(
    cfg: CascadeRoIHeadConfig, *, in_channels: int, num_classes: int, **context
) -> CascadeRoIHead:
    """Build every stage on the neck's ``in_channels`` for ``num_classes`` classes."""
    del context
    return CascadeRoIHead(cfg, in_channels, num_classes)
