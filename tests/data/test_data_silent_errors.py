"""Inputs that used to give silently wrong data (issue 16): each now fails loudly or is fixed.

Each test rebuilds the case from the issue on a broken copy of the tiny BCCD set.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from detfn.data import (
    BCCD_CLASSES,
    AnnotationError,
    BadImageError,
    DataWarning,
    VOCDatasetConfig,
    read_rgb,
    rescale_size,
)
from detfn.data.file_check import missing_files
from detfn.registry import build

BCCD8 = pathlib.Path(__file__).resolve().parents[1] / "assets" / "tiny" / "bccd8"


# -- 1. duplicate COCO ids ------------------------------------------------------------------


def test_duplicate_image_ids_are_an_error_naming_both_entries(bccd):
    # before: 8 images became 7 and one of them carried the other's boxes
    def duplicate(data):
        data["images"][5]["id"] = data["images"][2]["id"]  # both id 4

    bccd.edit_json(duplicate)
    data = json.loads((bccd / "instances.json").read_text())
    first, second = data["images"][2]["file_name"], data["images"][5]["file_name"]
    with pytest.raises(AnnotationError) as info:
        build(bccd.coco_cfg())
    message = str(info.value)
    assert message.startswith(str(bccd / "instances.json"))
    assert f"images[2] (id 4, file_name '{first}')" in message
    assert f"images[5] (id 4, file_name '{second}')" in message
    assert "same id 4" in message


def test_duplicate_annotation_ids_are_an_error(bccd):
    # pycocotools keys annotations by id: evaluation would see one box twice and lose the other
    def duplicate(data):
        data["annotations"][7]["id"] = data["annotations"][3]["id"]

    bccd.edit_json(duplicate)
    with pytest.raises(
        AnnotationError, match=r"annotations\[3\] and annotations\[7\] have the same"
    ):
        build(bccd.coco_cfg())


def test_unique_ids_still_give_every_image_and_box(bccd):
    ds = build(bccd.coco_cfg(test_mode=True))
    data = json.loads((bccd / "instances.json").read_text())
    assert len(ds) == 8
    assert sum(len(r.boxes) + len(r.ignore_boxes) for r in ds.records) == len(data["annotations"])


# -- 6. sizes of 0 and ids that are strings --------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("height", 0, r"'height' must be a positive integer, got 0"),
        ("width", -640, r"'width' must be a positive integer, got -640"),
        ("height", "480", r"'height' must be a positive integer, got '480'"),
        ("id", "abc", r"'id' must be an integer, got 'abc'"),
        ("id", "4", r"'id' must be an integer, got '4'"),
        ("file_name", "", r"'file_name' must be a non-empty string"),
    ],
)
def test_bad_image_entries_name_file_and_entry(bccd, key, value, message):
    bccd.edit_json(lambda d: d["images"][2].update({key: value}))
    with pytest.raises(AnnotationError, match=r"instances\.json: images\[2\] .*" + message):
        build(bccd.coco_cfg())


def test_string_image_id_in_an_annotation(bccd):
    bccd.edit_json(lambda d: d["annotations"][0].update(image_id="1"))
    with pytest.raises(AnnotationError, match=r"annotations\[0\] \(id 1\): 'image_id' must be an"):
        build(bccd.coco_cfg())


def test_integral_float_sizes_are_accepted(bccd):
    bccd.edit_json(lambda d: d["images"][0].update(height=480.0, width=640.0))
    ds = build(bccd.coco_cfg(test_mode=True))
    assert (ds.records[0].height, ds.records[0].width) == (480, 640)


# -- 2. 16-bit PNGs ---------------------------------------------------------------------------


def test_16_bit_png_is_scaled_to_8_bits(tmp_path):
    rng = np.random.default_rng(0)
    v8 = rng.integers(0, 256, size=(6, 7), dtype=np.uint16)
    exact = v8 * 257  # the 16-bit spelling of each 8-bit value
    noisy = rng.integers(0, 65536, size=(6, 7), dtype=np.uint16)
    for name, values, expected in (("exact", exact, v8), ("noisy", noisy, noisy // 256)):
        path = tmp_path / f"{name}.png"
        Image.fromarray(values).save(path)  # PIL mode I;16: a 16-bit grayscale PNG
        assert Image.open(path).mode == "I;16"
        image = read_rgb(str(path))
        assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 6, 7)
        for channel in image:
            assert channel.numpy().tolist() == expected.tolist()


def test_16_bit_rgb_png_is_scaled_to_8_bits(tmp_path):
    # PIL cannot write 16-bit RGB; a PNG by hand: IHDR bit depth 16, colour type 2
    import struct
    import zlib

    rgb16 = np.array([[[0, 257 * 10, 65535], [257 * 200, 1000, 256]]], dtype=">u2")  # 1x2
    raw = b"".join(b"\x00" + row.tobytes() for row in rgb16)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", 2, 1, 16, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
    path = tmp_path / "rgb16.png"
    path.write_bytes(png + chunk(b"IEND", b""))
    image = read_rgb(str(path))
    assert image.dtype == torch.uint8
    assert image[:, 0, 0].tolist() == [0, 10, 255]
    assert image[:, 0, 1].tolist() == [200, 3, 1]  # 1000 // 256 = 3, 256 // 256 = 1


# -- 3. VOC objects of names not in `classes` ------------------------------------------------


def rename_first_object(bccd, stem: str, new: str) -> None:
    text = (bccd / "Annotations" / f"{stem}.xml").read_text()
    old = text[text.index("<name>") : text.index("</name>") + len("</name>")]
    bccd.edit_xml(stem, old, f"<name>{new}</name>")


def test_voc_unknown_names_warn_with_a_count_per_name(bccd):
    rename_first_object(bccd, "BloodImage_00001", "Neutrophil")
    rename_first_object(bccd, "BloodImage_00003", "Neutrophil")
    rename_first_object(bccd, "BloodImage_00004", "rbc")
    with pytest.warns(DataWarning) as caught:
        ds = build(bccd.voc_cfg())
    message = next(str(w.message) for w in caught if "not in `classes`" in str(w.message))
    assert message.startswith(str(bccd / "ids.txt"))
    assert "3 object(s)" in message
    assert "'Neutrophil' x2 (first in BloodImage_00001.xml)" in message
    assert "'rbc' x1 (first in BloodImage_00004.xml)" in message
    plain = build(VOCDatasetConfig(root=str(BCCD8), split_file="ids.txt", classes=BCCD_CLASSES))
    assert sum(len(r.boxes) for r in ds.records) == sum(len(r.boxes) for r in plain.records) - 3


def test_voc_strict_classes_makes_unknown_names_an_error(bccd):
    rename_first_object(bccd, "BloodImage_00005", "Basophil")
    with pytest.raises(AnnotationError, match=r"ids\.txt: 1 object\(s\) of names not in .*Basoph"):
        build(bccd.voc_cfg(strict_classes=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        assert (
            len(
                build(
                    VOCDatasetConfig(
                        root=str(BCCD8),
                        split_file="ids.txt",
                        classes=BCCD_CLASSES,
                        strict_classes=True,
                    )
                )
            )
            == 8
        )  # a clean set passes


# -- 7. images listed but missing on disk ----------------------------------------------------


def test_missing_images_are_found_when_the_dataset_is_built(bccd):
    for stem in ("BloodImage_00003", "BloodImage_00007", "BloodImage_00011", "BloodImage_00015"):
        (bccd / "JPEGImages" / f"{stem}.jpg").unlink()
    with pytest.raises(BadImageError) as info:
        build(bccd.coco_cfg(test_mode=True))
    message = str(info.value)
    assert message.startswith(f"{bccd / 'instances.json'}: 4 of 8 listed image files are missing")
    assert "BloodImage_00003.jpg" in message and "BloodImage_00011.jpg" in message
    assert "BloodImage_00015.jpg" not in message and ", ..." in message  # first three named
    with pytest.raises(BadImageError, match=r"ids\.txt: 4 of 8 listed image files are missing"):
        build(bccd.voc_cfg())


def test_missing_images_with_skip_bad_images_are_reported_once(bccd, caplog):
    (bccd / "JPEGImages" / "BloodImage_00006.jpg").unlink()
    data_logger = logging.getLogger("detfn.data")
    data_logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="detfn.data"):
            ds = build(bccd.coco_cfg(skip_bad_images=True))
    finally:
        data_logger.removeHandler(caplog.handler)
    assert "1 of 8 listed image files are missing" in caplog.text
    assert len(ds) == 8


def test_missing_files_lists_each_folder_once(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    for name in ("1.jpg", "2.jpg"):
        (tmp_path / "a" / name).write_bytes(b"x")
    paths = [str(tmp_path / "a" / n) for n in ("1.jpg", "9.jpg", "2.jpg")]
    paths.append(str(tmp_path / "nofolder" / "3.jpg"))
    listed = []
    real_scandir = os.scandir
    monkeypatch.setattr(os, "scandir", lambda p: listed.append(p) or real_scandir(p))
    assert missing_files(paths) == [paths[1], paths[3]]
    assert sorted(listed) == sorted([str(tmp_path / "a"), str(tmp_path / "nofolder")])


# -- 9. a 4000x8 image through resizing ---------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "scale", "expected"),
    [
        ((8, 4000), (1333, 800), (3, 1333)),  # factor min(1333/4000, 800/8) = 0.33325
        ((4000, 8), (1333, 800), (1333, 3)),
        ((1, 4000), (1333, 800), (1, 1333)),  # 0.33 rounds to 0: kept at 1 pixel
        ((8, 4000), (320, 240), (1, 320)),  # factor 0.08: 0.64 rounds to 1
        ((480, 640), (1333, 800), (800, 1067)),  # mmcv: 480 * 5/3, 640 * 5/3 = 1066.7
    ],
)
def test_rescale_size_of_thin_images(size, scale, expected):
    assert rescale_size(*size, scale) == expected


def test_voc_size_of_zero_is_read_from_the_image_and_negative_is_an_error(bccd):
    bccd.edit_xml("BloodImage_00001", "<width>640</width>", "<width>0</width>")
    bccd.edit_xml("BloodImage_00001", "<height>480</height>", "<height>0</height>")
    ds = build(bccd.voc_cfg(test_mode=True))
    assert (ds.records[0].height, ds.records[0].width) == (480, 640)  # the JPEG's size
    bccd.edit_xml("BloodImage_00003", "<height>480</height>", "<height>0</height>")
    with pytest.raises(AnnotationError, match=r"BloodImage_00003\.xml: <size> must be positive"):
        build(bccd.voc_cfg())
