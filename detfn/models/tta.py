"""Test-time augmentation as tensor functions: augment a batch, merge the detections back.

A batch from the test pipeline (normalized, padded images with their metas) is resized and
flipped here, on the tensor, with the metas updated the way the pipeline's own Resize and Flip
would (``scale_factor`` multiplied, ``flip`` set), so the detector's predict function maps each
augmented result back to the original image by itself. Resizing the normalized image equals
normalizing the resized image: normalization is per-channel affine, interpolation linear.

Merging follows mmdetection's ``merge_aug_bboxes``: boxes mapped back to the original frame and
averaged, scores averaged over the augmentations, then NMS. mmdetection averages the same RoIs'
class-specific outputs before its NMS; a detector seen only through its predict function gives
final detections instead, so the same average is taken over matched detections: detections of
all augmentations are clustered by per-class greedy NMS (a cluster is a survivor and every box
it suppressed); within a cluster each augmentation contributes its best-scoring box; the merged
box is the mean of those boxes and the merged score their sum divided by the number of
augmentations (an augmentation that missed the object counts as score 0).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms, box_iou

from detfn.structures import ImageDetections, ImageMeta

__all__ = ["augment_batch", "merge_aug_detections"]


def augment_batch(
    images: Tensor,
    metas: Sequence[ImageMeta],
    sizes: Sequence[tuple[int, int]],
    flip: bool,
    size_divisor: int = 32,
) -> tuple[Tensor, tuple[ImageMeta, ...]]:
    """Resize each image's unpadded region to ``sizes[i] = (h, w)``, flip it horizontally when
    ``flip``, and zero-pad the batch to a multiple of ``size_divisor``.

    Args:
        images (Tensor[B, 3, H, W]): normalized, padded images of the test pipeline.
        metas: their metas (``img_shape`` is the unpadded region).

    Returns:
        ``(Tensor[B, 3, H', W'], metas)`` with ``img_shape``, ``pad_shape``, ``scale_factor``,
        ``flip`` and ``flip_direction`` describing the augmented images.
    """
    if len(sizes) != len(metas) or len(metas) != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images, {len(metas)} metas, {len(sizes)} sizes")
    resized, new_metas = [], []
    for image, meta, (new_h, new_w) in zip(images, metas, sizes):
        height, width = meta.img_shape
        region = image[None, :, :height, :width]
        if (new_h, new_w) != (height, width):
            region = F.interpolate(
                region, size=(new_h, new_w), mode="bilinear", align_corners=False
            )
        if flip:
            region = region.flip(-1)
        sx, sy = new_w / width, new_h / height
        old = meta.scale_factor
        resized.append(region[0])
        new_metas.append(
            dataclasses.replace(
                meta,
                img_shape=(new_h, new_w),
                scale_factor=(old[0] * sx, old[1] * sy, old[2] * sx, old[3] * sy),
                flip=flip,
                flip_direction="horizontal" if flip else None,
            )
        )
    pad_h = -(-max(r.shape[1] for r in resized) // size_divisor) * size_divisor
    pad_w = -(-max(r.shape[2] for r in resized) // size_divisor) * size_divisor
    batch = images.new_zeros(len(resized), images.shape[1], pad_h, pad_w)
    for i, region in enumerate(resized):
        batch[i, :, : region.shape[1], : region.shape[2]] = region
    metas_out = tuple(dataclasses.replace(m, pad_shape=(pad_h, pad_w)) for m in new_metas)
    return batch, metas_out


def merge_aug_detections(
    augmented: Sequence[ImageDetections], iou_thr: float = 0.5, max_per_img: int = 100
) -> ImageDetections:
    """One image's detections from each augmentation (all in the original frame), merged.

    Returns:
        :class:`ImageDetections` best first: per cluster the mean box of the augmentations that
        found it and the mean score over all ``len(augmented)`` augmentations (see the module
        docstring). Identical inputs give back the same detections.
    """
    if not augmented:
        raise ValueError("merge_aug_detections needs the detections of at least one augmentation")
    boxes = torch.cat([d.boxes for d in augmented]).float()  # [K, 4]
    scores = torch.cat([d.scores for d in augmented]).float()  # [K]
    labels = torch.cat([d.labels for d in augmented]).long()  # [K]
    aug = torch.cat([torch.full_like(d.labels, i).long() for i, d in enumerate(augmented)])
    order = scores.argsort(descending=True, stable=True)
    boxes, scores, labels, aug = boxes[order], scores[order], labels[order], aug[order]
    keep = batched_nms(boxes, scores, labels, iou_thr)  # [S] survivors, best first
    same_class = labels[keep][:, None] == labels[None, :]  # [S, K]
    suppresses = (box_iou(boxes[keep], boxes) > iou_thr) & same_class  # [S, K]
    suppresses[torch.arange(len(keep)), keep] = True  # a survivor is in its own cluster
    owner = suppresses.int().argmax(0)  # [K] the first (best) survivor covering each box
    num_augs = len(augmented)
    group = owner * num_augs + aug  # [K] (cluster, augmentation)
    positions = torch.arange(len(scores), device=scores.device)
    first = torch.full((len(keep) * num_augs,), len(scores), device=scores.device)
    first = first.scatter_reduce(0, group, positions, reduce="amin")  # best box of each group
    chosen = first[first < len(scores)]  # [P] one box per (cluster, augmentation) present
    cluster = owner[chosen]
    count = torch.bincount(cluster, minlength=len(keep)).clamp(min=1)[:, None]
    merged_boxes = boxes.new_zeros(len(keep), 4).index_add_(0, cluster, boxes[chosen]) / count
    merged_scores = scores.new_zeros(len(keep)).index_add_(0, cluster, scores[chosen]) / num_augs
    best = merged_scores.argsort(descending=True, stable=True)[:max_per_img]
    dtype = augmented[0].boxes.dtype
    return ImageDetections(
        merged_boxes[best].to(dtype), merged_scores[best].to(dtype), labels[keep][best]
    )
