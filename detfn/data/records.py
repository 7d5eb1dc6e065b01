"""Parsed annotations of one image, and the checks every box goes through on the way in.

Both the COCO and the VOC parsers produce :class:`ImageRecord` values, so filtering, the initial
:class:`~detfn.data.sample.Sample` and the COCO-style ground truth are written once.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from detfn.data.errors import DataWarning
from detfn.data.masks import Segmentation, decode_masks
from detfn.data.sample import Sample
from detfn.structures import ImageMeta

__all__ = ["AnnotatedBox", "ImageRecord", "clean_boxes", "initial_sample", "record_from_objects"]

# One parsed object: (xyxy box as annotated, contiguous label, ignore flag: crowd / difficult).
AnnotatedBox = tuple[list[float], int, bool]


@dataclass(frozen=True)
class ImageRecord:
    """One image and its targets before any transform.

    Attributes:
        path: the image file (prefix joined with the file name).
        image_id: the id used in COCO results json.
        height, width: the size the annotation declares.
        boxes (Tensor[N, 4]): float32 xyxy targets, clipped to the image.
        labels (Tensor[N]): int64 contiguous labels.
        ignore_boxes (Tensor[G, 4]): float32 xyxy crowd / difficult regions.
        ignore_labels (Tensor[G]): int64 labels of the ignore regions (for COCO-style gt, where a
            crowd region only absorbs detections of its own class).
        segmentations: with masks (``with_mask``), one checked COCO segmentation (polygon parts
            or RLE) per row of ``boxes``, decoded only when the item is loaded; else None.
    """

    path: str
    image_id: int
    height: int
    width: int
    boxes: torch.Tensor
    labels: torch.Tensor
    ignore_boxes: torch.Tensor
    ignore_labels: torch.Tensor
    segmentations: tuple[Segmentation, ...] | None = None

    @property
    def is_wide(self) -> bool:
        """mmdetection's aspect flag: width / height > 1."""
        return self.width / self.height > 1


def clean_boxes(
    boxes: torch.Tensor, height: int, width: int, where: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip boxes partly outside the image and drop boxes that are empty or entirely outside.

    Args:
        boxes (Tensor[N, 4]): xyxy pixel boxes as annotated.
        height, width: the image size.
        where: the image (and file) named in the warning when boxes are dropped.

    Returns:
        (Tensor[K, 4], Tensor[N] bool): the kept boxes, clipped, and which of the inputs were kept.
    """
    boxes = boxes.reshape(-1, 4).to(torch.float32)
    positive = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    clipped = torch.stack(
        (
            boxes[:, 0].clamp(0, width),
            boxes[:, 1].clamp(0, height),
            boxes[:, 2].clamp(0, width),
            boxes[:, 3].clamp(0, height),
        ),
        dim=1,
    )
    inside = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    keep = positive & inside
    dropped = int((~keep).sum())
    if dropped:
        warnings.warn(
            f"{where}: dropped {dropped} box(es) with non-positive width/height or entirely "
            f"outside the {width}x{height} image",
            DataWarning,
            stacklevel=2,
        )
    return clipped[keep], keep


def record_from_objects(
    objects: list[AnnotatedBox],
    path: str,
    image_id: int,
    height: int,
    width: int,
    where: str,
    segmentations: Sequence[Segmentation | None] | None = None,
) -> ImageRecord:
    """The record of one image from its parsed objects, the tail both parsers share.

    Boxes go through :func:`clean_boxes` (``where`` names the image in its warning); objects
    flagged ignore (COCO ``iscrowd``, VOC ``difficult``) become ignore regions.
    ``segmentations`` (one per object, None for ignore regions) follow the kept targets.
    """
    boxes = torch.tensor([o[0] for o in objects], dtype=torch.float32).reshape(-1, 4)
    labels = torch.tensor([o[1] for o in objects], dtype=torch.int64)
    ignore = torch.tensor([o[2] for o in objects], dtype=torch.bool)
    boxes, keep = clean_boxes(boxes, height, width, where)
    labels, ignore = labels[keep], ignore[keep]
    segs = None
    if segmentations is not None:
        kept = [seg for seg, k in zip(segmentations, keep.tolist()) if k]
        segs = tuple(seg for seg, i in zip(kept, ignore.tolist()) if not i)
    return ImageRecord(
        path=path,
        image_id=image_id,
        height=height,
        width=width,
        boxes=boxes[~ignore],
        labels=labels[~ignore],
        ignore_boxes=boxes[ignore],
        ignore_labels=labels[ignore],
        segmentations=segs,
    )


def initial_sample(record: ImageRecord) -> Sample:
    """The sample a pipeline starts from: targets set, image still empty until ``LoadImage``.

    Masks (when the record has segmentations) are decoded here, per item, at the declared size.
    """
    shape = (record.height, record.width)
    meta = ImageMeta(
        file_name=record.path,
        image_id=record.image_id,
        ori_shape=shape,
        img_shape=shape,
        pad_shape=shape,
    )
    masks = None
    if record.segmentations is not None:
        masks = decode_masks(record.segmentations, record.height, record.width)
    return Sample(
        image=torch.empty((3, 0, 0), dtype=torch.uint8),
        boxes=record.boxes.clone(),
        labels=record.labels.clone(),
        ignore_boxes=record.ignore_boxes.clone(),
        meta=meta,
        masks=masks,
    )
