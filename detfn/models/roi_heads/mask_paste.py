"""Paste predicted 28x28 mask probabilities into the image, for many detections at once.

Each detection's mask is bilinearly resampled onto the image pixels its box covers. The sampling
grid is separable (a pixel's source row depends only on its row, its source column only on its
column), so the bilinear resampling of mask ``n`` is ``Ry[n] @ mask[n] @ Rx[n]^T`` with
``Ry[n]: [H, S]`` and ``Rx[n]: [W, S]`` interpolation matrices: two batched matmuls over all
detections, exactly the bilinear weights ``grid_sample`` / ``interpolate`` use, in
``O(N * S * (H + W + H * W / chunk))`` memory instead of a ``[N, H, W, 2]`` sampling grid.

Two conventions:

- ``"mmdet"`` (default; mmdetection's ``_do_paste_mask``): image pixel ``x`` samples the mask at
  ``(x + 0.5 - x1) / (x2 - x1) * S - 0.5`` (pixel centres, ``align_corners=False``), zeros
  outside the mask; probabilities ``>= threshold`` are the mask.
- ``"torchvision"`` (``paste_masks_in_image``): the mask is padded by one zero pixel, the box
  scaled by ``(S + 2) / S`` about its centre and truncated to integers, and the padded mask
  resized to ``(y2 - y1 + 1, x2 - x1 + 1)`` pixels with edge clamping.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

__all__ = ["PasteConvention", "paste_masks", "paste_masks_per_image"]

PasteConvention = Literal["mmdet", "torchvision"]

# Elements of the float [chunk, H, W] product computed at once (256 MB of float32).
_CHUNK_ELEMENTS = 1 << 26


def _interp_matrix(src: Tensor, valid: Tensor, size: int, clamp: bool) -> Tensor:
    """Tensor[N, L, size]: bilinear weights of ``size`` source pixels for each of ``L`` outputs.

    Args:
        src (Tensor[N, L]): continuous source index of each output (pixel centres at integers).
        valid (Tensor[N, L]): bool, outputs that sample the mask at all (others get all zeros).
        size: source pixels.
        clamp: clamp ``src`` into ``[0, size - 1]`` (edge replication); otherwise taps outside
            the source read 0.
    """
    if clamp:
        src = src.clamp(0, size - 1)
    low = torch.floor(src)
    frac = src - low
    low = low.long()
    weights = src.new_zeros((*src.shape, size + 2))  # two spare columns for taps at -1 and size
    for tap, w in ((low, 1 - frac), (low + 1, frac)):
        inside = (tap >= 0) & (tap < size)
        index = torch.where(inside, tap + 1, torch.zeros_like(tap))  # out of range -> spare 0
        weights.scatter_add_(-1, index[..., None], (w * valid)[..., None])
    return weights[..., 1 : size + 1]


def _sampling(
    boxes: Tensor, size: int, height: int, width: int, convention: PasteConvention
) -> tuple[Tensor, Tensor]:
    """The row and column interpolation matrices ``[N, H, S]`` and ``[N, W, S]`` of each box."""
    ys = torch.arange(height, dtype=boxes.dtype, device=boxes.device)
    xs = torch.arange(width, dtype=boxes.dtype, device=boxes.device)
    x1, y1, x2, y2 = boxes.unbind(1)
    if convention == "mmdet":
        # a degenerate box (zero side) covers no pixel centre instead of dividing by zero
        box_h, box_w = (y2 - y1).clamp(min=1e-6), (x2 - x1).clamp(min=1e-6)
        src_y = (ys[None] + 0.5 - y1[:, None]) / box_h[:, None] * size - 0.5
        src_x = (xs[None] + 0.5 - x1[:, None]) / box_w[:, None] * size - 0.5
        ones_y, ones_x = (
            torch.ones_like(src_y, dtype=torch.bool),
            torch.ones_like(src_x, dtype=torch.bool),
        )
        return (
            _interp_matrix(src_y, ones_y, size, clamp=False),
            _interp_matrix(src_x, ones_x, size, clamp=False),
        )
    # torchvision: padded mask of side size + 2 on the expanded, integer box
    scale = (size + 2) / size
    cx, cy = (x1 + x2) * 0.5, (y1 + y2) * 0.5
    half_w, half_h = (x2 - x1) * 0.5 * scale, (y2 - y1) * 0.5 * scale
    ex1, ex2 = (cx - half_w).to(torch.int64), (cx + half_w).to(torch.int64)
    ey1, ey2 = (cy - half_h).to(torch.int64), (cy + half_h).to(torch.int64)
    box_w = (ex2 - ex1 + 1).clamp(min=1).to(boxes.dtype)
    box_h = (ey2 - ey1 + 1).clamp(min=1).to(boxes.dtype)
    j = xs[None] - ex1[:, None].to(boxes.dtype)  # [N, W] column inside the pasted box
    i = ys[None] - ey1[:, None].to(boxes.dtype)
    src_x = (j + 0.5) * ((size + 2) / box_w)[:, None] - 0.5
    src_y = (i + 0.5) * ((size + 2) / box_h)[:, None] - 0.5
    valid_x = (j >= 0) & (j < box_w[:, None])
    valid_y = (i >= 0) & (i < box_h[:, None])
    # interpolate() clamps the source index at 0 (and repeats the last pixel at the far edge)
    rows = _interp_matrix(src_y, valid_y, size + 2, clamp=True)[..., 1:-1]
    cols = _interp_matrix(src_x, valid_x, size + 2, clamp=True)[..., 1:-1]
    return rows, cols  # the padded border pixels are zeros, so their weights are dropped


def paste_masks(
    probs: Tensor,
    boxes: Tensor,
    image_shape: tuple[int, int],
    threshold: float | None = 0.5,
    convention: PasteConvention = "mmdet",
) -> Tensor:
    """Each detection's mask in the full image.

    Args:
        probs (Tensor[N, S, S]): mask probabilities (sigmoid of the head's class channel).
        boxes (Tensor[N, 4]): xyxy boxes in the output image's pixels.
        image_shape: ``(H, W)`` of the output (the original image at test time).
        threshold: pixels with probability ``>= threshold`` are True (mmdetection's
            ``mask_thr_binary``); None returns the float probabilities.
        convention: ``"mmdet"`` or ``"torchvision"`` (see the module docstring).

    Returns:
        Tensor[N, H, W]: bool, or float32 probabilities when ``threshold`` is None.
    """
    height, width = int(image_shape[0]), int(image_shape[1])
    num, size = probs.shape[0], probs.shape[-1]
    if probs.dim() != 3 or probs.shape[1] != size or boxes.shape != (num, 4):
        raise ValueError(
            f"paste_masks: need probs [N, S, S] and boxes [N, 4], got {tuple(probs.shape)} and "
            f"{tuple(boxes.shape)}"
        )
    dtype = torch.bool if threshold is not None else torch.float32
    out = torch.zeros((num, height, width), dtype=dtype, device=probs.device)
    if num == 0 or height == 0 or width == 0:
        return out
    rows, cols = _sampling(boxes.to(torch.float32), size, height, width, convention)
    probs = probs.to(torch.float32)
    chunk = max(1, _CHUNK_ELEMENTS // (height * width))
    for start in range(0, num, chunk):  # bounds memory; one matmul pair per chunk of masks
        part = slice(start, start + chunk)
        pasted = rows[part] @ probs[part] @ cols[part].transpose(1, 2)  # [n, H, W]
        out[part] = pasted >= threshold if threshold is not None else pasted
    return out


def paste_masks_per_image(
    probs: Tensor,
    boxes: Tensor,
    image_index: Tensor,
    image_shapes: Sequence[tuple[int, int]],
    threshold: float | None = 0.5,
    convention: PasteConvention = "mmdet",
) -> tuple[Tensor, ...]:
    """:func:`paste_masks` for the detections of a batch, one call per image (the images'
    sizes differ, so their masks cannot share a tensor).

    Args:
        probs (Tensor[K, S, S]), boxes (Tensor[K, 4]): every detection of the batch, boxes in
            the pixels of their own output image.
        image_index (Tensor[K]): int64 image of each detection.
        image_shapes: ``(H_b, W_b)`` of each output image (``ImageMeta.ori_shape``).

    Returns:
        One ``Tensor[K_b, H_b, W_b]`` per image, in the order detections appear in ``probs``.
    """
    return tuple(
        paste_masks(probs[image_index == b], boxes[image_index == b], shape, threshold, convention)
        for b, shape in enumerate(image_shapes)
    )
