"""Shared fixtures: a writable copy of the tiny BCCD set, to break in one way per test."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from collections.abc import Callable
from typing import Any

import pytest

from detfn.data import (
    BCCD_CLASSES,
    CocoDatasetConfig,
    LoadImageConfig,
    ResizeConfig,
    VOCDatasetConfig,
)

BCCD8 = pathlib.Path(__file__).resolve().parent / "assets" / "tiny" / "bccd8"
TINY_PIPELINE = (LoadImageConfig(), ResizeConfig(scale=((64, 48),)))


class TinyBccd(os.PathLike):
    """A copy of ``tests/assets/tiny/bccd8`` (VOC XML + ``instances.json`` + 8 JPEGs).

    It behaves as its folder's path (``bccd / "JPEGImages"``, ``str(bccd)``) and builds the
    configs that read it, as COCO (``coco_cfg``) or VOC (``voc_cfg``).
    """

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root

    def __fspath__(self) -> str:
        return str(self.root)

    def __str__(self) -> str:
        return str(self.root)

    def __truediv__(self, other: str) -> pathlib.Path:
        return self.root / other

    def coco_cfg(self, **kwargs: Any) -> CocoDatasetConfig:
        return CocoDatasetConfig(
            ann_file=str(self.root / "instances.json"),
            img_prefix=str(self.root / "JPEGImages"),
            classes=BCCD_CLASSES,
            pipeline=TINY_PIPELINE,
            **kwargs,
        )

    def voc_cfg(self, **kwargs: Any) -> VOCDatasetConfig:
        return VOCDatasetConfig(
            root=str(self.root), split_file="ids.txt", classes=BCCD_CLASSES, **kwargs
        )

    def edit_json(self, change: Callable[[dict[str, Any]], Any]) -> None:
        """Apply ``change`` to the parsed ``instances.json`` and write it back."""
        path = self.root / "instances.json"
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))

    def edit_xml(self, stem: str, old: str, new: str) -> None:
        """Replace the first ``old`` in ``Annotations/<stem>.xml`` by ``new``."""
        xml = self.root / "Annotations" / f"{stem}.xml"
        text = xml.read_text()
        assert old in text, f"{old!r} not in {xml}"
        xml.write_text(text.replace(old, new, 1))


@pytest.fixture
def bccd(tmp_path: pathlib.Path) -> TinyBccd:
    """A fresh writable copy of the tiny BCCD set."""
    root = tmp_path / "bccd8"
    shutil.copytree(BCCD8, root)
    return TinyBccd(root)
