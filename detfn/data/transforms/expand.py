"""Expand: place the image at a random spot of a larger mean-filled canvas (SSD's zoom out)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from detfn.config import check, check_unit_interval
from detfn.data.sample import Sample
from detfn.data.transforms.base import Transform, TransformConfig
from detfn.data.transforms.mask_ops import expand_masks
from detfn.data.transforms.rng import uniform
from detfn.registry import register

__all__ = ["ExpandConfig", "expand_sample"]


@dataclass(frozen=True)
class ExpandConfig(TransformConfig):
    """mmdetection's Expand.

    Attributes:
        mean: canvas fill per channel in RGB order (cast to the image dtype, so truncated for
            uint8 images, as mmdetection's ``np.full`` does).
        ratio_range: the canvas is ``ratio`` times the image, ``ratio`` drawn from this range.
        prob: probability of expanding.
    """

    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    ratio_range: tuple[float, float] = (1.0, 4.0)
    prob: float = 0.5

    def __post_init__(self) -> None:
        low, high = self.ratio_range
        check(self, "ratio_range", 1 <= low <= high, f"must be 1 <= low <= high, got {low, high}")
        check_unit_interval(self, "prob")


def expand_sample(
    sample: Sample, ratio: float, left: int, top: int, mean: tuple[float, ...]
) -> Sample:
    """The sample on a ``ratio``-times larger canvas with its image at ``(left, top)``."""
    channels, height, width = sample.image.shape
    canvas_h, canvas_w = int(height * ratio), int(width * ratio)
    fill = torch.tensor(mean, dtype=torch.float64).to(sample.image.dtype).view(channels, 1, 1)
    canvas = fill.expand(channels, canvas_h, canvas_w).clone()
    canvas[:, top : top + height, left : left + width] = sample.image
    offset = torch.tensor([left, top, left, top], dtype=torch.float32)
    meta = dataclasses.replace(
        sample.meta, img_shape=(canvas_h, canvas_w), pad_shape=(canvas_h, canvas_w)
    )
    return dataclasses.replace(
        sample,
        image=canvas,
        boxes=sample.boxes + offset,
        ignore_boxes=sample.ignore_boxes + offset,
        meta=meta,
        masks=expand_masks(sample.masks, canvas_h, canvas_w, left, top),
    )


@register(ExpandConfig)
def build_expand(cfg: ExpandConfig) -> Transform:
    def transform(sample: Sample, generator: torch.Generator) -> Sample:
        if uniform(generator) > cfg.prob:
            return sample
        height, width = sample.image.shape[-2:]
        ratio = uniform(generator, *cfg.ratio_range)
        left = int(uniform(generator, 0, width * ratio - width))
        top = int(uniform(generator, 0, height * ratio - height))
        return expand_sample(sample, ratio, left, top, cfg.mean)

    return transform
