"""A catalogue of bad inputs (issue 16): each gives one clear line, never a torch traceback.

For every case the test asserts the first line of the message names the file, field or value
(a regular expression per case) and that the error was raised by detfn's own checks (the
innermost traceback frame is in detfn), not deep inside torch, pycocotools or tyro. CLI cases
run through :func:`detfn.apis.cli_errors.run_cli` and assert exactly one line on stderr.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch

from detfn.apis import ExperimentConfig, bccd_cpu_preset, inference_detector, load_detector
from detfn.apis.cli_errors import first_line, raised_by_detfn, run_cli
from detfn.config import load, save
from detfn.data import (
    CocoDatasetConfig,
    LoaderConfig,
    PadConfig,
    ResizeConfig,
    VOCDatasetConfig,
    build_loader,
    read_rgb,
)
from detfn.engine import RunnerConfig
from detfn.engine.optim import SGDConfig
from detfn.registry import build
from experiments.faster_rcnn import parse

Trigger = Callable[[Any, Any], Any]  # (bccd copy, tmp_path) -> raises


def coco_with(change: Callable[[dict], Any], **kwargs: Any) -> Trigger:
    def trigger(bccd, tmp_path):
        bccd.edit_json(change)
        build(bccd.coco_cfg(**kwargs))

    return trigger


def voc_with(stem: str, old: str, new: str, **kwargs: Any) -> Trigger:
    def trigger(bccd, tmp_path):
        bccd.edit_xml(stem, old, new)
        build(bccd.voc_cfg(**kwargs))

    return trigger


def image_bytes(data: bytes) -> Trigger:
    def trigger(bccd, tmp_path):
        path = bccd / "JPEGImages" / "BloodImage_00004.jpg"
        path.write_bytes(data(path.read_bytes()) if callable(data) else data)
        read_rgb(str(path))

    return trigger


def missing_images(bccd, tmp_path):
    for stem in ("BloodImage_00003", "BloodImage_00005"):
        (bccd / "JPEGImages" / f"{stem}.jpg").unlink()
    build(bccd.coco_cfg())


def wrong_size(bccd, tmp_path):
    bccd.edit_json(lambda d: d["images"][0].update(width=600))
    build(bccd.coco_cfg())[0]


def bad_image_in_a_worker(bccd, tmp_path):
    ds = build(bccd.coco_cfg(test_mode=True))
    jpg = bccd / "JPEGImages" / "BloodImage_00004.jpg"
    jpg.write_bytes(jpg.read_bytes()[:3000])  # truncated after the start-up existence check
    loader = build_loader(ds, LoaderConfig(batch_size=4, num_workers=1, shuffle=False))
    for _ in loader:
        pass


def config_file(change: Callable[[dict], Any]) -> Trigger:
    def trigger(bccd, tmp_path):
        import json

        path = tmp_path / "config.json"
        save(bccd_cpu_preset(), path)
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))
        load(path, ExperimentConfig)

    return trigger


def checkpoint(write: Callable[[Any], None] | None) -> Trigger:
    def trigger(bccd, tmp_path):
        cfg = dataclasses.replace(bccd_cpu_preset(), device="cpu")
        path = tmp_path / "weights.pth"
        if write is not None:
            write(path)
        load_detector(cfg, path, device="cpu")

    return trigger


def other_num_classes(path):
    from detfn.config import override

    model = build(override(bccd_cpu_preset().model, {"num_classes": 5, "class_names": None}))
    torch.save(model.state_dict(), path)


def two_images(data):
    data["images"][5]["id"] = data["images"][2]["id"]


def two_annotations(data):
    data["annotations"][7]["id"] = data["annotations"][3]["id"]


CASES: list[tuple[str, Trigger, str]] = [
    # config values
    ("sgd lr", lambda b, t: SGDConfig(lr=-1.0), r"^SGDConfig\.lr must be > 0, got -1\.0"),
    ("batch 0", lambda b, t: LoaderConfig(batch_size=0), r"^LoaderConfig\.batch_size .*got 0"),
    ("epochs 0", lambda b, t: RunnerConfig(max_epochs=0), r"^RunnerConfig\.max_epochs .*got 0"),
    ("resize 0", lambda b, t: ResizeConfig(scale=((0, 8),)), r"^ResizeConfig\.scale .*\(0, 8\)"),
    (
        "pad both",
        lambda b, t: PadConfig(size=(8, 8), size_divisor=32),
        r"^PadConfig\.size and size_divisor: set exactly one",
    ),
    (
        "seed -1",
        lambda b, t: dataclasses.replace(bccd_cpu_preset(), seed=-1),
        r"^ExperimentConfig\.seed must be >= 0, got -1",
    ),
    (
        "classes vs num_classes",
        lambda b, t: dataclasses.replace(
            bccd_cpu_preset(),
            data=dataclasses.replace(
                bccd_cpu_preset().data,
                train=dataclasses.replace(bccd_cpu_preset().data.train, classes=("a", "b")),
            ),
        ),
        r"num_classes=3 but data\.train\.classes has 2 names",
    ),
    (
        "voc classes",
        lambda b, t: VOCDatasetConfig(root="x", classes=("a", "a")),
        r"classes has dup",
    ),
    ("coco no file", lambda b, t: CocoDatasetConfig(), r"^CocoDatasetConfig\.ann_file must name"),
    # config files
    ("json type", config_file(lambda d: d.update(seed="x")), r"config\.json: seed: expected int"),
    (
        "json value",
        config_file(lambda d: d["runner"]["optimizer"].update(lr=-1)),
        r"config\.json: runner\.optimizer\.lr: must be > 0, got -1",
    ),
    (
        "json typo",
        config_file(lambda d: d["runner"].update(optimizre=1)),
        r"config\.json: runner\.optimizre: unknown field .*did you mean 'optimizer'",
    ),
    # COCO json
    ("dup image id", coco_with(two_images), r"instances\.json: images\[2\] .* images\[5\] .*id 4"),
    (
        "dup ann id",
        coco_with(two_annotations),
        r"instances\.json: annotations\[3\] and annotations\[7\] have the same id",
    ),
    (
        "height 0",
        coco_with(lambda d: d["images"][1].update(height=0)),
        r"instances\.json: images\[1\] \(id 3, .*\): 'height' must be a positive integer, got 0",
    ),
    (
        "string id",
        coco_with(lambda d: d["images"][1].update(id="three")),
        r"instances\.json: images\[1\] .*'id' must be an integer, got 'three'",
    ),
    (
        "no bbox",
        coco_with(lambda d: d["annotations"][3].pop("bbox")),
        r"instances\.json: annotations\[3\] \(id 4\) has no key 'bbox'",
    ),
    (
        "unknown category",
        coco_with(lambda d: d["annotations"][0].update(category_id=9)),
        r"instances\.json: annotations\[0\] \(id 1\): category_id 9 is not in 'categories'",
    ),
    (
        "class not in file",
        lambda b, t: build(dataclasses.replace(b.coco_cfg(), classes=("WBC", "Eosinophil"))),
        r"instances\.json: classes \['Eosinophil'\] are not categories",
    ),
    (
        "invalid json",
        lambda b, t: ((b / "instances.json").write_text("{"), build(b.coco_cfg())),
        r"instances\.json: invalid JSON",
    ),
    # VOC XML
    (
        "malformed xml",
        voc_with("BloodImage_00001", "</annotation>", ""),
        r"BloodImage_00001\.xml: malformed XML",
    ),
    (
        "xmin text",
        voc_with("BloodImage_00001", "<xmin>68</xmin>", "<xmin>sixty</xmin>"),
        r"BloodImage_00001\.xml: <object> #0 <bndbox> <xmin> is not a number: 'sixty'",
    ),
    (
        "unknown name strict",
        voc_with("BloodImage_00001", "<name>WBC</name>", "<name>Eos</name>", strict_classes=True),
        r"ids\.txt: 1 object\(s\) of names not in `classes`: 'Eos' x1 \(first in BloodImage_00001",
    ),
    (
        "voc size -480",
        voc_with("BloodImage_00003", "<height>480</height>", "<height>-480</height>"),
        r"BloodImage_00003\.xml: <size> must be positive, got 640x-480",
    ),
    (
        "split missing",
        lambda b, t: build(dataclasses.replace(b.voc_cfg(), split_file="val.txt")),
        r"val\.txt: split file not found",
    ),
    # images
    ("missing images", missing_images, r"instances\.json: 2 of 8 listed image files are missing"),
    ("truncated jpg", image_bytes(lambda raw: raw[:3000]), r"00004\.jpg: cannot decode image"),
    ("not an image", image_bytes(b"GIF? no"), r"BloodImage_00004\.jpg: cannot decode image"),
    ("empty image", image_bytes(b""), r"BloodImage_00004\.jpg: image file is empty"),
    (
        "bad image in a worker",
        bad_image_in_a_worker,
        r"^\S*BloodImage_00004\.jpg: cannot decode image: .*truncated",
    ),
    ("size differs", wrong_size, r"00001\.jpg: image is 640x480 \(WxH\) but the annotation .*600"),
    # checkpoints
    (
        "other architecture",
        checkpoint(other_num_classes),
        r"weights\.pth: does not fit the model: 4 tensor\(s\) of another shape "
        r"\(roi_head\.bbox_head\.fc_cls\.bias: expected \(4,\), got \(6,\)",
    ),
    (
        "garbage checkpoint",
        checkpoint(lambda p: p.write_bytes(b"not a checkpoint")),
        r"weights\.pth: corrupt or truncated checkpoint",
    ),
    ("no checkpoint", checkpoint(None), r"weights\.pth: checkpoint file not found"),
]


@pytest.mark.parametrize(("trigger", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_line(trigger, pattern, bccd, tmp_path):
    with pytest.raises(Exception) as info:
        trigger(bccd, tmp_path)
    line = first_line(info.value)
    assert re.search(pattern, line), line
    assert raised_by_detfn(info.value), f"raised outside detfn: {info.traceback[-1]}"


def test_inference_input_of_the_wrong_kind_says_what_it_wants():
    with pytest.raises(TypeError) as info:
        inference_detector(None, 3.5)  # checked before the detector is used
    assert first_line(info.value).startswith("inference_detector: expected an image path")
    assert raised_by_detfn(info.value)


CLI_CASES = [
    (["--lr", "-1"], r"^error: override: runner\.optimizer\.lr: must be > 0, got -1\.0"),
    (["--batch-size", "0"], r"^error: .*data\.train_loader\.batch_size: must be > 0, got 0"),
    (["--epochs", "0"], r"^error: RunnerConfig\.max_epochs must be >= 1, got 0"),
    (["--iters", "-5"], r"^error: RunnerConfig\.max_iters must be >= 1, got -5"),
    (["--seed", "-1"], r"^error: ExperimentConfig\.seed must be >= 0, got -1"),
    (["--device", "tpu"], r"^error: ExperimentConfig\.device must be .*got 'tpu'"),
]


@pytest.mark.parametrize(("flags", "pattern"), CLI_CASES, ids=[" ".join(c[0]) for c in CLI_CASES])
def test_cli_flag_errors_print_one_line(flags, pattern, capsys):
    with pytest.raises(SystemExit) as info:
        run_cli(lambda: parse(flags))
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and re.search(pattern, lines[0]), lines


def test_catalogue_size():
    assert len(CASES) + len(CLI_CASES) + 1 >= 25
