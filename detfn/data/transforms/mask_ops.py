"""Instance-mask geometry shared by the geometric transforms.

Masks are ``Tensor[N, h, w]`` bool bitmaps on the image's unpadded grid (``meta.img_shape``), one
per target box, so each function here is the image's own operation applied to the mask stack.
Every function takes and returns None for samples without masks, so a transform calls it
unconditionally.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["crop_masks", "expand_masks", "flip_masks", "resize_masks"]


def resize_masks(masks: torch.Tensor | None, height: int, width: int) -> torch.Tensor | None:
    """Tensor[N, height, width] bool by nearest-neighbour resizing (source pixel
    ``floor(dst * in / out)``, as OpenCV's ``INTER_NEAREST`` in mmdetection's BitmapMasks)."""
    if masks is None:
        return None
    if masks.shape[0] == 0:
        return masks.new_zeros((0, height, width))
    resized = F.interpolate(masks[None].to(torch.uint8), size=(height, width), mode="nearest")
    return resized[0].to(torch.bool)


def flip_masks(masks: torch.Tensor | None, flip_x: bool, flip_y: bool) -> torch.Tensor | None:
    """Tensor[N, h, w]: mirrored left-right (``flip_x``) and / or top-bottom (``flip_y``)."""
    if masks is None:
        return None
    dims = [d for d, on in ((-1, flip_x), (-2, flip_y)) if on]
    return torch.flip(masks, dims) if dims else masks


def crop_masks(
    masks: torch.Tensor | None,
    keep: torch.Tensor,
    left: int,
    top: int,
    height: int,
    width: int,
) -> torch.Tensor | None:
    """Tensor[K, height', width'] of the kept masks (``keep``: Tensor[N] bool) cut to the window
    ``[left, left + width) x [top, top + height)`` (clamped to the mask grid, as slicing the
    image is)."""
    if masks is None:
        return None
    return masks[keep][:, top : top + height, left : left + width]


def expand_masks(
    masks: torch.Tensor | None, height: int, width: int, left: int, top: int
) -> torch.Tensor | None:
    """Tensor[N, height, width]: the masks placed at ``(left, top)`` of an empty canvas."""
    if masks is None:
        return None
    n, h, w = masks.shape
    canvas = masks.new_zeros((n, height, width))
    canvas[:, top : top + h, left : left + w] = masks
    return canvas
