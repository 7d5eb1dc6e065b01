"""RandomFlip: horizontal, vertical or diagonal flips of the image and its boxes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch

from detfn.config import check, check_unit_interval
from detfn.data.sample import Sample
from detfn.data.transforms.base import Transform, TransformConfig
from detfn.data.transforms.mask_ops import flip_masks
from detfn.data.transforms.rng import uniform
from detfn.registry import register

__all__ = ["Direction", "RandomFlipConfig", "flip_boxes", "flip_sample"]

Direction = Literal["horizontal", "vertical", "diagonal"]

# A flip state is (flipped left-right, flipped top-bottom); a diagonal flip is both.
_AXES: dict[str, tuple[bool, bool]] = {
    "horizontal": (True, False),
    "vertical": (False, True),
    "diagonal": (True, True),
}
_NAMES = {axes: name for name, axes in _AXES.items()}


@dataclass(frozen=True)
class RandomFlipConfig(TransformConfig):
    """mmdetection's RandomFlip.

    Attributes:
        prob: probability of flipping at all; it is split evenly across ``direction`` (as
            mmdetection does for a float ``flip_ratio`` with a list of directions).
        direction: the flips to choose from.
    """

    prob: float = 0.5
    direction: tuple[Direction, ...] = ("horizontal",)

    def __post_init__(self) -> None:
        check_unit_interval(self, "prob")
        check(self, "direction", len(self.direction) >= 1, "needs at least one direction")


def flip_boxes(boxes: torch.Tensor, height: int, width: int, direction: str) -> torch.Tensor:
    """Mirror boxes inside an image of ``height x width``.

    Args:
        boxes (Tensor[N, 4]): xyxy, continuous coordinates, so ``x -> width - x`` (no -1).
    Returns:
        Tensor[N, 4]: xyxy, still with ``x1 <= x2`` and ``y1 <= y2``.
    """
    flip_x, flip_y = _AXES[direction]
    x1, y1, x2, y2 = boxes.unbind(-1)
    if flip_x:
        x1, x2 = width - x2, width - x1
    if flip_y:
        y1, y2 = height - y2, height - y1
    return torch.stack((x1, y1, x2, y2), dim=-1)


def flip_sample(sample: Sample, direction: str) -> Sample:
    """The sample flipped in ``direction``; the meta's flip state composes (two flips undo)."""
    height, width = sample.meta.img_shape
    flip_x, flip_y = _AXES[direction]
    dims = [d for d, on in ((-1, flip_x), (-2, flip_y)) if on]
    image = torch.flip(sample.image, dims)
    old = _AXES.get(sample.meta.flip_direction or "", (False, False))
    state = (old[0] != flip_x, old[1] != flip_y)
    meta = dataclasses.replace(sample.meta, flip=any(state), flip_direction=_NAMES.get(state))
    return dataclasses.replace(
        sample,
        image=image,
        boxes=flip_boxes(sample.boxes, height, width, direction),
        ignore_boxes=flip_boxes(sample.ignore_boxes, height, width, direction),
        meta=meta,
        masks=flip_masks(sample.masks, flip_x, flip_y),
    )


@register(RandomFlipConfig)
def build_random_flip(cfg: RandomFlipConfig) -> Transform:
    def transform(sample: Sample, generator: torch.Generator) -> Sample:
        draw = uniform(generator)
        if draw >= cfg.prob:
            return sample
        which = min(int(draw / cfg.prob * len(cfg.direction)), len(cfg.direction) - 1)
        return flip_sample(sample, cfg.direction[which])

    return transform
