"""collate: samples -> one :class:`Batch` with a padded image tensor and padded targets."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from detfn.data.errors import Skipped
from detfn.data.sample import Sample
from detfn.structures import Batch, img_shapes_of

__all__ = ["collate", "pad_rows"]


def pad_rows(rows: Sequence[torch.Tensor], fill: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack rows ``[N_i, ...]`` into ``[B, M = max N_i, ...]`` plus a bool mask ``[B, M]``."""
    count = max((len(r) for r in rows), default=0)
    first = rows[0]
    out = first.new_full((len(rows), count, *first.shape[1:]), fill)
    mask = torch.zeros((len(rows), count), dtype=torch.bool)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
        mask[i, : len(row)] = True
    return out, mask


def collate(
    samples: Sequence[Sample | Skipped], size_divisor: int = 32, pad_value: float = 0.0
) -> Batch:
    """Pad the images (bottom/right) to the largest height and width rounded up to
    ``size_divisor``, and the targets to the largest count.

    :class:`Skipped` entries (bad images with ``skip_bad_images``) are left out and named in
    ``Batch.skipped``; if every entry was skipped the batch has ``B = 0``.

    Returns:
        Batch: images [B, 3, H, W] float32, boxes [B, M, 4], labels [B, M] (-1 pad), box_mask,
        ignore_boxes [B, G, 4], ignore_mask, metas, img_shapes [B, 2] (computed here, once),
        masks (one Tensor[N_i, h_i, w_i] bool per image, unpadded; None without masks).
    """
    skipped = tuple(s.file_name for s in samples if isinstance(s, Skipped))
    kept = [s for s in samples if not isinstance(s, Skipped)]
    if not kept:
        return _empty_batch(skipped)
    height = max(int(s.image.shape[-2]) for s in kept)
    width = max(int(s.image.shape[-1]) for s in kept)
    height = math.ceil(height / size_divisor) * size_divisor
    width = math.ceil(width / size_divisor) * size_divisor
    images = torch.full((len(kept), 3, height, width), pad_value, dtype=torch.float32)
    for i, s in enumerate(kept):
        images[i, :, : s.image.shape[-2], : s.image.shape[-1]] = s.image
    boxes, box_mask = pad_rows([s.boxes.to(torch.float32).reshape(-1, 4) for s in kept], 0.0)
    labels, _ = pad_rows([s.labels.to(torch.int64) for s in kept], -1)
    ignore, ignore_mask = pad_rows(
        [s.ignore_boxes.to(torch.float32).reshape(-1, 4) for s in kept], 0
    )
    return Batch(
        images=images,
        boxes=boxes,
        labels=labels,
        box_mask=box_mask,
        ignore_boxes=ignore,
        ignore_mask=ignore_mask,
        metas=tuple(s.meta for s in kept),
        img_shapes=img_shapes_of([s.meta for s in kept]),
        masks=_collate_masks(kept),
        skipped=skipped,
    )


def _collate_masks(samples: Sequence[Sample]) -> tuple[torch.Tensor, ...] | None:
    """Per-image masks kept as they are: padding them to ``[B, M, H, W]`` would cost a full
    padded image per target, and mask targets only read the region of each positive RoI."""
    with_masks = [s.masks is not None for s in samples]
    if not any(with_masks):
        return None
    if not all(with_masks):
        names = [s.meta.file_name for s, m in zip(samples, with_masks) if not m]
        raise ValueError(f"collate: some samples have masks and some do not (no masks: {names})")
    for s in samples:
        if s.masks.shape[0] != s.boxes.shape[0] or tuple(s.masks.shape[1:]) != s.meta.img_shape:
            raise ValueError(
                f"{s.meta.file_name}: masks {tuple(s.masks.shape)} do not match "
                f"{s.boxes.shape[0]} boxes on the {s.meta.img_shape} image"
            )
    return tuple(s.masks for s in samples)


def _empty_batch(skipped: tuple[str, ...]) -> Batch:
    return Batch(
        images=torch.zeros((0, 3, 0, 0)),
        boxes=torch.zeros((0, 0, 4)),
        labels=torch.zeros((0, 0), dtype=torch.int64),
        box_mask=torch.zeros((0, 0), dtype=torch.bool),
        ignore_boxes=torch.zeros((0, 0, 4)),
        ignore_mask=torch.zeros((0, 0), dtype=torch.bool),
        metas=(),
        skipped=skipped,
    )
