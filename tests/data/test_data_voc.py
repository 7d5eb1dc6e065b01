"""VOCDataset: the BCCD XML path gives the same boxes as the BCCD COCO json path."""

from __future__ import annotations

import pathlib
import shutil
import warnings

import pytest
import torch

from detfn.data import (
    BCCD_CLASSES,
    AnnotationError,
    CocoDatasetConfig,
    DataWarning,
    VOCDatasetConfig,
    bccd_paths,
    bccd_voc_paths,
)
from detfn.registry import build

TINY = pathlib.Path(__file__).resolve().parents[1] / "assets" / "tiny"
BCCD8 = TINY / "bccd8"


def bccd8_voc(root=BCCD8, **kwargs):
    cfg = VOCDatasetConfig(root=str(root), split_file="ids.txt", classes=BCCD_CLASSES, **kwargs)
    return build(cfg)


def by_id(ds):
    return {r.image_id: r for r in ds.records}


def assert_same_records(a, b):
    assert set(a) == set(b)
    for image_id, ra in a.items():
        rb = b[image_id]
        order_a, order_b = _sort(ra), _sort(rb)
        assert torch.equal(ra.boxes[order_a], rb.boxes[order_b])
        assert torch.equal(ra.labels[order_a], rb.labels[order_b])
        assert (ra.height, ra.width, pathlib.Path(ra.path).name) == (
            rb.height,
            rb.width,
            pathlib.Path(rb.path).name,
        )


def _sort(record):
    keys = [tuple(b) + (label,) for b, label in zip(record.boxes.tolist(), record.labels.tolist())]
    return torch.tensor(sorted(range(len(keys)), key=keys.__getitem__), dtype=torch.long)


def test_bccd8_voc_and_coco_give_identical_boxes():
    voc = bccd8_voc(test_mode=True)
    coco = build(
        CocoDatasetConfig(
            ann_file=str(BCCD8 / "instances.json"),
            img_prefix=str(BCCD8 / "JPEGImages"),
            classes=BCCD_CLASSES,
            test_mode=True,
        )
    )
    assert voc.label_to_cat_id == coco.label_to_cat_id == (1, 2, 3)
    assert sum(len(r.boxes) for r in voc.records) == 142
    assert_same_records(by_id(voc), by_id(coco))


def test_bundled_bccd_voc_and_coco_agree_on_val_split():
    root, split = bccd_voc_paths("val")
    with pytest.warns(DataWarning, match=r"BloodImage_00338.*dropped 1 box"):  # a zero-size RBC
        voc = build(VOCDatasetConfig(root=str(root), split_file=str(split), classes=BCCD_CLASSES))
    ann, prefix = bccd_paths("val")
    coco = build(CocoDatasetConfig(ann_file=str(ann), img_prefix=str(prefix), classes=BCCD_CLASSES))
    assert len(voc) == len(coco) == 87
    ids = voc.image_ids[:5]
    assert_same_records({i: by_id(voc)[i] for i in ids}, {i: by_id(coco)[i] for i in ids})
    gt_voc, gt_coco = voc.to_coco_dict(), coco.to_coco_dict()
    assert len(gt_voc["annotations"]) == len(gt_coco["annotations"]) == 1137


def test_difficult_objects_become_ignores(tmp_path):
    root = tmp_path / "bccd8"
    shutil.copytree(BCCD8, root)
    xml = root / "Annotations" / "BloodImage_00001.xml"
    text = xml.read_text()
    first = text.index("<difficult>0</difficult>")
    xml.write_text(text[:first] + "<difficult>1</difficult>" + text[first + 24 :])
    plain = by_id(bccd8_voc())[1]
    hard = by_id(bccd8_voc(root=root))[1]
    assert len(hard.boxes) == len(plain.boxes) - 1
    assert hard.ignore_boxes.tolist() == [plain.boxes[0].tolist()]
    assert hard.ignore_labels.tolist() == [plain.labels[0].item()]


def test_default_classes_warn_about_unknown_names():
    with warnings.catch_warnings(record=True) as caught, pytest.raises(AnnotationError):
        warnings.simplefilter("always")
        build(VOCDatasetConfig(root=str(BCCD8), split_file="ids.txt"))  # VOC's 20 classes
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert any("'RBC'" in m and "VOCDatasetConfig.classes" in m for m in messages)


def test_image_ids_from_file_names():
    ds = bccd8_voc()
    assert ds.image_ids == (1, 3, 4, 5, 6, 7, 11, 15)
    assert pathlib.Path(ds.records[0].path).name == "BloodImage_00001.jpg"
