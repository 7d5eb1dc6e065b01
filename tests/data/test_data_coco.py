"""CocoDataset on the real coco8 subset, checked against pycocotools' own reading of the file."""

from __future__ import annotations

import contextlib
import io
import pathlib

import pytest
import torch
from pycocotools.coco import COCO

from detfn.data import (
    AnnotationError,
    CocoDatasetConfig,
    LoadImageConfig,
    PhotoMetricDistortionConfig,
    RandomFlipConfig,
    ResizeConfig,
)
from detfn.registry import build

TINY = pathlib.Path(__file__).resolve().parents[1] / "assets" / "tiny"
COCO8_JSON = str(TINY / "coco8" / "annotations" / "instances.json")
COCO8_IMAGES = str(TINY / "coco8" / "images")


def coco8(**kwargs):
    return build(CocoDatasetConfig(ann_file=COCO8_JSON, img_prefix=COCO8_IMAGES, **kwargs))


def reference() -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(COCO8_JSON)


def test_category_ids_with_gaps_map_to_labels_and_back():
    ds = coco8(test_mode=True)
    ref = reference()
    assert len(ds.class_names) == 80
    assert list(ds.label_to_cat_id) == sorted(ref.getCatIds())
    assert ds.label_to_cat_id[11] == 13  # id 12 is a gap: "stop sign" (13) is label 11
    assert ds.class_names[11] == "stop sign" and ds.label_to_cat_id[79] == 90
    for record in ds.records:
        anns = ref.loadAnns(ref.getAnnIds(imgIds=record.image_id, iscrowd=False))
        expected = sorted(
            (ref.loadCats(a["category_id"])[0]["name"], *(round(v, 3) for v in _xyxy(a["bbox"])))
            for a in anns
        )
        got = sorted(
            (ds.class_names[label], *(round(v, 3) for v in box))
            for box, label in zip(record.boxes.tolist(), record.labels.tolist())
        )
        # Names must match exactly; coordinates to rounding (pytest.approx takes flat sequences).
        assert [row[0] for row in got] == [row[0] for row in expected]
        assert [v for row in got for v in row[1:]] == pytest.approx(
            [v for row in expected for v in row[1:]], abs=1e-3
        )
        cat_ids = {ds.label_to_cat_id[label] for label in record.labels.tolist()}
        assert cat_ids == {a["category_id"] for a in anns}


def _xyxy(bbox):
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


def test_classes_subset_in_given_order():
    ds = coco8(classes=("dog", "person"), test_mode=True)
    assert ds.class_names == ("dog", "person") and ds.label_to_cat_id == (18, 1)
    ref = reference()
    n_person = len(ref.getAnnIds(catIds=[1], iscrowd=False))
    labels = torch.cat([r.labels for r in ds.records])
    assert int((labels == 1).sum()) == n_person
    with pytest.raises(
        AnnotationError, match=r"\['unicorn'\] are not categories.*valid: \['person'"
    ):
        coco8(classes=("person", "unicorn"))


def test_crowd_boxes_become_ignores():
    ds = coco8(test_mode=True)
    by_id = {r.image_id: r for r in ds.records}
    assert by_id[257].ignore_boxes.tolist() == [[16.0, 301.0, 627.0, 479.0]]
    assert by_id[544].ignore_boxes.tolist() == [[0.0, 0.0, 639.0, 347.0]]
    assert by_id[257].ignore_labels.tolist() == [0]  # person
    assert sum(len(r.ignore_boxes) for r in ds.records) == 2
    assert [16.0, 301.0, 627.0, 479.0] not in by_id[257].boxes.tolist()
    assert len(by_id[257].boxes) == 33


def test_empty_image_dropped_for_train_kept_for_test():
    train = coco8()
    test = coco8(test_mode=True)
    assert 508 not in train.image_ids and len(train) == 7
    assert test.image_ids == (30, 86, 92, 127, 257, 294, 508, 544)
    kept = coco8(filter_empty_gt=False)
    assert 508 in kept.image_ids
    assert coco8(min_size=500).image_ids == (86,)  # the only image with both sides >= 500


def test_grayscale_image_decodes_to_three_channels():
    ds = coco8(test_mode=True, pipeline=(LoadImageConfig(),))
    sample = ds[ds.image_ids.index(86)]
    assert sample.image.dtype == torch.uint8 and tuple(sample.image.shape) == (3, 640, 512)
    assert torch.equal(sample.image[0], sample.image[1]) and torch.equal(
        sample.image[1], sample.image[2]
    )


def test_coco_ground_truth_for_evaluation():
    ds = coco8(test_mode=True)
    assert sorted(ds.coco.getImgIds()) == sorted(ds.image_ids)
    gt = ds.to_coco_dict()
    assert len(gt["annotations"]) == 95 and sum(a["iscrowd"] for a in gt["annotations"]) == 2
    ref = reference()
    assert sum(a["area"] for a in gt["annotations"] if a["image_id"] == 30) == pytest.approx(
        sum(a["bbox"][2] * a["bbox"][3] for a in ref.loadAnns(ref.getAnnIds(imgIds=30)))
    )


def test_sample_reproducible_from_seed_epoch_index():
    pipeline = (
        LoadImageConfig(),
        ResizeConfig(scale=((96, 64),)),
        RandomFlipConfig(prob=0.5),
        PhotoMetricDistortionConfig(),
    )
    ds = build(
        CocoDatasetConfig(ann_file=COCO8_JSON, img_prefix=COCO8_IMAGES, pipeline=pipeline),
        seed=5,
    )
    a, b = ds.get(2, epoch=3), ds[(2, 3)]
    assert torch.equal(a.image, b.image) and torch.equal(a.boxes, b.boxes)
    other = build(
        CocoDatasetConfig(ann_file=COCO8_JSON, img_prefix=COCO8_IMAGES, pipeline=pipeline),
        seed=5,
    )
    other.set_epoch(3)
    assert torch.equal(other[2].image, a.image)
    assert not torch.equal(ds.get(2, epoch=4).image, a.image)
    assert not torch.equal(ds.get(2, epoch=3, seed=6).image, a.image)
