"""The record one dataset item is, from loading through every transform.

Pixel convention: boxes are ``xyxy`` in continuous pixel coordinates, ``0 <= x1 < x2 <= W``; a
box covering pixel columns 0..9 is ``[0, 10)``. COCO's ``[x, y, w, h]`` maps to it as
``[x, y, x + w, y + h]``; VOC's ``xmin ymin xmax ymax`` are taken as they are, with no -1 shift, as
mmdetection 2.x does, so a VOC set and its COCO conversion give identical boxes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from detfn.structures import ImageMeta

__all__ = ["Sample"]


@dataclass(frozen=True)
class Sample:
    """One image with its targets.

    Attributes:
        image (Tensor[3, H, W]): uint8 RGB after loading; float32 after ``Normalize``.
        boxes (Tensor[N, 4]): float32 xyxy pixel boxes of the targets.
        labels (Tensor[N]): int64 contiguous labels in ``0..K-1``.
        ignore_boxes (Tensor[G, 4]): float32 xyxy regions to ignore (crowd, difficult).
        meta: shapes, scale and flip state.
        masks (Tensor[N, h, w] | None): bool instance masks, one per row of ``boxes``, on the
            image's unpadded grid ``meta.img_shape`` (``Pad`` leaves them as they are); None when
            the dataset loads no masks.
    """

    image: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    ignore_boxes: torch.Tensor
    meta: ImageMeta
    masks: torch.Tensor | None = None
