"""PhotoMetricDistortion: SSD-style brightness, contrast, saturation, hue and channel swap."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from detfn.config import check, check_non_negative
from detfn.data.sample import Sample
from detfn.data.transforms.base import Transform, TransformConfig
from detfn.data.transforms.rng import coin, uniform
from detfn.registry import register

__all__ = ["PhotoMetricDistortionConfig", "hsv_to_rgb", "rgb_to_hsv"]


@dataclass(frozen=True)
class PhotoMetricDistortionConfig(TransformConfig):
    """mmdetection's PhotoMetricDistortion; each step fires with probability 0.5.

    Order: brightness, then contrast either first or last (a coin), saturation and hue in HSV
    space, then a random channel permutation. The output is float32 on the 0..255 scale and is
    not clipped (as in mmdetection), so put it before ``Normalize``.
    """

    brightness_delta: int = 32
    contrast_range: tuple[float, float] = (0.5, 1.5)
    saturation_range: tuple[float, float] = (0.5, 1.5)
    hue_delta: int = 18

    def __post_init__(self) -> None:
        check_non_negative(self, "brightness_delta", "hue_delta")
        for field in ("contrast_range", "saturation_range"):
            low, high = getattr(self, field)
            check(self, field, 0 <= low <= high, f"must be 0 <= low <= high, got {(low, high)}")


def rgb_to_hsv(image: torch.Tensor) -> torch.Tensor:
    """HSV of a float RGB image (Tensor[3, H, W]): H in degrees [0, 360), S in [0, 1], V = max.

    The same convention as OpenCV's float conversion, which mmdetection uses.
    """
    r, g, b = image.unbind(0)
    value, _ = image.max(0)
    low, _ = image.min(0)
    delta = value - low
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(
        value == r,
        60 * (g - b) / safe,
        torch.where(value == g, 120 + 60 * (b - r) / safe, 240 + 60 * (r - g) / safe),
    )
    hue = torch.where(delta > 0, hue % 360, torch.zeros_like(hue))
    sat = torch.where(value != 0, delta / torch.where(value != 0, value, 1.0), 0.0)
    return torch.stack((hue, sat, value))


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv` (Tensor[3, H, W] -> Tensor[3, H, W])."""
    hue, sat, value = hsv.unbind(0)
    n = torch.tensor([5.0, 3.0, 1.0]).view(3, 1, 1)  # one offset per output channel R, G, B
    k = (n + hue / 60) % 6  # [3, H, W]
    ramp = torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    return value - value * sat * ramp


@register(PhotoMetricDistortionConfig)
def build_photo_metric_distortion(cfg: PhotoMetricDistortionConfig) -> Transform:
    def contrast(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if coin(generator, 0.5):
            return image * uniform(generator, *cfg.contrast_range)
        return image

    def transform(sample: Sample, generator: torch.Generator) -> Sample:
        image = sample.image.to(torch.float32)
        if coin(generator, 0.5):
            image = image + uniform(generator, -cfg.brightness_delta, cfg.brightness_delta)
        contrast_first = coin(generator, 0.5)
        if contrast_first:
            image = contrast(image, generator)
        hsv = rgb_to_hsv(image)
        if coin(generator, 0.5):
            hsv[1] = hsv[1] * uniform(generator, *cfg.saturation_range)
        if coin(generator, 0.5):
            hsv[0] = (hsv[0] + uniform(generator, -cfg.hue_delta, cfg.hue_delta)) % 360
        image = hsv_to_rgb(hsv)
        if not contrast_first:
            image = contrast(image, generator)
        if coin(generator, 0.5):
            image = image[torch.randperm(3, generator=generator)]
        return dataclasses.replace(sample, image=image)

    return transform
