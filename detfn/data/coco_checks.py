"""Checks of a COCO json's ``images`` and ``annotations`` entries before any record is built.

A COCO file is indexed by id: an image id given twice would merge two images into one (one of
them silently receiving the other's boxes), and an annotation id given twice makes pycocotools'
index return one annotation for both, so evaluation loses a ground-truth box. Both are errors
naming the two entries. A size of 0, or an id that is a string, is an error naming the entry here
rather than a ``ZeroDivisionError`` or ``int()`` failure later.
"""

from __future__ import annotations

from typing import Any

from detfn.data.errors import AnnotationError

__all__ = ["check_annotation_entries", "index_images"]


def _is_int(value: Any) -> bool:
    """An integer, or a float with an integral value (``480.0``); never a bool or a string."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _image_where(img: Any, i: int) -> str:
    """``images[i] (id 4, file_name 'a.jpg')`` with whichever of the two the entry has."""
    if not isinstance(img, dict):
        return f"images[{i}]"
    parts = [f"id {img['id']!r}"] if "id" in img else []
    parts += [f"file_name {img['file_name']!r}"] if "file_name" in img else []
    return f"images[{i}] ({', '.join(parts)})" if parts else f"images[{i}]"


def _check_image(img: Any, i: int, path: str) -> None:
    """One ``images`` entry: an object with an integer id, a file name and a positive size."""
    where = _image_where(img, i)
    if not isinstance(img, dict):
        raise AnnotationError(f"{path}: {where} must be an object, got {type(img).__name__}")
    for key in ("id", "file_name", "height", "width"):
        if key not in img:
            raise AnnotationError(f"{path}: {where} has no key {key!r}")
    if not _is_int(img["id"]):
        raise AnnotationError(f"{path}: {where}: 'id' must be an integer, got {img['id']!r}")
    name = img["file_name"]
    if not isinstance(name, str) or not name:
        raise AnnotationError(f"{path}: {where}: 'file_name' must be a non-empty string")
    for key in ("height", "width"):
        value = img[key]
        if not _is_int(value) or value <= 0:
            raise AnnotationError(
                f"{path}: {where}: {key!r} must be a positive integer, got {value!r}"
            )


def index_images(images: list[Any], path: str) -> dict[int, dict[str, Any]]:
    """``image id -> entry`` in file order, every entry checked.

    Raises:
        AnnotationError: an entry without id / file_name / height / width, a non-integer id, a
            non-positive size, or two entries with the same id (both are named).
    """
    by_id: dict[int, dict[str, Any]] = {}
    position: dict[int, int] = {}
    for i, img in enumerate(images):
        _check_image(img, i, path)
        img_id = int(img["id"])
        if img_id in by_id:
            first = position[img_id]
            raise AnnotationError(
                f"{path}: {_image_where(images[first], first)} and {_image_where(img, i)} have "
                f"the same id {img_id}; image ids must be unique"
            )
        by_id[img_id], position[img_id] = img, i
    return by_id


def check_annotation_entries(annotations: list[Any], path: str) -> None:
    """Every annotation is an object with an integer ``image_id``, and no ``id`` is repeated.

    Annotations without an ``id`` are allowed here (detfn does not need it); pycocotools does.

    Raises:
        AnnotationError: naming the entry (and for a repeated id, both entries).
    """
    seen: dict[Any, int] = {}
    for i, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            raise AnnotationError(
                f"{path}: annotations[{i}] must be an object, got {type(ann).__name__}"
            )
        where = f"annotations[{i}] (id {ann.get('id')})"
        if "image_id" in ann and not _is_int(ann["image_id"]):
            raise AnnotationError(
                f"{path}: {where}: 'image_id' must be an integer, got {ann['image_id']!r}"
            )
        ann_id = ann.get("id")
        if not isinstance(ann_id, (int, float, str)):
            continue  # absent (or unhashable): pycocotools' own problem, not a merge
        if ann_id in seen:
            raise AnnotationError(
                f"{path}: annotations[{seen[ann_id]}] and annotations[{i}] have the same id "
                f"{ann_id!r}; annotation ids must be unique (pycocotools would keep only one)"
            )
        seen[ann_id] = i
