"""The types both sides of the library exchange: image metadata, batches and detections.

``detfn.data`` produces them and ``detfn.models`` consumes them; neither imports the other, so
they live here, below both. A batch is padded to the largest image and the largest target count
(``[B, M, ...]`` with a validity mask): that is what lets target assignment, sampling and losses
run on the whole batch at once instead of looping over images in Python. Per-image shapes are
computed once, when the batch is collated, into ``Batch.img_shapes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = [
    "Batch",
    "Detections",
    "EncodedMasks",
    "ImageDetections",
    "ImageMeta",
    "img_shapes_of",
    "mix_seed",
]

_MASK64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """A 63-bit seed that depends on every value (splitmix64 steps), e.g. ``(seed, epoch, k)``.

    Nearby inputs (iteration 5 and 6) give unrelated seeds, so generators seeded from them draw
    independent streams; the result fits ``torch.Generator.manual_seed``.
    """
    state = 0
    for value in values:
        state = (state ^ (int(value) & _MASK64)) + 0x9E3779B97F4A7C15 & _MASK64
        z = state
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB & _MASK64
        state = z ^ (z >> 31)
    return state >> 1


@dataclass(frozen=True)
class ImageMeta:
    """What a model needs to map its output back to the original image.

    ``file_name`` is the image's path as the dataset resolved it (prefix joined), which is what
    ``LoadImage`` reads. Shapes are ``(height, width)``. ``scale_factor`` is ``(sx, sy, sx, sy)``:
    multiply an original-image xyxy box by it to get the resized box (mmdetection's convention).
    """

    file_name: str
    image_id: int
    ori_shape: tuple[int, int]
    img_shape: tuple[int, int]
    pad_shape: tuple[int, int]
    scale_factor: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    flip: bool = False
    flip_direction: str | None = None


def img_shapes_of(metas: Sequence[ImageMeta], device: torch.device | str = "cpu") -> Tensor:
    """``Tensor[B, 2]`` float32 of each image's resized, unpadded ``(h, w)``.

    Proposals and detections are clipped to it, and anchors outside it are not trained.
    """
    rows = [m.img_shape for m in metas]
    return torch.tensor(rows, dtype=torch.float32, device=device).reshape(len(rows), 2)


@dataclass(frozen=True)
class Batch:
    """A collated batch: one padded image tensor plus targets padded to the batch maximum.

    Attributes:
        images (Tensor[B, 3, H, W]): float32, normalized, zero-padded at the bottom/right to a
            multiple of ``size_divisor``.
        boxes (Tensor[B, M, 4]): float32 xyxy targets; rows past ``box_mask`` are zeros.
        labels (Tensor[B, M]): int64 labels; padded rows are -1.
        box_mask (Tensor[B, M]): bool, True for real targets.
        ignore_boxes (Tensor[B, G, 4]): float32 xyxy ignore regions, zero-padded.
        ignore_mask (Tensor[B, G]): bool, True for real ignore regions.
        metas: one :class:`ImageMeta` per image.
        img_shapes (Tensor[B, 2]): float32 resized, unpadded ``(h, w)`` of each image, computed
            from ``metas`` once at collate time so the model never rebuilds it.
        masks: per-image instance masks (``Tensor[N_i, h_i, w_i]`` bool, one row per real
            target of that image, in the resized unpadded frame), or None when the dataset
            loads no masks.
        skipped: files of the bad images left out of this batch (``skip_bad_images``); the
            loader counts them and reports them at the end of the epoch.
        rng_key: the seed of the randomness a loss may draw for this batch (the RoI sampler),
            stamped by the training loader from (seed, epoch, position in the epoch), which its
            resume restores; None for batches built by hand (the loss then uses a fixed seed).
    """

    images: Tensor
    boxes: Tensor
    labels: Tensor
    box_mask: Tensor
    ignore_boxes: Tensor
    ignore_mask: Tensor
    metas: tuple[ImageMeta, ...]
    img_shapes: Tensor | None = None
    masks: tuple[Tensor, ...] | None = None
    skipped: tuple[str, ...] = ()
    rng_key: int | None = None

    def __post_init__(self) -> None:
        if self.img_shapes is None:  # built by hand (tests, inference): derive it once here
            object.__setattr__(self, "img_shapes", img_shapes_of(self.metas, self.images.device))

    def __len__(self) -> int:
        return self.images.shape[0]

    def _map_tensors(self, fn) -> Batch:
        changes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                changes[f.name] = fn(value)
            elif f.name == "masks" and value is not None:
                changes[f.name] = tuple(fn(m) for m in value)
        return replace(self, **changes)

    def pin_memory(self) -> Batch:
        """The same batch in page-locked memory (called by ``DataLoader(pin_memory=True)``)."""
        return self._map_tensors(lambda t: t.pin_memory())

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The same batch with every tensor on ``device``."""
        return self._map_tensors(lambda t: t.to(device, non_blocking=non_blocking))


class Detections(NamedTuple):
    """Padded detections of a batch, best first within each image.

    Attributes:
        boxes (Tensor[B, D, 4]): xyxy pixels; zeros where ``mask`` is False.
        scores (Tensor[B, D]): class probability; 0 where ``mask`` is False.
        labels (Tensor[B, D]): int64 contiguous class index in ``0..C-1``; -1 where padded.
        mask (Tensor[B, D]): bool, True for a real detection.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    mask: Tensor


@dataclass(frozen=True)
class EncodedMasks:
    """One image's N instance masks as COCO compressed RLEs (``{"size": [H, W], "counts": str}``),
    in detection order: what evaluation keeps of ``ImageDetections.masks`` between batches.
    100 bool masks of a 640x480 image take 30 MB as a tensor and some kilobytes as RLE, so
    only this way do the detections of a COCO-sized val set fit in memory."""

    rles: tuple[dict[str, Any], ...]

    def __len__(self) -> int:
        return len(self.rles)

    def to(self, device: torch.device | str) -> EncodedMasks:
        """Itself: RLEs live on the host."""
        del device
        return self


class ImageDetections(NamedTuple):
    """Detections of one image, in original-image pixels.

    Attributes:
        boxes (Tensor[N, 4]): xyxy pixels.
        scores (Tensor[N]): float, best first.
        labels (Tensor[N]): int64 contiguous class index.
        masks (Tensor[N, H, W] | None): bool instance masks in the original image, for
            detectors with a mask head; None otherwise. Evaluation keeps them as
            :class:`EncodedMasks` once a batch is collected.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    masks: Tensor | EncodedMasks | None = None

    def to(self, device: torch.device | str) -> ImageDetections:
        """The same detections with every tensor on ``device``."""
        return ImageDetections(*(None if t is None else t.to(device) for t in self))
