"""CocoDataset: COCO json through pycocotools conventions.

Category ids (with gaps, 1..90 for COCO) map to contiguous labels ``0..K-1`` in the order of
``classes`` (or of increasing id when ``classes`` is None), and back through ``label_to_cat_id``
for results json. ``iscrowd`` boxes become ignore regions. Boxes ``[x, y, w, h]`` become
``[x, y, x + w, y + h]`` (see :mod:`detfn.data.sample` for the pixel convention).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from detfn.config import check
from detfn.data.bundled import resolve_path
from detfn.data.coco_checks import check_annotation_entries, index_images
from detfn.data.dataset import (
    DatasetConfig,
    DetectionDataset,
    check_pipeline,
    coco_from_dict,
    filter_records,
)
from detfn.data.errors import AnnotationError
from detfn.data.masks import check_segmentation, warn_dropped_masks
from detfn.data.records import AnnotatedBox, ImageRecord, record_from_objects
from detfn.data.transforms.base import TransformConfig, build_pipeline
from detfn.registry import register

__all__ = ["CocoDataset", "CocoDatasetConfig", "load_coco_json", "parse_coco"]


@dataclass(frozen=True)
class CocoDatasetConfig(DatasetConfig):
    """A COCO-format detection dataset.

    Attributes:
        ann_file: the instances json (a path, or ``bundled://bccd/...``).
        img_prefix: folder the images' ``file_name`` is relative to.
        classes: category names to keep, in label order; None keeps all categories.
        pipeline: transforms, starting with ``LoadImageConfig()``.
        filter_empty_gt: drop images with no annotation of a kept category (training only).
        min_size: drop images whose shorter side is below it (training only).
        test_mode: keep every image, in file order (evaluation).
        skip_bad_images: skip, count and report unreadable images instead of raising.
        with_mask: also load each target's instance mask (polygons or RLE, see
            :mod:`detfn.data.masks`); samples then carry ``masks`` and batches ``Batch.masks``.
    """

    ann_file: str = ""
    img_prefix: str = ""
    classes: tuple[str, ...] | None = None
    pipeline: tuple[TransformConfig, ...] = ()
    filter_empty_gt: bool = True
    min_size: int = 32
    test_mode: bool = False
    skip_bad_images: bool = False
    with_mask: bool = False

    def __post_init__(self) -> None:
        check(self, "ann_file", bool(self.ann_file), "must name a COCO json file")
        check(self, "min_size", self.min_size >= 0, f"must be >= 0, got {self.min_size}")
        check_pipeline(self, self.pipeline)


class CocoDataset(DetectionDataset):
    """A :class:`DetectionDataset` read from COCO json; ``coco`` is the file's pycocotools index."""

    def __init__(self, cfg: CocoDatasetConfig, seed: int = 0) -> None:
        ann_file = resolve_path(cfg.ann_file)
        data = load_coco_json(ann_file)
        records, has_ann, names, cat_ids = parse_coco(
            data, str(ann_file), str(resolve_path(cfg.img_prefix)), cfg.classes, cfg.with_mask
        )
        records = filter_records(records, has_ann, cfg, str(ann_file))
        super().__init__(
            records,
            names,
            cat_ids,
            build_pipeline(cfg.pipeline),
            skip_bad_images=cfg.skip_bad_images,
            seed=seed,
            source=str(ann_file),
        )
        self.ann_file = ann_file

    @cached_property
    def coco(self) -> Any:
        """pycocotools ``COCO`` of the whole annotation file (evaluate with ``catIds`` =
        ``label_to_cat_id`` and ``imgIds`` = ``image_ids``)."""
        return coco_from_dict(load_coco_json(self.ann_file))


def load_coco_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed json; a missing file or invalid json is an :class:`AnnotationError`."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise AnnotationError(f"{path}: annotation file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise AnnotationError(f"{path}: cannot read annotation file: {error}") from None
    except json.JSONDecodeError as error:
        raise AnnotationError(f"{path}: invalid JSON: {error}") from None
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        _require(data, key, "the top level", path)
    return data


def _require(obj: Any, key: str, where: str, path: Any) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise AnnotationError(f"{path}: {where} has no key {key!r}")
    return obj[key]


def _label_map(
    categories: list[Any], classes: Sequence[str] | None, path: str
) -> tuple[dict[int, int], tuple[str, ...], tuple[int, ...]]:
    """``cat_id -> label``, class names and label -> cat id for the selected categories."""
    by_name: dict[str, int] = {}
    for i, cat in enumerate(categories):
        cat_id = _require(cat, "id", f"categories[{i}]", path)
        name = _require(cat, "name", f"categories[{i}] (id {cat_id})", path)
        if name in by_name:
            raise AnnotationError(f"{path}: category name {name!r} appears twice in 'categories'")
        by_name[name] = cat_id
    if classes is None:
        names = tuple(sorted(by_name, key=by_name.__getitem__))
    else:
        unknown = [c for c in classes if c not in by_name]
        if unknown:
            raise AnnotationError(
                f"{path}: classes {unknown} are not categories of the file; valid: {list(by_name)}"
            )
        names = tuple(classes)
    cat_ids = tuple(by_name[n] for n in names)
    return {c: i for i, c in enumerate(cat_ids)}, names, cat_ids


def _box(ann: Any, i: int, path: str) -> list[float]:
    bbox = _require(ann, "bbox", f"annotations[{i}] (id {ann.get('id')})", path)
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        raise AnnotationError(
            f"{path}: annotations[{i}] (id {ann.get('id')}): 'bbox' must be 4 numbers, got {bbox!r}"
        )
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + w, y + h]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_coco(
    data: dict[str, Any],
    path: str,
    img_prefix: str,
    classes: Sequence[str] | None = None,
    with_mask: bool = False,
) -> tuple[list[ImageRecord], list[bool], tuple[str, ...], tuple[int, ...]]:
    """Records of every image in file order, whether each has an annotation of a kept class,
    the class names and ``label_to_cat_id``. With ``with_mask`` the records carry each target's
    checked segmentation (:func:`detfn.data.masks.check_segmentation`).

    Raises:
        AnnotationError: a missing key, a category or image id that the file does not declare.
    """
    cat_to_label, names, cat_ids = _label_map(data["categories"], classes, path)
    known_cats = {c["id"] for c in data["categories"]}
    images = index_images(data["images"], path)
    check_annotation_entries(data["annotations"], path)
    per_image: dict[int, list[AnnotatedBox]] = {i: [] for i in images}
    segs: dict[int, list[Any]] | None = {i: [] for i in images} if with_mask else None
    dropped: list[Any] = []
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}] (id {ann.get('id') if isinstance(ann, dict) else None})"
        img_id = _require(ann, "image_id", where, path)
        cat_id = _require(ann, "category_id", where, path)
        if cat_id not in known_cats:
            raise AnnotationError(f"{path}: {where}: category_id {cat_id} is not in 'categories'")
        if img_id not in images:
            raise AnnotationError(f"{path}: {where}: image_id {img_id} is not in 'images'")
        box = _box(ann, i, path)
        crowd = bool(ann.get("iscrowd", 0))
        if cat_id not in cat_to_label:
            continue
        if segs is not None:
            seg = None if crowd else _segmentation(ann, images[img_id], where, path)
            if seg is None and not crowd:
                dropped.append(ann.get("id", i))
                continue
            segs[img_id].append(seg)
        per_image[img_id].append((box, cat_to_label[cat_id], crowd))
    warn_dropped_masks(dropped, path)
    records = [
        _record(images[i], anns, img_prefix, path, None if segs is None else segs[i])
        for i, anns in per_image.items()
    ]
    has_ann = [bool(anns) for anns in per_image.values()]
    return records, has_ann, names, cat_ids


def _segmentation(ann: Any, img: dict[str, Any], where: str, path: str) -> Any:
    seg = _require(ann, "segmentation", where, path)
    return check_segmentation(seg, int(img["height"]), int(img["width"]), f"{path}: {where}")


def _record(
    img: dict[str, Any],
    anns: list[AnnotatedBox],
    prefix: str,
    path: str,
    segs: list[Any] | None = None,
) -> ImageRecord:
    return record_from_objects(
        anns,
        os.path.join(prefix, img["file_name"]),
        int(img["id"]),
        int(img["height"]),
        int(img["width"]),
        f"{path}: image {img['file_name']} (id {img['id']})",
        segs,
    )


@register(CocoDatasetConfig)
def build_coco_dataset(cfg: CocoDatasetConfig, seed: int = 0, **context: Any) -> CocoDataset:
    del context  # loaders and experiments may pass more; the dataset needs only the seed
    return CocoDataset(cfg, seed=seed)
