"""FCOS training targets (mmdetection 2.x ``FCOSHead.get_targets``), batched over images.

A point of level ``k`` may take a ground-truth box when

* it lies strictly inside the box (``min(l, t, r, b) > 0``), or, with center sampling, strictly
  inside the box's *centre region*: the gt centre ``± radius * stride_k`` clipped to the box;
* the largest of its four distances to the box's sides is within level ``k``'s regress range,
  ``lower <= max(l, t, r, b) <= upper`` (inclusive at both ends, as mmdetection).

Among the boxes a point may take, it takes the one with the smallest area (the first on ties);
a point that may take none is background (label ``num_classes``). Every point of every image is
labelled in one pass over a ``[B, N, M, 4]`` distance tensor; padded gts get an infinite area and
are never taken. FCOS does not use ignore regions (mmdetection's ``FCOSHead`` neither).

The centerness of a positive point is ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))``:
1 at the box centre, falling to 0 at its border. It is the target of the centerness branch and
the weight of the box loss.

References:
    Tian et al., "FCOS: Fully Convolutional One-Stage Object Detection", ICCV 2019,
    https://arxiv.org/abs/1904.01355
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from detfn.boxes import EPS
from detfn.models.distance_coder import boxes_to_distances

__all__ = [
    "FCOSTargets",
    "INF",
    "centerness_targets",
    "fcos_targets",
    "per_point",
]

# mmdetection's "infinite" distance and area: upper bound of the last regress range, and the
# area given to boxes a point may not take.
INF = 1e8


class FCOSTargets(NamedTuple):
    """Per-point targets of a batch.

    Attributes:
        labels (Tensor[B, N]): int64 class index, ``num_classes`` for background.
        distances (Tensor[B, N, 4]): ``(l, t, r, b)`` to the taken box, in pixels (divided by
            the point's stride with ``norm_on_bbox``); zeros for background points.
        assigned (Tensor[B, N]): int64, ``k >= 1`` for a point that took gt ``k - 1``, else 0.
    """

    labels: Tensor
    distances: Tensor
    assigned: Tensor


def per_point(values: Sequence[float] | Tensor, num_per_level: Sequence[int]) -> Tensor:
    """Repeat one value (or row) per level over that level's points.

    Args:
        values: per-level scalars (strides) or rows (regress ranges), ``L`` of them.
        num_per_level: points per level.

    Returns:
        Tensor[N] or Tensor[N, D] (float32) with N = sum of ``num_per_level``.
    """
    values = torch.as_tensor(values, dtype=torch.float32)
    counts = torch.as_tensor(list(num_per_level))
    if values.shape[0] != counts.shape[0]:
        raise ValueError(f"per_point: {values.shape[0]} values for {counts.shape[0]} levels")
    return values.repeat_interleave(counts, dim=0)


def centerness_targets(distances: Tensor) -> Tensor:
    """Centerness of points, from their distances to the sides of their box.

    Args:
        distances (Tensor[..., 4]): ``(l, t, r, b)``. A point outside its box (a negative
            distance, possible with an assigner other than FCOS's or ATSS's) is clamped to the
            border and gets centerness 0; mmdetection would produce NaN there.

    Returns:
        Tensor[...] in ``[0, 1]``; 1 at the box centre.
    """
    distances = distances.clamp(min=0)
    left_right = distances[..., 0::2]  # [..., 2]
    top_bottom = distances[..., 1::2]  # [..., 2]
    # The larger side of a box with positive width is > 0; EPS only guards empty boxes.
    ratio_x = left_right.amin(dim=-1) / left_right.amax(dim=-1).clamp(min=EPS)
    ratio_y = top_bottom.amin(dim=-1) / top_bottom.amax(dim=-1).clamp(min=EPS)
    return torch.sqrt(ratio_x * ratio_y)


def _centre_regions(gt_boxes: Tensor, radius: Tensor) -> Tensor:
    """Centre regions Tensor[B, N, M, 4]: each gt's centre ``± radius`` of each point, in the gt.

    Args:
        gt_boxes (Tensor[B, M, 4]); radius (Tensor[N]): ``center_sample_radius * stride``.
    """
    centres = (gt_boxes[..., :2] + gt_boxes[..., 2:]) * 0.5  # [B, M, 2]
    half = radius[None, :, None, None]  # [1, N, 1, 1]
    low = torch.maximum(centres[:, None] - half, gt_boxes[:, None, :, :2])  # [B, N, M, 2]
    high = torch.minimum(centres[:, None] + half, gt_boxes[:, None, :, 2:])  # [B, N, M, 2]
    return torch.cat((low, high), dim=-1)


def fcos_targets(
    points: Tensor,
    strides: Tensor,
    regress_ranges: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    gt_mask: Tensor,
    num_classes: int,
    *,
    center_sample_radius: float | None = None,
    norm_on_bbox: bool = False,
) -> FCOSTargets:
    """Labels and regression targets of every point of every image.

    Args:
        points (Tensor[N, 2]): ``(x, y)`` of all levels' points, concatenated.
        strides (Tensor[N]): the stride of each point's level.
        regress_ranges (Tensor[N, 2]): ``(lower, upper)`` of each point's level.
        gt_boxes (Tensor[B, M, 4]): xyxy, padded; gt_labels (Tensor[B, M]) int64;
            gt_mask (Tensor[B, M]) bool.
        num_classes: the background label.
        center_sample_radius: None for no center sampling, else the radius in strides (1.5).
        norm_on_bbox: divide the distances by the point's stride.

    Returns:
        :class:`FCOSTargets`.
    """
    num = points.shape[0]
    if strides.shape != (num,) or regress_ranges.shape != (num, 2):
        raise ValueError(
            f"fcos_targets: strides must be [N] and regress_ranges [N, 2] for {num} points, got "
            f"{tuple(strides.shape)} and {tuple(regress_ranges.shape)}"
        )
    batch, num_gt = gt_mask.shape
    if num_gt == 0:  # no image has a gt: every point is background
        zeros = torch.zeros(batch, num, dtype=torch.long, device=points.device)
        return FCOSTargets(zeros + num_classes, points.new_zeros(batch, num, 4), zeros)
    expanded = points[None, :, None].expand(batch, num, num_gt, 2)  # [B, N, M, 2]
    distances = boxes_to_distances(expanded, gt_boxes[:, None].expand(-1, num, -1, -1))
    if center_sample_radius is None:
        inside = distances.amin(dim=-1) > 0  # [B, N, M]
    else:
        regions = _centre_regions(gt_boxes, center_sample_radius * strides)
        inside = boxes_to_distances(expanded, regions).amin(dim=-1) > 0  # [B, N, M]
    farthest = distances.amax(dim=-1)  # [B, N, M]
    in_range = (farthest >= regress_ranges[None, :, None, 0]) & (
        farthest <= regress_ranges[None, :, None, 1]
    )
    areas = (gt_boxes[..., 2] - gt_boxes[..., 0]) * (gt_boxes[..., 3] - gt_boxes[..., 1])
    allowed = inside & in_range & gt_mask[:, None]  # [B, N, M]
    best = torch.where(allowed, areas[:, None], INF).argmin(dim=2)  # [B, N]: first on ties
    positive = allowed.any(dim=2)  # [B, N]
    labels = torch.where(positive, gt_labels.gather(1, best), num_classes)
    taken = distances.gather(2, best[:, :, None, None].expand(-1, -1, 1, 4)).squeeze(2)
    if norm_on_bbox:
        taken = taken / strides[None, :, None]
    taken = torch.where(positive[..., None], taken, 0.0)  # [B, N, 4]
    return FCOSTargets(labels, taken, torch.where(positive, best + 1, 0))
