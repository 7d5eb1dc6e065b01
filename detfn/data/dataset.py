"""The dataset object shared by the COCO and VOC readers, and how items get their randomness.

Seeding: item ``i`` of epoch ``e`` is transformed with a generator seeded from
``(seed, e, i)`` (:func:`~detfn.data.transforms.rng.item_generator`). ``dataset[i]`` uses the
dataset's own ``seed`` and ``epoch`` (``set_epoch``); the loader asks for ``dataset[(i, e)]``
instead, so worker processes, even persistent ones, never need to be told the epoch.
Wrappers derive the generator from *their* index, so repeated copies get different augmentations.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch.utils.data import Dataset

from detfn.config import Config, check
from detfn.data.errors import AnnotationError, BadImageError, Skipped
from detfn.data.file_check import check_images_exist
from detfn.data.masks import box_polygon, segmentation_area
from detfn.data.records import ImageRecord, initial_sample
from detfn.data.sample import Sample
from detfn.data.transforms.base import Transform, TransformConfig
from detfn.data.transforms.loading import LoadImageConfig
from detfn.data.transforms.rng import item_generator

__all__ = [
    "DatasetConfig",
    "DetectionDataset",
    "ItemKey",
    "SeededItems",
    "check_pipeline",
    "coco_from_dict",
    "filter_records",
    "records_to_coco_dict",
]

ItemKey = int | tuple[int, int]  # an index, or (index, epoch) as the loader asks


@dataclass(frozen=True)
class DatasetConfig(Config):
    """Common base of dataset configs, so wrappers can hold any registered dataset config."""


def check_pipeline(cfg: Any, pipeline: Sequence[TransformConfig]) -> None:
    """A non-empty pipeline must start with ``LoadImage``: later transforms need pixels."""
    if pipeline:
        check(
            cfg,
            "pipeline",
            isinstance(pipeline[0], LoadImageConfig),
            f"must start with LoadImageConfig(), got {type(pipeline[0]).__name__}",
        )


def filter_records(
    records: Sequence[ImageRecord], has_ann: Sequence[bool], cfg: Any, source: str
) -> list[ImageRecord]:
    """The records a COCO or VOC dataset keeps: all of them in ``cfg.test_mode``; else those with
    an object of a kept class (unless ``not cfg.filter_empty_gt``) and a short side of at least
    ``cfg.min_size`` (mmdetection's training filter).

    Raises:
        AnnotationError: nothing is left; ``source`` names the annotation file or split.
    """
    kept = list(records)
    if not cfg.test_mode:
        kept = [
            r
            for r, annotated in zip(records, has_ann)
            if (annotated or not cfg.filter_empty_gt) and min(r.height, r.width) >= cfg.min_size
        ]
    if not kept:
        raise AnnotationError(f"{source}: no images left (filter_empty_gt, min_size)")
    return kept


class SeededItems(Dataset):
    """Indexing by ``i`` or ``(i, epoch)``: the part every detfn dataset and wrapper shares.

    Subclasses provide ``__len__`` and ``sample(index, generator) -> Sample | Skipped``.
    """

    seed: int = 0
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch ``dataset[i]`` draws its augmentation for."""
        self.epoch = int(epoch)

    def get(self, index: int, epoch: int | None = None, seed: int | None = None) -> Any:
        """Item ``index`` after the pipeline, reproducible from (seed, epoch, index)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        index %= len(self)
        epoch = self.epoch if epoch is None else epoch
        seed = self.seed if seed is None else seed
        return self.sample(index, item_generator(seed, epoch, index))

    def __getitem__(self, key: ItemKey) -> Sample | Skipped:
        if isinstance(key, tuple):
            return self.get(key[0], epoch=key[1])
        return self.get(key)

    @cached_property
    def coco(self) -> Any:
        """pycocotools ``COCO`` ground truth of this dataset (from :meth:`to_coco_dict`)."""
        return coco_from_dict(self.to_coco_dict())


class DetectionDataset(SeededItems):
    """Images and targets read from an annotation file, transformed by a pipeline.

    Attributes:
        records: one :class:`ImageRecord` per item, after filtering.
        class_names: label ``k`` is ``class_names[k]``.
        label_to_cat_id: label ``k`` is written as category id ``label_to_cat_id[k]`` in results.
        aspect_flags: per item, 1 if width / height > 1 else 0 (for the group sampler).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        class_names: Sequence[str],
        label_to_cat_id: Sequence[int],
        pipeline: Transform,
        *,
        skip_bad_images: bool = False,
        seed: int = 0,
        source: str = "",
    ) -> None:
        self.records = tuple(records)
        self.class_names = tuple(class_names)
        self.label_to_cat_id = tuple(int(c) for c in label_to_cat_id)
        self.pipeline = pipeline
        self.skip_bad_images = skip_bad_images
        self.seed = int(seed)
        self.epoch = 0
        self.source = source
        self.aspect_flags = tuple(int(r.is_wide) for r in self.records)
        check_images_exist([r.path for r in self.records], source, skip_bad_images)
        self.image_ids = tuple(r.image_id for r in self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source!r}, {len(self)} images)"

    def sample(self, index: int, generator: torch.Generator) -> Sample | Skipped:
        """Item ``index`` through the pipeline; a bad image is skipped when so configured."""
        record = self.records[index]
        try:
            return self.pipeline(initial_sample(record), generator)
        except BadImageError as error:
            if self.skip_bad_images:
                return Skipped(record.path, str(error))
            raise

    def to_coco_dict(self) -> dict[str, Any]:
        """COCO-format ground truth of the kept images; ignore regions become ``iscrowd=1``."""
        return records_to_coco_dict(self.records, self.class_names, self.label_to_cat_id)


def records_to_coco_dict(
    records: Sequence[ImageRecord], class_names: Sequence[str], label_to_cat_id: Sequence[int]
) -> dict[str, Any]:
    """A COCO json dict (images, annotations, categories) of parsed records.

    Records with masks give each target its ``segmentation`` and each ignore region its box as a
    polygon, so the dict also serves as ``segm`` ground truth.
    """
    images, annotations = [], []
    seen: set[int] = set()
    for record in records:
        if record.image_id in seen:
            raise ValueError(f"image id {record.image_id} appears twice ({record.path})")
        seen.add(record.image_id)
        images.append(
            {
                "id": record.image_id,
                "file_name": os.path.basename(record.path),
                "height": record.height,
                "width": record.width,
            }
        )
        segs = record.segmentations
        for boxes, labels, crowd in (
            (record.boxes, record.labels, 0),
            (record.ignore_boxes, record.ignore_labels, 1),
        ):
            for k, (box, label) in enumerate(zip(boxes.tolist(), labels.tolist())):
                w, h = box[2] - box[0], box[3] - box[1]
                ann = {
                    "id": len(annotations) + 1,
                    "image_id": record.image_id,
                    "category_id": label_to_cat_id[label],
                    "bbox": [box[0], box[1], w, h],
                    "area": w * h,
                    "iscrowd": crowd,
                }
                if segs is not None and not crowd:
                    ann["segmentation"] = segs[k]
                    ann["area"] = segmentation_area(segs[k], record.height, record.width)
                elif segs is not None:
                    ann["segmentation"] = box_polygon(box)
                annotations.append(ann)
    categories = [{"id": c, "name": n} for c, n in zip(label_to_cat_id, class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def coco_from_dict(data: dict[str, Any]) -> Any:
    """A pycocotools ``COCO`` index of a json dict, without pycocotools' progress prints."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco
