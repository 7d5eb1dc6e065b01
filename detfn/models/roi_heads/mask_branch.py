"""The mask branch of a two-stage RoI head: its own 14x14 RoI extractor plus an FCN mask head.

What a Mask R-CNN (or, one per stage, a Cascade Mask R-CNN) RoI head calls:

- training, after box sampling: :meth:`MaskBranch.loss` on the *positive* sampled RoIs with
  their assigned ground-truth row and label (mmdetection trains masks on ``pos_bboxes``, which
  include the gt boxes added as proposals);
- test time, after box NMS: :meth:`MaskBranch.probabilities` on the final detections (in the
  resized frame, where the features are), then :func:`masks_for_detections` maps the
  probabilities to each original image and pastes them at ``mask_thr_binary``. A cascade
  averages the probabilities of its stages' branches before the one paste (mmdetection's
  ``merge_aug_masks``); :meth:`MaskBranch.predict` is the single-branch composition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from detfn.config import Config, check_unit_interval
from detfn.models.postprocess import rescale_detections
from detfn.models.roi_heads.mask_head import FCNMaskHeadConfig, mask_roi_extractor_config
from detfn.models.roi_heads.mask_paste import PasteConvention, paste_masks
from detfn.models.roi_heads.mask_targets import mask_targets
from detfn.models.roi_heads.roi_extractor import SingleRoIExtractorConfig
from detfn.registry import build, register
from detfn.structures import Detections, ImageDetections, ImageMeta

__all__ = ["MaskBranch", "MaskBranchConfig", "masks_for_detections"]


@dataclass(frozen=True)
class MaskBranchConfig(Config):
    """Mask extractor, head and the train / test settings of mask_rcnn_r50_fpn_1x_coco.

    Attributes:
        roi_extractor: RoIAlign 14x14 over P2-P5, not shared with the box branch.
        mask_head: the FCN mask head (its ``mask_size`` is ``train_cfg.rcnn.mask_size``, 28).
        mask_thr_binary: ``test_cfg.rcnn.mask_thr_binary``; pasted probabilities ``>=`` it.
        conventions: ``"mmdet"``: targets from clipped RoIs, ``aligned=True``, binarized at 0.5,
            and mmdetection's grid-sample paste; ``"torchvision"``: soft targets from unclipped
            RoIs with ``aligned=False`` and torchvision's ``paste_masks_in_image``.
    """

    roi_extractor: SingleRoIExtractorConfig = field(default_factory=mask_roi_extractor_config)
    mask_head: FCNMaskHeadConfig = field(default_factory=FCNMaskHeadConfig)
    mask_thr_binary: float = 0.5
    conventions: Literal["mmdet", "torchvision"] = "mmdet"

    def __post_init__(self) -> None:
        check_unit_interval(self, "mask_thr_binary")


class MaskBranch(nn.Module):
    """``loss(...) -> {"loss_mask"}`` for training, ``predict(...)`` for masks in the images."""

    def __init__(self, cfg: MaskBranchConfig, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.roi_extractor = build(cfg.roi_extractor)
        self.mask_head = build(cfg.mask_head, in_channels=in_channels, num_classes=num_classes)

    def forward(self, feats: Sequence[Tensor], rois: Tensor) -> Tensor:
        """Tensor[K, C, 28, 28] mask logits of ``rois`` (Tensor[K, 5], input-image pixels)."""
        return self.mask_head(self.roi_extractor(feats, rois))

    def loss(
        self,
        feats: Sequence[Tensor],
        pos_rois: Tensor,
        pos_gt_index: Tensor,
        pos_labels: Tensor,
        gt_masks: Sequence[Tensor],
        clip_shapes: Tensor,
    ) -> dict[str, Tensor]:
        """The mask loss of a batch's positive RoIs.

        Args:
            feats: pyramid levels ``Tensor[B, C, H_l, W_l]``, finest first.
            pos_rois (Tensor[P, 5]): positive sampled RoIs ``(batch_index, x1, y1, x2, y2)``.
            pos_gt_index (Tensor[P]): int64 row of each positive's assigned gt in its image.
            pos_labels (Tensor[P]): int64 class of that gt.
            gt_masks: ``Batch.masks``, one ``Tensor[M_b, h_b, w_b]`` bool per image.
            clip_shapes (Tensor[B, 2]): ``(h, w)`` RoIs are clipped to for the targets
                (mmdetection: each image's ``pad_shape``); ignored for torchvision conventions.

        Returns:
            ``{"loss_mask": 0-d}``.
        """
        torchvision = self.cfg.conventions == "torchvision"
        targets = mask_targets(
            gt_masks,
            pos_rois.detach(),
            pos_gt_index,
            self.mask_head.cfg.mask_size,
            clip_shapes=None if torchvision else clip_shapes,
            aligned=not torchvision,
            binarize=not torchvision,
        )
        return self.mask_head.loss(self(feats, pos_rois.detach()), targets, pos_labels)

    def probabilities(self, feats: Sequence[Tensor], dets: Detections) -> Tensor:
        """Tensor[K, 28, 28]: the predicted-class mask probabilities of every real detection
        (``dets.mask``), image-major, in the resized frame where ``feats`` are."""
        img, idx = torch.nonzero(dets.mask, as_tuple=True)
        rois = torch.cat([img[:, None].to(dets.boxes.dtype), dets.boxes[img, idx]], dim=1)
        return self.mask_head.probabilities(self(feats, rois), dets.labels[img, idx])

    def predict(
        self, feats: Sequence[Tensor], dets: Detections, metas: Sequence[ImageMeta]
    ) -> list[ImageDetections]:
        """Detections in original pixels with their masks (``ImageDetections.masks``)."""
        probs = self.probabilities(feats, dets)
        return masks_for_detections(
            probs, dets, metas, self.cfg.mask_thr_binary, self.cfg.conventions
        )


def masks_for_detections(
    probs: Tensor,
    dets: Detections,
    metas: Sequence[ImageMeta],
    threshold: float = 0.5,
    convention: PasteConvention = "mmdet",
) -> list[ImageDetections]:
    """Original-image detections with masks pasted from their probabilities.

    Args:
        probs (Tensor[K, S, S]): one mask per real detection of ``dets``, image-major (the order
            of ``torch.nonzero(dets.mask)``), predicted in the (possibly flipped) resized frame.
        dets: the batch's detections in the resized frame.
        metas: one per image; a flipped image's masks are flipped back with its boxes.
        threshold, convention: see :func:`~detfn.models.roi_heads.mask_paste.paste_masks`.

    Returns:
        :func:`~detfn.models.postprocess.rescale_detections` of ``dets`` with
        ``masks = Tensor[N_b, H_ori, W_ori]`` bool per image.
    """
    per_image = rescale_detections(dets, metas)
    counts = dets.mask.sum(1).tolist()
    if sum(counts) != probs.shape[0]:
        raise ValueError(
            f"masks_for_detections: {probs.shape[0]} masks for {sum(counts)} detections"
        )
    out = []
    for det, meta, part in zip(per_image, metas, torch.split(probs, counts)):
        part = _unflip(part, meta)
        masks = paste_masks(part, det.boxes, meta.ori_shape, threshold, convention)
        out.append(det._replace(masks=masks))
    return out


def _unflip(probs: Tensor, meta: ImageMeta) -> Tensor:
    """The masks of a test-time-flipped image mirrored like its boxes (flips are involutions)."""
    if not meta.flip:
        return probs
    direction = meta.flip_direction or "horizontal"
    dims = {"horizontal": [-1], "vertical": [-2], "diagonal": [-2, -1]}[direction]
    return torch.flip(probs, dims)


@register(MaskBranchConfig)
def build_mask_branch(
    cfg: MaskBranchConfig,
    num_classes: int | None = None,
    in_channels: int | None = None,
    **context: Any,
) -> MaskBranch:
    """Build the branch; ``num_classes`` (the detector's) and ``in_channels`` (the neck's
    width) come as build context."""
    del context
    if num_classes is None:
        raise ValueError("MaskBranchConfig: build it with num_classes=<foreground classes>")
    if in_channels is None:
        raise ValueError("MaskBranchConfig: build it with in_channels=<the neck's width>")
    return MaskBranch(cfg, num_classes, in_channels)
