"""A collated batch: one padded image tensor plus targets padded to the batch maximum.

Padding targets to ``[B, M, ...]`` with a validity mask is what lets target assignment and
sampling run on the whole batch at once instead of looping over images in Python.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from detfn.data.sample import ImageMeta

__all__ = ["Batch"]


@dataclass(frozen=True)
class Batch:
    """Attributes:
    images (Tensor[B, 3, H, W]): float32, normalized, zero-padded at the bottom/right to a
        multiple of ``size_divisor``.
    boxes (Tensor[B, M, 4]): float32 xyxy targets; rows past ``box_mask`` are zeros.
    labels (Tensor[B, M]): int64 labels; padded rows are -1.
    box_mask (Tensor[B, M]): bool, True for real targets.
    ignore_boxes (Tensor[B, G, 4]): float32 xyxy ignore regions, zero-padded.
    ignore_mask (Tensor[B, G]): bool, True for real ignore regions.
    metas: one :class:`ImageMeta` per image.
    skipped: files of the bad images left out of this batch (``skip_bad_images``); the loader
        counts them and reports them at the end of the epoch.
    """

    images: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    box_mask: torch.Tensor
    ignore_boxes: torch.Tensor
    ignore_mask: torch.Tensor
    metas: tuple[ImageMeta, ...]
    skipped: tuple[str, ...] = ()

    def __len__(self) -> int:
        return self.images.shape[0]

    def pin_memory(self) -> Batch:
        """The same batch in page-locked memory (called by ``DataLoader(pin_memory=True)``)."""
        return replace(
            self,
            images=self.images.pin_memory(),
            boxes=self.boxes.pin_memory(),
            labels=self.labels.pin_memory(),
            box_mask=self.box_mask.pin_memory(),
            ignore_boxes=self.ignore_boxes.pin_memory(),
            ignore_mask=self.ignore_mask.pin_memory(),
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The same batch with every tensor on ``device``."""

        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=non_blocking)

        return replace(
            self,
            images=move(self.images),
            boxes=move(self.boxes),
            labels=move(self.labels),
            box_mask=move(self.box_mask),
            ignore_boxes=move(self.ignore_boxes),
            ignore_mask=move(self.ignore_mask),
        )
