"""VOCDataset: Pascal VOC XML annotations with an ImageSets split file.

Pixel convention: ``xmin ymin xmax ymax`` are read as floats and used as they are, with no -1
shift (as mmdetection 2.x does), the same continuous convention as the COCO path, so a VOC set
and its COCO conversion give identical boxes. ``difficult`` objects become ignore regions.
Image ids are the digits of the id (``BloodImage_00042`` -> 42, ``2007_000027`` -> 2007000027)
when those are unique across the split, else the position in the split file.
"""

from __future__ import annotations

import os
import re
import warnings
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from typing import Any

from detfn.config import check
from detfn.data.bundled import resolve_path
from detfn.data.dataset import DatasetConfig, DetectionDataset, check_pipeline, filter_records
from detfn.data.errors import AnnotationError, DataWarning
from detfn.data.records import AnnotatedBox, ImageRecord, record_from_objects
from detfn.data.transforms.base import TransformConfig, build_pipeline
from detfn.data.transforms.loading import read_rgb
from detfn.registry import register

__all__ = [
    "VOC_CLASSES",
    "VOCDataset",
    "VOCDatasetConfig",
    "parse_voc_xml",
    "read_split",
    "report_unknown_classes",
]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip


@dataclass(frozen=True)
class VOCDatasetConfig(DatasetConfig):
    """A Pascal-VOC-layout detection dataset.

    Attributes:
        root: the dataset folder (a path, or ``bundled://bccd``).
        split_file: the ids to read, one a line; relative to ``root`` unless absolute.
        ann_dir, img_dir: the XML and image folders, relative to ``root``.
        img_ext: image file extension; the image of id ``x`` is ``img_dir/x + img_ext``.
        classes: names in label order; None means the 20 Pascal VOC classes. Objects of other
            names are skipped with a warning that counts them per name.
        strict_classes: an object whose name is not in ``classes`` is an error (naming the
            names, their counts and a file of each) instead of a warning with the same counts.
        pipeline, filter_empty_gt, min_size, test_mode, skip_bad_images: as for COCO.
    """

    root: str = ""
    split_file: str = "ImageSets/Main/train.txt"
    ann_dir: str = "Annotations"
    img_dir: str = "JPEGImages"
    img_ext: str = ".jpg"
    classes: tuple[str, ...] | None = None
    pipeline: tuple[TransformConfig, ...] = ()
    filter_empty_gt: bool = True
    min_size: int = 32
    test_mode: bool = False
    skip_bad_images: bool = False
    strict_classes: bool = False

    def __post_init__(self) -> None:
        check(self, "root", bool(self.root), "must name the dataset folder")
        check(self, "min_size", self.min_size >= 0, f"must be >= 0, got {self.min_size}")
        if self.classes is not None:
            check(self, "classes", len(set(self.classes)) == len(self.classes), "has duplicates")
        check_pipeline(self, self.pipeline)


class VOCDataset(DetectionDataset):
    """A :class:`DetectionDataset` read from VOC XML; category ids are ``1..K`` in label order."""

    def __init__(self, cfg: VOCDatasetConfig, seed: int = 0) -> None:
        root = resolve_path(cfg.root)
        split_file = root / cfg.split_file
        names = cfg.classes if cfg.classes is not None else VOC_CLASSES
        ids = read_split(split_file)
        image_ids = _image_ids(ids)
        skipped: Counter[str] = Counter()
        first_seen: dict[str, str] = {}
        records, has_ann = [], []
        for img_id, number in zip(ids, image_ids):
            xml = root / cfg.ann_dir / f"{img_id}.xml"
            image = root / cfg.img_dir / f"{img_id}{cfg.img_ext}"
            record, annotated = parse_voc_xml(str(xml), str(image), number, names, skipped)
            first_seen.update((n, str(xml)) for n in skipped if n not in first_seen)
            records.append(record)
            has_ann.append(annotated)
        if skipped:
            report_unknown_classes(skipped, first_seen, str(split_file), cfg.strict_classes)
        records = filter_records(records, has_ann, cfg, str(split_file))
        super().__init__(
            records,
            names,
            range(1, len(names) + 1),
            build_pipeline(cfg.pipeline),
            skip_bad_images=cfg.skip_bad_images,
            seed=seed,
            source=str(split_file),
        )


def report_unknown_classes(
    skipped: Counter[str], first_seen: dict[str, str], source: str, strict: bool
) -> None:
    """Warn (or, when ``strict``, raise) about objects whose name is not a class.

    A dataset trained with ``classes`` that misses a name would silently learn that those
    objects are background; the count per name makes a typo or a forgotten class visible.

    Args:
        skipped: objects dropped, per unknown name.
        first_seen: per unknown name, the first XML file it appears in.
        source: the split file, named in the message.
        strict: raise :class:`AnnotationError` instead of warning.
    """
    counts = ", ".join(
        f"{name!r} x{n} (first in {os.path.basename(first_seen.get(name, '?'))})"
        for name, n in sorted(skipped.items())
    )
    what = f"{source}: {sum(skipped.values())} object(s) of names not in `classes`: {counts}"
    if strict:
        raise AnnotationError(f"{what}; add them to VOCDatasetConfig.classes or fix the XML")
    warnings.warn(
        f"{what}; they were skipped. Set VOCDatasetConfig.classes to this dataset's class "
        "names, or strict_classes=True to make this an error",
        DataWarning,
        stacklevel=3,
    )


def read_split(path: os.PathLike[str] | str) -> list[str]:
    """The non-empty lines of a split file."""
    try:
        with open(path) as f:
            ids = [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        raise AnnotationError(f"{path}: split file not found") from None
    except OSError as error:
        raise AnnotationError(f"{path}: cannot read split file: {error}") from None
    if len(set(ids)) != len(ids):
        dup = next(i for i, n in Counter(ids).items() if n > 1)
        raise AnnotationError(f"{path}: id {dup!r} is listed twice")
    return ids


def _image_ids(ids: list[str]) -> list[int]:
    numbers = ["".join(re.findall(r"\d", i)) for i in ids]
    if all(numbers) and len(set(int(n) for n in numbers)) == len(ids):
        return [int(n) for n in numbers]
    return list(range(len(ids)))


def _text(node: ET.Element, key: str, where: str, path: str) -> str:
    child = node.find(key)
    if child is None or child.text is None or not child.text.strip():
        raise AnnotationError(f"{path}: {where} has no <{key}>")
    return child.text.strip()


def _number(node: ET.Element, key: str, where: str, path: str) -> float:
    text = _text(node, key, where, path)
    try:
        return float(text)
    except ValueError:
        raise AnnotationError(f"{path}: {where} <{key}> is not a number: {text!r}") from None


def _size(root: ET.Element, xml: str, image: str) -> tuple[int, int]:
    """``(height, width)`` from ``<size>``; read from the image when ``<size>`` is absent or
    ``0 x 0`` (which some converters write), an error when negative or only one side is 0."""
    size = root.find("size")
    if size is not None:
        height, width = (int(_number(size, k, "<size>", xml)) for k in ("height", "width"))
        if height > 0 and width > 0:
            return height, width
        if height != 0 or width != 0:
            raise AnnotationError(f"{xml}: <size> must be positive, got {width}x{height} (WxH)")
    decoded = read_rgb(image)  # <size> is optional in VOC: the image itself has it
    return int(decoded.shape[1]), int(decoded.shape[2])


def parse_voc_xml(
    xml: str, image: str, image_id: int, classes: tuple[str, ...], skipped: Counter[str]
) -> tuple[ImageRecord, bool]:
    """The record of one XML file and whether it has an object of ``classes``.

    Objects of other classes are counted in ``skipped``.

    Raises:
        AnnotationError: a missing or malformed file, or an object without a required key.
    """
    try:
        root = ET.parse(xml).getroot()
    except FileNotFoundError:
        raise AnnotationError(f"{xml}: annotation file not found") from None
    except ET.ParseError as error:
        raise AnnotationError(f"{xml}: malformed XML: {error}") from None
    height, width = _size(root, xml, image)
    objects: list[AnnotatedBox] = []
    for i, obj in enumerate(root.findall("object")):
        where = f"<object> #{i}"
        name = _text(obj, "name", where, xml)
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise AnnotationError(f"{xml}: {where} ({name}) has no <bndbox>")
        box = [
            _number(bndbox, k, f"{where} <bndbox>", xml) for k in ("xmin", "ymin", "xmax", "ymax")
        ]
        if name not in classes:
            skipped[name] += 1
            continue
        difficult = obj.find("difficult")
        hard = difficult is not None and (difficult.text or "0").strip() not in ("0", "")
        objects.append((box, classes.index(name), hard))
    named = f"{xml} ({os.path.basename(image)})"
    return record_from_objects(objects, image, image_id, height, width, named), bool(objects)


@register(VOCDatasetConfig)
def build_voc_dataset(cfg: VOCDatasetConfig, seed: int = 0, **context: Any) -> VOCDataset:
    del context  # loaders and experiments may pass more; the dataset needs only the seed
    return VOCDataset(cfg, seed=seed)
