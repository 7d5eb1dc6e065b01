"""RandomCrop: crop a window; boxes are shifted and clipped, boxes that leave it are dropped."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch

from detfn.config import check
from detfn.data.sample import Sample
from detfn.data.transforms.base import Transform, TransformConfig
from detfn.data.transforms.box_ops import crop_boxes
from detfn.data.transforms.mask_ops import crop_masks
from detfn.data.transforms.rng import randint, uniform
from detfn.registry import register

__all__ = ["RandomCropConfig", "crop_sample", "crop_size_for", "with_window"]

# Draws before giving up on a crop that keeps a target; mmdetection instead drops the sample
# and loads another image, which would make an item depend on other items.
_MAX_TRIES = 10


@dataclass(frozen=True)
class RandomCropConfig(TransformConfig):
    """mmdetection's RandomCrop.

    Attributes:
        crop_size: ``(h, w)``; pixels for ``absolute``, fractions for ``relative``; for the
            ``*_range`` types the lower and upper bound (pixels, or the lower fraction).
        crop_type: ``absolute`` | ``absolute_range`` | ``relative`` | ``relative_range``.
        allow_negative_crop: accept a crop that keeps no target box. When False, the crop is
            drawn again (up to 10 times) and the sample is left uncropped if none keeps a box.
        clip_border: clip boxes to the crop (boxes wholly outside are always dropped).
    """

    crop_size: tuple[float, float] = (384.0, 600.0)
    crop_type: Literal["absolute", "absolute_range", "relative", "relative_range"] = "absolute"
    allow_negative_crop: bool = False
    clip_border: bool = True

    def __post_init__(self) -> None:
        a, b = self.crop_size
        check(self, "crop_size", a > 0 and b > 0, f"must be positive, got {self.crop_size!r}")
        if self.crop_type.startswith("relative"):
            check(self, "crop_size", a <= 1 and b <= 1, f"must be in (0, 1], got {self.crop_size}")
        if self.crop_type == "absolute_range":
            check(self, "crop_size", a <= b, f"must be (low, high), got {self.crop_size!r}")


def crop_size_for(
    cfg: RandomCropConfig, height: int, width: int, generator: torch.Generator
) -> tuple[int, int]:
    """``(crop_h, crop_w)`` for an image of ``height x width``, never larger than the image."""
    a, b = cfg.crop_size
    if cfg.crop_type == "absolute":
        return min(int(a), height), min(int(b), width)
    if cfg.crop_type == "absolute_range":
        crop_h = randint(generator, min(height, int(a)), min(height, int(b)))
        crop_w = randint(generator, min(width, int(a)), min(width, int(b)))
        return crop_h, crop_w
    if cfg.crop_type == "relative_range":
        a, b = uniform(generator, a, 1.0), uniform(generator, b, 1.0)
    return max(1, int(height * a + 0.5)), max(1, int(width * b + 0.5))


def crop_sample(
    sample: Sample, left: int, top: int, height: int, width: int, clip: bool = True
) -> Sample:
    """The sample cropped to ``[left, left + width) x [top, top + height)`` of its image."""
    boxes, keep = crop_boxes(sample.boxes, left, top, height, width, clip)
    ignore, _ = crop_boxes(sample.ignore_boxes, left, top, height, width, clip)
    return with_window(sample, left, top, height, width, boxes, keep, ignore)


def with_window(
    sample: Sample,
    left: int,
    top: int,
    height: int,
    width: int,
    boxes: torch.Tensor,
    keep: torch.Tensor,
    ignore_boxes: torch.Tensor,
) -> Sample:
    """The sample reduced to the window at (``left``, ``top``) of ``height x width``, given the
    window's boxes (Tensor[K, 4], already moved into it), which of the sample's boxes they are
    (``keep``, Tensor[N] bool) and its ignore boxes: image, labels, masks and shapes follow."""
    image = sample.image[:, top : top + height, left : left + width]
    shape = (int(image.shape[1]), int(image.shape[2]))
    return dataclasses.replace(
        sample,
        image=image,
        boxes=boxes,
        labels=sample.labels[keep],
        ignore_boxes=ignore_boxes,
        meta=dataclasses.replace(sample.meta, img_shape=shape, pad_shape=shape),
        masks=crop_masks(sample.masks, keep, left, top, height, width),
    )


@register(RandomCropConfig)
def build_random_crop(cfg: RandomCropConfig) -> Transform:
    def transform(sample: Sample, generator: torch.Generator) -> Sample:
        height, width = sample.meta.img_shape
        crop_h, crop_w = crop_size_for(cfg, height, width, generator)
        for _ in range(_MAX_TRIES):
            top = randint(generator, 0, max(height - crop_h, 0))
            left = randint(generator, 0, max(width - crop_w, 0))
            out = crop_sample(sample, left, top, crop_h, crop_w, cfg.clip_border)
            if cfg.allow_negative_crop or len(out.boxes) or not len(sample.boxes):
                return out
        return sample

    return transform
