"""Mask targets: each positive RoI's ground-truth mask, cropped to the RoI and resized to 28x28.

One RoIAlign call does it for the whole batch: the ground-truth masks that positives refer to
are stacked as single-channel "images" ``[U, 1, H, W]``, and each positive RoI is pooled from
the stack entry of its assigned ground truth (the gt's stack index is the RoI's batch index).
No Python loop runs per RoI; the only loop is per image, to gather the referenced masks.

Conventions (``aligned``, ``binarize``, clipping) default to mmdetection's ``mask_target``:
RoIs are clipped to the image, pooled with ``aligned=True`` and adaptive sampling, and the
result binarized at 0.5. torchvision's ``project_masks_on_boxes`` instead pools with
``aligned=False``, does not clip and keeps soft targets; pass ``aligned=False, binarize=False,
clip_shapes=None`` for its numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import roi_align

__all__ = ["mask_targets"]


def mask_targets(
    gt_masks: Sequence[Tensor],
    rois: Tensor,
    gt_index: Tensor,
    mask_size: int = 28,
    clip_shapes: Tensor | None = None,
    aligned: bool = True,
    binarize: bool = True,
) -> Tensor:
    """The training target of every positive RoI of a batch.

    Args:
        gt_masks: per image ``Tensor[M_i, h_i, w_i]`` bool (``Batch.masks``): gt masks on the
            image's unpadded grid, in the order of ``Batch.boxes`` rows.
        rois (Tensor[P, 5]): positive RoIs ``(batch_index, x1, y1, x2, y2)`` in input pixels.
        gt_index (Tensor[P]): int64 row of the assigned ground truth within its image.
        mask_size: output side (mmdetection's ``mask_size`` = 28).
        clip_shapes (Tensor[B, 2] | None): ``(h, w)`` each image's RoIs are clipped to
            (mmdetection clips to the padded image shape); None leaves RoIs unclipped.
        aligned: RoIAlign's half-pixel offset (mmcv's default True; torchvision's loss False).
        binarize: threshold the pooled values at 0.5 (mmdetection) or keep them soft.

    Returns:
        Tensor[P, mask_size, mask_size] float32 targets in ``[0, 1]``. Pixels of an RoI that
        fall outside its image (the padding) read 0.
    """
    num = rois.shape[0]
    if num == 0:
        return rois.new_zeros((0, mask_size, mask_size), dtype=torch.float32)
    if gt_index.shape != (num,):
        raise ValueError(f"mask_targets: gt_index must be [{num}], got {tuple(gt_index.shape)}")
    image = rois[:, 0].long()
    counts = torch.tensor([m.shape[0] for m in gt_masks], device=rois.device)
    if bool((gt_index < 0).any()) or bool((gt_index >= counts[image]).any()):
        raise ValueError("mask_targets: a gt_index is outside its image's ground-truth masks")
    offsets = torch.cumsum(counts, 0) - counts  # first stack row of each image
    keys = offsets[image] + gt_index.to(rois.device)  # [P] row in the batch's gt list
    unique, inverse = torch.unique(keys, return_inverse=True)  # only masks positives use
    stack = _stack_masks(gt_masks, unique, offsets, rois.device)  # [U, 1, H, W]
    boxes = rois[:, 1:].to(torch.float32)
    if clip_shapes is not None:
        limits = clip_shapes.to(boxes)[image].flip(1).repeat(1, 2)  # [P, 4] = (w, h, w, h)
        boxes = torch.minimum(boxes.clamp(min=0), limits)
    pooled = roi_align(
        stack,
        torch.cat([inverse[:, None].to(boxes.dtype), boxes], dim=1),
        (mask_size, mask_size),
        spatial_scale=1.0,
        sampling_ratio=0,
        aligned=aligned,
    )[:, 0]
    return (pooled >= 0.5).to(torch.float32) if binarize else pooled


def _stack_masks(
    gt_masks: Sequence[Tensor], rows: Tensor, offsets: Tensor, device: torch.device
) -> Tensor:
    """Tensor[U, 1, H, W] float32: the batch-wide gt rows ``rows``, zero-padded to the largest
    image (one copy per image, never per RoI)."""
    height = max(int(m.shape[1]) for m in gt_masks)
    width = max(int(m.shape[2]) for m in gt_masks)
    stack = torch.zeros((rows.shape[0], 1, height, width), dtype=torch.float32, device=device)
    for b, masks in enumerate(gt_masks):
        local = rows - offsets[b]
        sel = torch.nonzero((local >= 0) & (local < masks.shape[0])).squeeze(1)
        if sel.numel():
            picked = masks.to(device)[local[sel]]
            stack[sel, 0, : masks.shape[1], : masks.shape[2]] = picked.to(torch.float32)
    return stack
