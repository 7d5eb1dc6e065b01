"""Instance masks on the way in: COCO polygons and RLE, checked at parse time, decoded per item.

Storage: an :class:`~detfn.data.records.ImageRecord` keeps each target's segmentation as the
annotation file gives it (polygon parts or RLE), which is compact for a whole dataset in memory
(COCO train2017's polygons are a few hundred MB as Python lists, its bitmaps would be ~500 GB).
:func:`decode_masks` turns them into a ``Tensor[N, H, W]`` bool bitmap when an item is loaded,
through pycocotools' mask API as mmdetection's ``LoadAnnotations(poly2mask=True)`` does
(``frPyObjects`` -> ``merge`` -> ``decode``). From then on the masks are bitmaps on the image's
own pixel grid, so every geometric transform moves them with the same tensor operation it applies
to the image (:mod:`detfn.data.transforms.mask_ops`), and boxes and masks cannot drift apart.

Bad segmentations: a polygon part with fewer than 3 points (6 numbers) is dropped, as
mmdetection drops it; an annotation left with no valid part (an empty polygon) is dropped with its
box and counted in one :class:`~detfn.data.errors.DataWarning` per file, as boxes are. A value
that is neither polygons nor RLE, an odd coordinate count, or an RLE whose ``size`` is not the
image's is an :class:`~detfn.data.errors.AnnotationError` naming the file and annotation, because
using it would give a silently wrong mask.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from detfn.data.errors import AnnotationError, DataWarning

__all__ = [
    "Segmentation",
    "box_polygon",
    "check_segmentation",
    "decode_masks",
    "decode_segmentation",
    "masks_to_boxes",
    "segmentation_area",
    "warn_dropped_masks",
]

# COCO's two encodings: polygon parts ``[[x0, y0, x1, y1, ...], ...]`` or an RLE dict
# ``{"size": [h, w], "counts": str | list[int]}``.
Segmentation = list[list[float]] | dict[str, Any]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_segmentation(seg: Any, height: int, width: int, where: str) -> Segmentation | None:
    """The annotation's segmentation with invalid polygon parts removed; None when none is left.

    Args:
        seg: the ``segmentation`` value of one annotation.
        height, width: the image size the annotation declares.
        where: file and annotation named in errors.

    Raises:
        AnnotationError: not a polygon list or an RLE dict, an odd or non-numeric coordinate
            list, or an RLE whose ``size`` is not ``[height, width]``.
    """
    if isinstance(seg, dict):
        if "size" not in seg or "counts" not in seg:
            raise AnnotationError(f"{where}: RLE 'segmentation' needs 'size' and 'counts'")
        size = seg["size"]
        if not (isinstance(size, list) and [int(v) for v in size] == [height, width]):
            raise AnnotationError(
                f"{where}: RLE 'segmentation' has size {size!r} but the image is "
                f"[{height}, {width}] (h, w)"
            )
        if not isinstance(seg["counts"], (str, bytes, list)):
            raise AnnotationError(f"{where}: RLE 'counts' must be a string or a list of ints")
        return seg
    if not isinstance(seg, list):
        raise AnnotationError(
            f"{where}: 'segmentation' must be polygons (list) or RLE (dict), got "
            f"{type(seg).__name__}"
        )
    parts = []
    for k, part in enumerate(seg):
        if not (isinstance(part, list) and all(_is_number(v) for v in part)):
            raise AnnotationError(f"{where}: polygon {k} must be a list of numbers")
        if len(part) % 2:
            raise AnnotationError(f"{where}: polygon {k} has an odd number ({len(part)}) of coords")
        if len(part) >= 6:  # at least 3 points; mmdetection drops shorter parts too
            parts.append([float(v) for v in part])
    return parts or None


def warn_dropped_masks(dropped: Sequence[Any], path: str) -> None:
    """One warning per file for the annotations dropped because no polygon part was valid."""
    if dropped:
        shown = ", ".join(str(a) for a in list(dropped)[:10])
        more = f" and {len(dropped) - 10} more" if len(dropped) > 10 else ""
        warnings.warn(
            f"{path}: dropped {len(dropped)} annotation(s) whose polygon has fewer than 3 points "
            f"(ids {shown}{more}); their boxes are dropped too",
            DataWarning,
            stacklevel=3,
        )


def _rle(seg: Segmentation, height: int, width: int) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):  # polygon parts: rasterise each, then union
        return mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    if isinstance(seg["counts"], list):  # uncompressed RLE
        return mask_utils.frPyObjects(seg, height, width)
    return seg  # compressed RLE, as written by pycocotools


def decode_segmentation(seg: Segmentation, height: int, width: int) -> np.ndarray:
    """``ndarray[H, W]`` uint8 0/1 of one checked segmentation (pycocotools' mask API)."""
    from pycocotools import mask as mask_utils

    return mask_utils.decode(_rle(seg, height, width))


def segmentation_area(seg: Segmentation, height: int, width: int) -> float:
    """Pixel count of one segmentation (COCO's ``area``), without decoding it."""
    from pycocotools import mask as mask_utils

    return float(mask_utils.area(_rle(seg, height, width)))


def decode_masks(segs: Sequence[Segmentation], height: int, width: int) -> torch.Tensor:
    """Tensor[N, H, W] bool: the bitmap of every target of one image."""
    if not segs:
        return torch.zeros((0, height, width), dtype=torch.bool)
    with warnings.catch_warnings():
        # pycocotools 2.0.x under numpy 2 warns about its own __array__ on every decode
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        planes = [decode_segmentation(s, height, width) for s in segs]
    return torch.from_numpy(np.stack(planes)).to(torch.bool)


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tensor[N, 4] float32 xyxy: the tight pixel box ``[x0, y0, x1 + 1, y1 + 1]`` of each mask.

    An empty mask gives an all-zero box. (torchvision's ``masks_to_boxes`` returns inclusive
    ``x1, y1``; detfn's boxes are half-open, see :mod:`detfn.data.sample`.)
    """
    n = masks.shape[0]
    boxes = torch.zeros((n, 4), dtype=torch.float32)
    if n == 0:
        return boxes
    cols = masks.any(dim=1)  # [N, W]
    rows = masks.any(dim=2)  # [N, H]
    xs = torch.arange(masks.shape[2], dtype=torch.float32)
    ys = torch.arange(masks.shape[1], dtype=torch.float32)
    big = float(max(masks.shape[1:]) + 1)
    x0 = torch.where(cols, xs, big).amin(1)
    x1 = torch.where(cols, xs, -1.0).amax(1) + 1
    y0 = torch.where(rows, ys, big).amin(1)
    y1 = torch.where(rows, ys, -1.0).amax(1) + 1
    nonempty = cols.any(1)
    boxes[nonempty] = torch.stack((x0, y0, x1, y1), 1)[nonempty]
    return boxes


def box_polygon(box: Sequence[float]) -> list[list[float]]:
    """The polygon of an xyxy box, the segmentation a crowd region without one gets in gt json."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]
