"""Box geometry shared by the geometric transforms (xyxy, continuous pixel coordinates)."""

from __future__ import annotations

import torch

__all__ = ["clip_to_shape", "crop_boxes", "valid_boxes"]


def clip_to_shape(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Clip boxes to an image.

    Args:
        boxes (Tensor[N, 4]): xyxy.
    Returns:
        Tensor[N, 4]: with ``0 <= x <= width`` and ``0 <= y <= height``.
    """
    limits = boxes.new_tensor([width, height, width, height])
    return torch.minimum(boxes.clamp(min=0), limits)


def valid_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """Tensor[N] bool: boxes (Tensor[N, 4], xyxy) with positive width and height."""
    return (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


def crop_boxes(
    boxes: torch.Tensor, left: int, top: int, height: int, width: int, clip: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes in the frame of the crop ``[left, left + width) x [top, top + height)``.

    Args:
        boxes (Tensor[N, 4]): xyxy in the uncropped image.
    Returns:
        (Tensor[K, 4], Tensor[N] bool): the boxes that still cover some of the crop, shifted (and
        clipped when ``clip``), and which inputs they are.
    """
    shifted = boxes - boxes.new_tensor([left, top, left, top])
    clipped = clip_to_shape(shifted, height, width)
    keep = valid_boxes(clipped)
    return (clipped if clip else shifted)[keep], keep
