"""Every bad input on broken copies of the tiny sets gives its one-line message."""

from __future__ import annotations

import logging
import pathlib

import pytest
import torch
from PIL import Image

from detfn.data import (
    BCCD_CLASSES,
    AnnotationError,
    BadImageError,
    CocoDatasetConfig,
    DataWarning,
    LoaderConfig,
    ResizeConfig,
    Skipped,
    VOCDatasetConfig,
    build_loader,
    read_rgb,
)
from detfn.registry import build

BCCD8 = pathlib.Path(__file__).resolve().parents[1] / "assets" / "tiny" / "bccd8"


def test_missing_image_names_the_file(bccd):
    ds = build(bccd.coco_cfg())
    (bccd / "JPEGImages" / "BloodImage_00003.jpg").unlink()  # removed after the start-up check
    index = ds.image_ids.index(3)
    with pytest.raises(BadImageError, match=r"BloodImage_00003\.jpg: image file not found"):
        ds[index]


def test_corrupt_and_empty_images_name_the_file(bccd):
    jpg = bccd / "JPEGImages" / "BloodImage_00004.jpg"
    jpg.write_bytes(jpg.read_bytes()[:3000])
    with pytest.raises(BadImageError, match=r"BloodImage_00004\.jpg: cannot decode image: .*trunc"):
        read_rgb(str(jpg))
    jpg.write_bytes(b"this is not an image")
    with pytest.raises(BadImageError, match=r"BloodImage_00004\.jpg: cannot decode image"):
        read_rgb(str(jpg))
    jpg.write_bytes(b"")
    with pytest.raises(BadImageError, match=r"BloodImage_00004\.jpg: image file is empty"):
        read_rgb(str(jpg))


def test_image_size_differing_from_annotation(bccd):
    def shrink(data):
        data["images"][0]["width"] = 600

    bccd.edit_json(shrink)
    ds = build(bccd.coco_cfg())
    with pytest.raises(
        BadImageError, match=r"is 640x480 \(WxH\) but the annotation declares 600x480"
    ):
        ds[0]


def test_skip_bad_images_counts_and_reports(bccd, caplog):
    for name in ("BloodImage_00003.jpg", "BloodImage_00005.jpg"):
        (bccd / "JPEGImages" / name).write_bytes(b"broken")
    ds = build(bccd.coco_cfg(skip_bad_images=True))
    assert isinstance(ds[ds.image_ids.index(3)], Skipped)
    loader = build_loader(ds, LoaderConfig(batch_size=2, num_workers=0))
    # attach to the logger itself: a training run's logger setup may stop "detfn" propagating
    data_logger = logging.getLogger("detfn.data")
    data_logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="detfn.data"):
            images = sum(len(batch) for batch in loader)
    finally:
        data_logger.removeHandler(caplog.handler)
    assert images == sum(len(b) for b in loader.plan(0)) - 2
    assert sorted(pathlib.Path(p).name for p in loader.skipped()) == [
        "BloodImage_00003.jpg",
        "BloodImage_00005.jpg",
    ]
    assert (
        "epoch 0: skipped 2 bad image(s)" in caplog.text and "BloodImage_00003.jpg" in caplog.text
    )


def test_grayscale_cmyk_and_alpha_become_rgb(tmp_path):
    gray = tmp_path / "gray.png"
    Image.new("L", (5, 4), 77).save(gray)
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (5, 4), (0, 255, 255, 0)).save(cmyk)  # pure red in CMYK
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (5, 4), (10, 20, 30, 128)).save(rgba)
    for path in (gray, cmyk, rgba):
        image = read_rgb(str(path))
        assert tuple(image.shape) == (3, 4, 5) and image.dtype == torch.uint8
    assert (read_rgb(str(gray)) == 77).all()
    assert read_rgb(str(rgba))[:, 0, 0].tolist() == [10, 20, 30]
    red = read_rgb(str(cmyk)).float().mean((1, 2))
    assert red[0] > 200 and red[1] < 60 and red[2] < 60


def test_invalid_boxes_dropped_with_warning_and_partial_clipped(bccd):
    def damage(data):
        anns = [a for a in data["annotations"] if a["image_id"] == 1]
        anns[0]["bbox"] = [10, 10, 0, 5]  # zero width
        anns[1]["bbox"] = [700, 10, 20, 20]  # entirely right of the 640-wide image
        anns[2]["bbox"] = [630, 470, 30, 30]  # partly outside: clipped

    bccd.edit_json(damage)
    with pytest.warns(DataWarning, match=r"BloodImage_00001\.jpg \(id 1\): dropped 2 box\(es\)"):
        ds = build(bccd.coco_cfg())
    record = ds.records[ds.image_ids.index(1)]
    assert [630.0, 470.0, 640.0, 480.0] in record.boxes.tolist()
    assert [10.0, 10.0, 10.0, 15.0] not in record.boxes.tolist()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("categories"), r"the top level has no key 'categories'"),
        (lambda d: d["annotations"][3].pop("bbox"), r"annotations\[3\] \(id 4\) has no key 'bbox'"),
        (
            lambda d: d["images"][2].pop("height"),
            r"images\[2\] \(id 4, file_name .BloodImage_00004.jpg.\) has no key 'height'",
        ),
        (
            lambda d: d["annotations"][0].update(category_id=9),
            r"annotations\[0\] \(id 1\): category_id 9 is not in 'categories'",
        ),
        (
            lambda d: d["annotations"][0].update(image_id=999),
            r"annotations\[0\] \(id 1\): image_id 999 is not in 'images'",
        ),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), r"'bbox' must be 4 numbers"),
    ],
)
def test_broken_coco_json_names_file_and_key(bccd, change, message):
    bccd.edit_json(change)
    with pytest.raises(AnnotationError, match=r"instances\.json: .*" + message):
        build(bccd.coco_cfg())


def test_unparsable_json_and_missing_file(bccd):
    (bccd / "instances.json").write_text('{"images": [')
    with pytest.raises(AnnotationError, match=r"instances\.json: invalid JSON"):
        build(bccd.coco_cfg())
    with pytest.raises(AnnotationError, match=r"nope\.json: annotation file not found"):
        build(CocoDatasetConfig(ann_file=str(bccd / "nope.json")))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("</annotation>", "", r"malformed XML"),
        ("<name>WBC</name>", "", r"<object> #0 has no <name>"),
        ("<xmin>68</xmin>", "", r"<object> #0 <bndbox> has no <xmin>"),
        (
            "<xmin>68</xmin>",
            "<xmin>sixty</xmin>",
            r"<object> #0 <bndbox> <xmin> is not a number: 'sixty'",
        ),
    ],
)
def test_broken_voc_xml_names_file_and_key(bccd, old, new, message):
    xml = bccd / "Annotations" / "BloodImage_00001.xml"
    text = xml.read_text()
    assert old in text
    xml.write_text(text.replace(old, new, 1))
    with pytest.raises(AnnotationError, match=r"BloodImage_00001\.xml: " + message):
        build(bccd.voc_cfg())


def test_missing_voc_files(bccd):
    (bccd / "Annotations" / "BloodImage_00003.xml").unlink()
    with pytest.raises(AnnotationError, match=r"BloodImage_00003\.xml: annotation file not found"):
        build(bccd.voc_cfg())
    with pytest.raises(AnnotationError, match=r"missing\.txt: split file not found"):
        build(VOCDatasetConfig(root=str(bccd), split_file="missing.txt", classes=BCCD_CLASSES))


def test_pipeline_must_start_by_loading():
    with pytest.raises(ValueError, match=r"CocoDatasetConfig.pipeline must start with LoadImage"):
        CocoDatasetConfig(ann_file="x.json", pipeline=(ResizeConfig(),))
