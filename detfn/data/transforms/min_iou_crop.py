"""MinIoURandomCrop: SSD's crop whose overlap with every target reaches a drawn IoU."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import box_iou

from detfn.config import check, check_unit_interval
from detfn.data.sample import Sample
from detfn.data.transforms.base import Transform, TransformConfig
from detfn.data.transforms.box_ops import clip_to_shape
from detfn.data.transforms.crop import with_window
from detfn.data.transforms.rng import choice, uniform
from detfn.registry import register

__all__ = ["MinIoURandomCropConfig", "centers_inside", "crop_to_patch", "min_iou_crop"]

# mmdetection loops forever over modes and 50 tries each; detfn bounds the modes too and then
# returns the sample unchanged, which is also the outcome of the mode "1" (no crop).
_TRIES_PER_MODE = 50
_MAX_MODES = 50


@dataclass(frozen=True)
class MinIoURandomCropConfig(TransformConfig):
    """mmdetection's MinIoURandomCrop.

    Attributes:
        min_ious: the IoU floors to draw from; the draw also includes "no crop" and 0.
        min_crop_size: the crop's sides are drawn from ``[min_crop_size, 1]`` of the image's.
        clip_border: clip kept boxes to the crop.
    """

    min_ious: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    min_crop_size: float = 0.3
    clip_border: bool = True

    def __post_init__(self) -> None:
        check(
            self, "min_ious", all(0 <= v <= 1 for v in self.min_ious), f"in [0, 1]: {self.min_ious}"
        )
        check_unit_interval(self, "min_crop_size")


def centers_inside(boxes: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
    """Tensor[N] bool: boxes (Tensor[N, 4], xyxy) with centre strictly inside ``patch`` [4]."""
    center = (boxes[:, :2] + boxes[:, 2:]) / 2  # [N, 2]
    return (center > patch[:2]).all(1) & (center < patch[2:]).all(1)


def crop_to_patch(sample: Sample, patch: torch.Tensor, clip: bool = True) -> Sample:
    """The sample cropped to the integer xyxy ``patch``; keeps boxes whose centre is inside."""
    x1, y1, x2, y2 = (int(v) for v in patch.tolist())
    height, width = y2 - y1, x2 - x1
    offset = patch.new_tensor([x1, y1, x1, y1])

    def move(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keep = centers_inside(boxes, patch)
        moved = boxes[keep] - offset
        return (clip_to_shape(moved, height, width) if clip else moved), keep

    boxes, keep = move(sample.boxes)
    ignore, _ = move(sample.ignore_boxes)
    return with_window(sample, x1, y1, height, width, boxes, keep, ignore)


def _draw_patch(
    cfg: MinIoURandomCropConfig, height: int, width: int, generator: torch.Generator
) -> torch.Tensor | None:
    new_w = uniform(generator, cfg.min_crop_size * width, width)
    new_h = uniform(generator, cfg.min_crop_size * height, height)
    if not 0.5 <= new_h / new_w <= 2:  # the crop's aspect ratio stays within 1:2 .. 2:1
        return None
    left = uniform(generator, 0, width - new_w)
    top = uniform(generator, 0, height - new_h)
    patch = torch.tensor([int(left), int(top), int(left + new_w), int(top + new_h)])
    if patch[2] == patch[0] or patch[3] == patch[1]:
        return None
    return patch.to(torch.float32)


def min_iou_crop(
    sample: Sample, min_iou: float, cfg: MinIoURandomCropConfig, generator: torch.Generator
) -> Sample | None:
    """A crop whose IoU with every target is at least ``min_iou`` and that keeps the centre of
    at least one target; None when 50 draws found none."""
    height, width = sample.meta.img_shape
    boxes = sample.boxes
    for _ in range(_TRIES_PER_MODE):
        patch = _draw_patch(cfg, height, width, generator)
        if patch is None:
            continue
        if len(boxes):
            if box_iou(patch[None], boxes).min() < min_iou:
                continue
            if not centers_inside(boxes, patch).any():
                continue
        return crop_to_patch(sample, patch, cfg.clip_border)
    return None


@register(MinIoURandomCropConfig)
def build_min_iou_random_crop(cfg: MinIoURandomCropConfig) -> Transform:
    modes = (1.0, *cfg.min_ious, 0.0)  # 1 means "leave the image as it is"

    def transform(sample: Sample, generator: torch.Generator) -> Sample:
        for _ in range(_MAX_MODES):
            min_iou = modes[choice(generator, len(modes))]
            if min_iou >= 1:
                return sample
            out = min_iou_crop(sample, min_iou, cfg, generator)
            if out is not None:
                return out
        return sample

    return transform
