"""Datasets shipped inside the package, so the default experiment runs with no network.

``bccd``: BCCD blood-cell detection (MIT, see ``bccd/LICENSE`` and ``bccd/PROVENANCE.md``):
364 640x480 images, 3 classes, VOC XML plus COCO json per split.

``dsb2018_nuclei``: an 80-image subset of the 2018 Data Science Bowl nuclei set (CC0, see
``dsb2018_nuclei/PROVENANCE.md``): 60 train / 20 val images (256x256 and 320x256), one class,
1273 / 612 instance masks as COCO polygons (``instances_{split}.json``) and the same masks as
RLE (``instances_{split}_rle.json``).

Config paths may be written ``bundled://<name>/<relative path>``; :func:`resolve_path` maps them
to this folder, so a saved config stays valid on another machine.
"""

from __future__ import annotations

import pathlib
from typing import Literal

__all__ = [
    "BCCD_CLASSES",
    "BUNDLED_SCHEME",
    "NUCLEI_CLASSES",
    "bccd_paths",
    "bccd_uris",
    "bccd_voc_paths",
    "bundled_names",
    "bundled_root",
    "nuclei_uris",
    "resolve_path",
]

BUNDLED_SCHEME = "bundled://"
BCCD_CLASSES = ("RBC", "WBC", "Platelets")  # category ids 1, 2, 3 in the COCO json
NUCLEI_CLASSES = ("nucleus",)  # category id 1
Split = Literal["train", "val", "test", "trainval"]
_HERE = pathlib.Path(__file__).resolve().parent


def bundled_names() -> tuple[str, ...]:
    """The names of the bundled datasets."""
    return tuple(sorted(p.name for p in _HERE.iterdir() if p.is_dir() and p.name[0] not in "._"))


def bundled_root(name: str) -> pathlib.Path:
    """The folder of bundled dataset ``name``; an unknown name lists the known ones."""
    root = _HERE / name
    if not name or "/" in name or not root.is_dir():
        raise ValueError(f"unknown bundled dataset {name!r}; bundled: {list(bundled_names())}")
    return root


def resolve_path(path: str) -> pathlib.Path:
    """``bundled://bccd/x`` -> the file inside the package; any other path is returned as is."""
    if not path.startswith(BUNDLED_SCHEME):
        return pathlib.Path(path)
    name, _, rest = path[len(BUNDLED_SCHEME) :].partition("/")
    return bundled_root(name) / rest


def _check_split(split: str) -> None:
    if split not in ("train", "val", "test", "trainval"):
        raise ValueError(f"unknown BCCD split {split!r}; splits: train, val, test, trainval")


def bccd_paths(split: Split = "train") -> tuple[pathlib.Path, pathlib.Path]:
    """``(ann_file, img_prefix)`` of BCCD's COCO json for ``split``."""
    _check_split(split)
    root = bundled_root("bccd")
    return root / "annotations_coco" / f"instances_{split}.json", root / "JPEGImages"


def bccd_uris(split: Split = "train") -> tuple[str, str]:
    """``(ann_file, img_prefix)`` as portable ``bundled://`` strings for configs."""
    _check_split(split)
    return (
        f"{BUNDLED_SCHEME}bccd/annotations_coco/instances_{split}.json",
        f"{BUNDLED_SCHEME}bccd/JPEGImages",
    )


def bccd_voc_paths(split: Split = "train") -> tuple[pathlib.Path, pathlib.Path]:
    """``(root, split_file)`` of BCCD's VOC layout for ``split``."""
    _check_split(split)
    root = bundled_root("bccd")
    return root, root / "ImageSets" / "Main" / f"{split}.txt"


def nuclei_uris(split: Literal["train", "val"] = "train", rle: bool = False) -> tuple[str, str]:
    """``(ann_file, img_prefix)`` of the bundled nuclei set as portable ``bundled://`` strings;
    ``rle`` picks the json whose masks are RLE instead of polygons (the same masks)."""
    if split not in ("train", "val"):
        raise ValueError(f"unknown nuclei split {split!r}; splits: train, val")
    suffix = "_rle" if rle else ""
    root = f"{BUNDLED_SCHEME}dsb2018_nuclei"
    return f"{root}/annotations/instances_{split}{suffix}.json", root
