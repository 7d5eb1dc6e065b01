"""Resize: mmdetection's single-, multi-scale and ratio-range resizing, boxes scaled and clipped."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as tvf

from detfn.config import check
from detfn.data.sample import Sample
from detfn.data.transforms.base import Transform, TransformConfig
from detfn.data.transforms.box_ops import clip_to_shape
from detfn.data.transforms.mask_ops import resize_masks
from detfn.data.transforms.rng import choice, randint, uniform
from detfn.registry import register

__all__ = ["ResizeConfig", "choose_scale", "rescale_size", "resize_sample"]

_INTERPOLATION = {
    "nearest": InterpolationMode.NEAREST,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
}


@dataclass(frozen=True)
class ResizeConfig(TransformConfig):
    """mmdetection's Resize.

    Attributes:
        scale: one or more ``(w, h)`` scales. With ``keep_ratio`` a scale bounds the long edge by
            ``max(scale)`` and the short edge by ``min(scale)``; without it the image becomes
            exactly ``w x h``.
        multiscale_mode: with two or more scales, ``"range"`` draws the long and short edges
            uniformly between the scales' extremes, ``"value"`` picks one of the scales.
        ratio_range: ``(low, high)``: multiply the single scale by a ratio drawn from it.
        keep_ratio: keep the aspect ratio (mmdetection's default for detection).
        clip_border: clip boxes to the resized image.
        interpolation: image interpolation; bilinear without antialiasing, as OpenCV does.
    """

    scale: tuple[tuple[int, int], ...] = ((1333, 800),)
    multiscale_mode: Literal["range", "value"] = "range"
    ratio_range: tuple[float, float] | None = None
    keep_ratio: bool = True
    clip_border: bool = True
    interpolation: Literal["nearest", "bilinear", "bicubic"] = "bilinear"

    def __post_init__(self) -> None:
        check(self, "scale", len(self.scale) >= 1, "needs at least one (w, h) scale")
        check(
            self,
            "scale",
            all(w > 0 and h > 0 for w, h in self.scale),
            f"must hold positive (w, h) pairs, got {self.scale!r}",
        )
        if self.ratio_range is not None:
            low, high = self.ratio_range
            check(self, "ratio_range", 0 < low <= high, f"must be 0 < low <= high, got {low, high}")
            check(
                self,
                "scale",
                len(self.scale) == 1,
                f"must hold one scale when ratio_range is set, got {self.scale!r}",
            )


def choose_scale(cfg: ResizeConfig, generator: torch.Generator) -> tuple[int, int]:
    """The ``(w, h)`` target scale for one image, drawn as mmdetection's Resize does."""
    if cfg.ratio_range is not None:
        w, h = cfg.scale[0]
        ratio = uniform(generator, *cfg.ratio_range)
        return max(1, int(w * ratio)), max(1, int(h * ratio))
    if len(cfg.scale) == 1:
        return cfg.scale[0]
    if cfg.multiscale_mode == "value":
        return cfg.scale[choice(generator, len(cfg.scale))]
    longs = [max(s) for s in cfg.scale]
    shorts = [min(s) for s in cfg.scale]
    long_edge = randint(generator, min(longs), max(longs))
    short_edge = randint(generator, min(shorts), max(shorts))
    return long_edge, short_edge


def rescale_size(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """``(new_h, new_w)`` keeping the aspect ratio within ``scale`` (mmcv's ``rescale_size``).

    The factor is ``min(max(scale) / long_edge, min(scale) / short_edge)``; sizes round half up
    and are at least 1 pixel, so a very thin image (4000x1 into 1333x800) keeps a 1-pixel side
    instead of becoming empty.
    """
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))


def resize_sample(
    sample: Sample,
    size: tuple[int, int],
    clip_border: bool = True,
    interpolation: str = "bilinear",
) -> Sample:
    """The sample resized to ``size = (h, w)``; boxes scaled by the actual per-axis factors.

    ``meta.scale_factor`` is multiplied by the new factors, so dividing a box by it maps it back
    to the original image after any number of resizes. Masks are resized by nearest neighbour.
    """
    height, width = sample.meta.img_shape
    new_h, new_w = size
    image = tvf.resize(
        sample.image, [new_h, new_w], interpolation=_INTERPOLATION[interpolation], antialias=False
    )
    sx, sy = new_w / width, new_h / height
    factor = torch.tensor([sx, sy, sx, sy], dtype=torch.float32)
    boxes = sample.boxes * factor
    ignore = sample.ignore_boxes * factor
    if clip_border:
        boxes = clip_to_shape(boxes, new_h, new_w)
        ignore = clip_to_shape(ignore, new_h, new_w)
    old = sample.meta.scale_factor
    meta = dataclasses.replace(
        sample.meta,
        img_shape=(new_h, new_w),
        pad_shape=(new_h, new_w),
        scale_factor=(old[0] * sx, old[1] * sy, old[2] * sx, old[3] * sy),
    )
    masks = resize_masks(sample.masks, new_h, new_w)
    return dataclasses.replace(
        sample, image=image, boxes=boxes, ignore_boxes=ignore, meta=meta, masks=masks
    )


@register(ResizeConfig)
def build_resize(cfg: ResizeConfig) -> Transform:
    def transform(sample: Sample, generator: torch.Generator) -> Sample:
        scale = choose_scale(cfg, generator)
        height, width = sample.meta.img_shape
        if cfg.keep_ratio:
            size = rescale_size(height, width, scale)
        else:
            size = (scale[1], scale[0])
        return resize_sample(sample, size, cfg.clip_border, cfg.interpolation)

    return transform
