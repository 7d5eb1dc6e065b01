"""Pad: pad the image at the bottom/right to a fixed size or a multiple of ``size_divisor``.

Boxes and instance masks are left as they are: padding adds pixels only at the bottom/right, so
no coordinate moves, and masks stay on the unpadded ``img_shape`` grid (the padded area holds no
object; mask targets read zeros there, see :mod:`detfn.models.roi_heads.mask_targets`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from detfn.config import check
from detfn.data.sample import Sample
from detfn.data.transforms.base import Transform, TransformConfig
from detfn.registry import register

__all__ = ["PadConfig", "pad_image", "padded_size"]


@dataclass(frozen=True)
class PadConfig(TransformConfig):
    """mmdetection's Pad; exactly one of ``size`` and ``size_divisor`` is set.

    Attributes:
        size: fixed ``(h, w)`` to pad to (must not be smaller than the image).
        size_divisor: pad height and width up to a multiple of it (32 for a 5-level FPN).
        pad_value: value of the new pixels.
    """

    size: tuple[int, int] | None = None
    size_divisor: int | None = 32
    pad_value: float = 0.0

    def __post_init__(self) -> None:
        check(
            self,
            "size",
            (self.size is None) != (self.size_divisor is None),
            f"and size_divisor: set exactly one, got {self.size!r} and {self.size_divisor!r}",
        )
        if self.size_divisor is not None:
            check(
                self, "size_divisor", self.size_divisor > 0, f"must be > 0, got {self.size_divisor}"
            )


def padded_size(height: int, width: int, divisor: int) -> tuple[int, int]:
    """``(h, w)`` rounded up to multiples of ``divisor``."""
    return math.ceil(height / divisor) * divisor, math.ceil(width / divisor) * divisor


def pad_image(image: torch.Tensor, height: int, width: int, value: float) -> torch.Tensor:
    """Tensor[C, height, width]: ``image`` (Tensor[C, h, w]) top-left, ``value`` elsewhere."""
    h, w = image.shape[-2:]
    if height < h or width < w:
        raise ValueError(f"cannot pad a {w}x{h} image to the smaller {width}x{height}")
    out = image.new_full((image.shape[0], height, width), value)
    out[:, :h, :w] = image
    return out


@register(PadConfig)
def build_pad(cfg: PadConfig) -> Transform:
    def transform(sample: Sample, generator: torch.Generator) -> Sample:
        del generator  # deterministic
        height, width = sample.image.shape[-2:]
        if cfg.size is not None:
            target = cfg.size
        else:
            target = padded_size(height, width, cfg.size_divisor)
        try:
            image = pad_image(sample.image, target[0], target[1], cfg.pad_value)
        except ValueError as error:
            raise ValueError(f"{sample.meta.file_name}: Pad: {error}") from None
        meta = dataclasses.replace(sample.meta, pad_shape=(int(target[0]), int(target[1])))
        return dataclasses.replace(sample, image=image, meta=meta)

    return transform
