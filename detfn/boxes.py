"""Box geometry: overlaps, clipping, areas and format conversion, thin over ``torchvision.ops``.

Every box is a float tensor whose last dimension holds 4 coordinates; the format is in the
function name (``xyxy`` unless said otherwise). Coordinates are continuous pixels, so a box's
width is ``x2 - x1`` with no ``+ 1`` (mmdetection 2.x convention). Every function accepts zero
boxes and returns a correctly shaped empty result.

The batched overlap functions ([B, N, M]) share one private intersection kernel so that IoU and
IoF never disagree about what an intersection is.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torchvision import ops

__all__ = [
    "BoxFormat",
    "EPS",
    "batched_box_iof",
    "batched_box_iou",
    "box_area",
    "box_cxcywh_to_xyxy",
    "box_iou",
    "box_xywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "box_xyxy_to_xywh",
    "check_boxes",
    "clip_boxes",
    "convert",
]

BoxFormat = Literal["xyxy", "cxcywh", "xywh"]
FORMATS: tuple[str, ...] = ("xyxy", "cxcywh", "xywh")

# Denominator floor for IoU/IoF: a zero-area box (a padded ground-truth row is all zeros) then
# gives overlap 0 instead of 0/0 = nan. mmdetection's bbox_overlaps uses the same 1e-6.
EPS = 1e-6


def check_boxes(boxes: Tensor, name: str = "boxes") -> None:
    """Raise a one-line ``ValueError`` unless ``boxes`` is a floating tensor of shape [..., 4]."""
    if not isinstance(boxes, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape [..., 4], got {type(boxes)}")
    if boxes.dim() == 0 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape [..., 4], got {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {boxes.dtype}")


def box_area(boxes: Tensor) -> Tensor:
    """Area of boxes.

    Args:
        boxes (Tensor[..., 4]): xyxy.

    Returns:
        Tensor[...]: ``(x2 - x1) * (y2 - y1)``; negative extents are not clamped, as in
        torchvision and mmdetection.
    """
    check_boxes(boxes)
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU of two box sets (``torchvision.ops.box_iou``).

    Args:
        boxes1 (Tensor[N, 4]): xyxy, ``x1 <= x2``, ``y1 <= y2``.
        boxes2 (Tensor[M, 4]): xyxy.

    Returns:
        Tensor[N, M]: IoU; [N, 0] or [0, M] when a set is empty.
    """
    check_boxes(boxes1, "boxes1")
    check_boxes(boxes2, "boxes2")
    if boxes1.dim() != 2 or boxes2.dim() != 2:
        raise ValueError(
            f"box_iou takes [N, 4] and [M, 4]; got {tuple(boxes1.shape)} and "
            f"{tuple(boxes2.shape)} (use batched_box_iou for [B, N, 4])"
        )
    return ops.box_iou(boxes1, boxes2)


def _check_batched_pair(boxes1: Tensor, boxes2: Tensor) -> None:
    check_boxes(boxes1, "boxes1")
    check_boxes(boxes2, "boxes2")
    if boxes1.dim() != 3 or boxes2.dim() != 3 or boxes1.shape[0] != boxes2.shape[0]:
        raise ValueError(
            f"batched overlaps take [B, N, 4] and [B, M, 4] with the same B; got "
            f"{tuple(boxes1.shape)} and {tuple(boxes2.shape)}"
        )


def _batched_intersection(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection areas of every pair, per batch row.

    Args:
        boxes1 (Tensor[B, N, 4]): xyxy.
        boxes2 (Tensor[B, M, 4]): xyxy.

    Returns:
        Tensor[B, N, M]: intersection area, >= 0.
    """
    # One coordinate at a time: contiguous [B, N, M] planes are faster than [B, N, M, 2] slices.
    left = torch.maximum(boxes1[:, :, None, 0], boxes2[:, None, :, 0])  # [B, N, M]
    top = torch.maximum(boxes1[:, :, None, 1], boxes2[:, None, :, 1])  # [B, N, M]
    right = torch.minimum(boxes1[:, :, None, 2], boxes2[:, None, :, 2])  # [B, N, M]
    bottom = torch.minimum(boxes1[:, :, None, 3], boxes2[:, None, :, 3])  # [B, N, M]
    return (right - left).clamp(min=0) * (bottom - top).clamp(min=0)


def batched_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of every pair within each batch row.

    Args:
        boxes1 (Tensor[B, N, 4]): xyxy.
        boxes2 (Tensor[B, M, 4]): xyxy; zero rows (padding) give IoU 0 with real boxes.

    Returns:
        Tensor[B, N, M]: ``inter / max(union, EPS)``.
    """
    _check_batched_pair(boxes1, boxes2)
    inter = _batched_intersection(boxes1, boxes2)
    union = box_area(boxes1)[:, :, None] + box_area(boxes2)[:, None, :] - inter  # [B, N, M]
    return inter / union.clamp(min=EPS)


def batched_box_iof(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection over the *first* box's area ("IoF"), for ignore regions.

    ``iof[b, n, m]`` is the fraction of ``boxes1[b, n]`` covered by ``boxes2[b, m]``; a candidate
    box lying inside a crowd region has IoF 1 whatever the region's size.

    Args:
        boxes1 (Tensor[B, N, 4]): xyxy, the boxes whose area is the denominator.
        boxes2 (Tensor[B, M, 4]): xyxy.

    Returns:
        Tensor[B, N, M]: ``inter / max(area(boxes1), EPS)``.
    """
    _check_batched_pair(boxes1, boxes2)
    inter = _batched_intersection(boxes1, boxes2)
    return inter / box_area(boxes1)[:, :, None].clamp(min=EPS)


def clip_boxes(boxes: Tensor, shape: tuple[int, int] | Tensor) -> Tensor:
    """Clip boxes to an image, ``0 <= x <= W`` and ``0 <= y <= H``.

    Args:
        boxes (Tensor[..., 4]): xyxy.
        shape: ``(H, W)`` for all boxes, or Tensor[*P, 2] of per-image ``(H, W)`` where ``P`` is a
            prefix of the boxes' leading dims (e.g. [B, 2] for boxes [B, N, 4]).

    Returns:
        Tensor[..., 4]: a new tensor; the input is not modified.
    """
    check_boxes(boxes)
    if not isinstance(shape, Tensor):
        if len(shape) != 2:
            raise ValueError(f"clip_boxes shape must be (H, W), got {shape!r}")
        height, width = float(shape[0]), float(shape[1])
        x = boxes[..., 0::2].clamp(0, width)
        y = boxes[..., 1::2].clamp(0, height)
    else:
        prefix = tuple(shape.shape[:-1])
        if shape.shape[-1] != 2 or prefix != tuple(boxes.shape[: len(prefix)]):
            raise ValueError(
                f"clip_boxes shape tensor must be [*P, 2] with P a prefix of boxes' leading "
                f"dims {tuple(boxes.shape[:-1])}, got {tuple(shape.shape)}"
            )
        expand = (1,) * (boxes.dim() - 1 - len(prefix))
        limits = shape.to(boxes.dtype).reshape(*prefix, *expand, 2)  # [*P, 1.., 2]
        zero = torch.zeros((), dtype=boxes.dtype, device=boxes.device)
        x = torch.minimum(torch.maximum(boxes[..., 0::2], zero), limits[..., 1:2])
        y = torch.minimum(torch.maximum(boxes[..., 1::2], zero), limits[..., 0:1])
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``(x1, y1, x2, y2)`` -> ``(cx, cy, w, h)``; boxes (Tensor[..., 4])."""
    check_boxes(boxes)
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) * 0.5, (y1 + y2) * 0.5, x2 - x1, y2 - y1), dim=-1)


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(cx, cy, w, h)`` -> ``(x1, y1, x2, y2)``; boxes (Tensor[..., 4])."""
    check_boxes(boxes)
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def box_xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """``(x1, y1, x2, y2)`` -> ``(x, y, w, h)`` (COCO); boxes (Tensor[..., 4])."""
    check_boxes(boxes)
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1)


def box_xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(x, y, w, h)`` (COCO) -> ``(x1, y1, x2, y2)``; boxes (Tensor[..., 4])."""
    check_boxes(boxes)
    x, y, w, h = boxes.unbind(-1)
    return torch.stack((x, y, x + w, y + h), dim=-1)


_TO_XYXY = {"xyxy": lambda b: b, "cxcywh": box_cxcywh_to_xyxy, "xywh": box_xywh_to_xyxy}
_FROM_XYXY = {"xyxy": lambda b: b, "cxcywh": box_xyxy_to_cxcywh, "xywh": box_xyxy_to_xywh}


def convert(boxes: Tensor, src: BoxFormat, dst: BoxFormat) -> Tensor:
    """Convert boxes between formats, through xyxy.

    Args:
        boxes (Tensor[..., 4]): in format ``src``.
        src, dst: one of ``"xyxy"``, ``"cxcywh"``, ``"xywh"``.

    Returns:
        Tensor[..., 4] in format ``dst`` (the input itself when ``src == dst``).
    """
    for role, fmt in (("src", src), ("dst", dst)):
        if fmt not in FORMATS:
            raise ValueError(f"convert: {role} format {fmt!r} is not one of {FORMATS}")
    check_boxes(boxes)
    if src == dst:
        return boxes
    return _FROM_XYXY[dst](_TO_XYXY[src](boxes))
