"""Detection post-processing: batched multi-class NMS and the map back to original images.

mmdetection loops over images and runs NMS per image; here one ``batched_nms`` call covers the
whole batch, keyed by ``(image, class)`` so boxes of different images or classes never suppress
each other. The top ``max_per_img`` survivors of each image are then packed into fixed-size
padded tensors (``[B, max_per_img, ...]`` with a mask), which keeps output shapes static.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from detfn.boxes import clip_boxes
from detfn.structures import Detections, ImageDetections, ImageMeta

__all__ = [
    "Detections",
    "ImageDetections",
    "multiclass_nms",
    "pack_per_image",
    "rescale_detections",
    "unflip_boxes",
]


def multiclass_nms(
    boxes: Tensor,
    scores: Tensor,
    mask: Tensor,
    score_thr: float = 0.05,
    iou_threshold: float = 0.5,
    max_per_img: int = 100,
) -> Detections:
    """Per-class NMS over a batch with one ``batched_nms`` call.

    mmdetection's ``multiclass_nms`` semantics: candidates are (box, class) pairs with score
    strictly above ``score_thr``; NMS is per class; the ``max_per_img`` best survivors are kept.

    Args:
        boxes (Tensor[B, N, C, 4] | Tensor[B, N, 4]): xyxy, class-specific or shared by classes.
        scores (Tensor[B, N, C]): foreground class scores (background column already removed).
        mask (Tensor[B, N]): bool, True for real candidates (False for padding).
        score_thr: keep pairs with ``score > score_thr``.
        iou_threshold: NMS IoU threshold within one (image, class).
        max_per_img: detections kept per image (the padded size ``D``).

    Returns:
        :class:`Detections` with ``D = max_per_img``.
    """
    batch, num, num_classes = _check_nms_inputs(boxes, scores, mask)
    if boxes.dim() == 3:
        boxes = boxes[:, :, None, :].expand(batch, num, num_classes, 4)  # [B, N, C, 4]
    valid = mask[:, :, None] & (scores > score_thr)  # [B, N, C]
    img, idx, cls = torch.nonzero(valid, as_tuple=True)
    cand_boxes = boxes[img, idx, cls]  # [K, 4]
    cand_scores = scores[img, idx, cls]  # [K]
    keep = batched_nms(
        cand_boxes.float(), cand_scores.float(), img * num_classes + cls, iou_threshold
    )
    return pack_per_image(
        cand_boxes[keep], cand_scores[keep], cls[keep], img[keep], batch, max_per_img
    )


def _check_nms_inputs(boxes: Tensor, scores: Tensor, mask: Tensor) -> tuple[int, int, int]:
    if scores.dim() != 3:
        raise ValueError(f"multiclass_nms: scores must be [B, N, C], got {tuple(scores.shape)}")
    batch, num, num_classes = scores.shape
    ok_boxes = tuple(boxes.shape) in ((batch, num, num_classes, 4), (batch, num, 4))
    if not ok_boxes:
        raise ValueError(
            f"multiclass_nms: boxes must be [B, N, C, 4] or [B, N, 4] for scores "
            f"{tuple(scores.shape)}, got {tuple(boxes.shape)}"
        )
    if tuple(mask.shape) != (batch, num) or mask.dtype != torch.bool:
        raise ValueError(
            f"multiclass_nms: mask must be bool [B, N] = {(batch, num)}, got "
            f"{mask.dtype} {tuple(mask.shape)}"
        )
    return batch, num, num_classes


def pack_per_image(
    boxes: Tensor, scores: Tensor, labels: Tensor, img: Tensor, batch: int, max_per_img: int
) -> Detections:
    """Scatter score-sorted survivors into ``[B, max_per_img]`` slots, best first per image.

    Args:
        boxes (Tensor[K, 4]), scores (Tensor[K]), labels (Tensor[K]), img (Tensor[K]): the NMS
            survivors sorted by decreasing score (as ``batched_nms`` returns them).
    """
    # Stable sort by image keeps the score order inside each image.
    order = torch.sort(img, stable=True).indices
    boxes, scores, labels, img = boxes[order], scores[order], labels[order], img[order]
    counts = torch.bincount(img, minlength=batch)  # [B]
    starts = torch.cumsum(counts, 0) - counts  # [B] first position of each image
    rank = torch.arange(img.numel(), device=img.device) - starts[img]  # [K] rank within image
    top = rank < max_per_img
    img, rank = img[top], rank[top]
    out_boxes = boxes.new_zeros(batch, max_per_img, 4)
    out_scores = scores.new_zeros(batch, max_per_img)
    out_labels = labels.new_full((batch, max_per_img), -1)
    out_mask = torch.zeros(batch, max_per_img, dtype=torch.bool, device=img.device)
    out_boxes = out_boxes.index_put((img, rank), boxes[top])
    out_scores = out_scores.index_put((img, rank), scores[top])
    out_labels = out_labels.index_put((img, rank), labels[top])
    out_mask = out_mask.index_put((img, rank), torch.ones_like(rank, dtype=torch.bool))
    return Detections(out_boxes, out_scores, out_labels, out_mask)


def rescale_detections(dets: Detections, metas: Sequence[ImageMeta]) -> list[ImageDetections]:
    """Map padded detections from the resized (network input) frame to each original image.

    Undoes, in reverse order of the test pipeline: a flip (``meta.flip``, mirrored within
    ``img_shape``), then the resize (divide by ``scale_factor``); boxes are clipped to
    ``ori_shape``.

    Args:
        dets: :class:`Detections` of ``B`` images in the resized frame.
        metas: one :class:`ImageMeta` per image.

    Returns:
        One :class:`ImageDetections` per image with only its real detections, in original pixels.
    """
    if len(metas) != dets.boxes.shape[0]:
        raise ValueError(
            f"rescale_detections: {len(metas)} metas for a batch of {dets.boxes.shape[0]} images"
        )
    results = []
    for i, meta in enumerate(metas):  # per-image metadata only; the tensor work is tiny
        keep = dets.mask[i]
        boxes = dets.boxes[i][keep]
        if meta.flip:
            boxes = unflip_boxes(boxes, meta.img_shape, meta.flip_direction or "horizontal")
        scale = boxes.new_tensor(meta.scale_factor)
        boxes = clip_boxes(boxes / scale, meta.ori_shape)
        results.append(ImageDetections(boxes, dets.scores[i][keep], dets.labels[i][keep]))
    return results


def unflip_boxes(boxes: Tensor, img_shape: tuple[int, int], direction: str) -> Tensor:
    """Mirror xyxy boxes (Tensor[N, 4]) back within an ``(H, W)`` image; a flip is its own inverse.

    ``direction`` is ``"horizontal"``, ``"vertical"`` or ``"diagonal"`` (both).
    """
    height, width = img_shape
    x1, y1, x2, y2 = boxes.unbind(-1)
    if direction not in ("horizontal", "vertical", "diagonal"):
        raise ValueError(
            f"unflip_boxes: flip_direction must be horizontal, vertical or diagonal, got "
            f"{direction!r}"
        )
    if direction in ("horizontal", "diagonal"):
        x1, x2 = width - x2, width - x1
    if direction in ("vertical", "diagonal"):
        y1, y2 = height - y2, height - y1
    return torch.stack((x1, y1, x2, y2), dim=-1)
