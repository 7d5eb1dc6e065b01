"""The bundled BCCD set, its portable paths, and dataset configs through JSON."""

from __future__ import annotations

import json

import pytest

from detfn.config import ConfigError, from_json, to_json
from detfn.data import (
    BCCD_CLASSES,
    CocoDatasetConfig,
    ConcatDatasetConfig,
    DatasetConfig,
    ExpandConfig,
    MinIoURandomCropConfig,
    PhotoMetricDistortionConfig,
    RandomCropConfig,
    RepeatDatasetConfig,
    VOCDatasetConfig,
    bccd_dataset_config,
    bccd_paths,
    bundled_root,
    default_test_pipeline,
    default_train_pipeline,
    resolve_path,
)
from detfn.registry import build


def test_bundled_root_and_unknown_name():
    root = bundled_root("bccd")
    assert (root / "LICENSE").is_file() and (root / "PROVENANCE.md").is_file()
    assert len(list((root / "JPEGImages").glob("*.jpg"))) == 364
    with pytest.raises(
        ValueError, match=r"unknown bundled dataset 'coco'; bundled: \['bccd', 'dsb2018_nuclei'\]"
    ):
        bundled_root("coco")


def test_bccd_paths_and_uris_point_to_the_same_files():
    ann, prefix = bccd_paths("test")
    cfg = bccd_dataset_config("test")
    assert resolve_path(cfg.ann_file) == ann and resolve_path(cfg.img_prefix) == prefix
    counts = {s: len(json.loads(bccd_paths(s)[0].read_text())["images"]) for s in ("train", "val")}
    assert counts == {"train": 205, "val": 87}
    with pytest.raises(ValueError, match="unknown BCCD split 'dev'"):
        bccd_paths("dev")


def test_default_pipelines_are_mmdetection_faster_rcnn():
    train, test = default_train_pipeline(), default_test_pipeline()
    names = [type(t).__name__ for t in train]
    assert names == [
        "LoadImageConfig",
        "ResizeConfig",
        "RandomFlipConfig",
        "NormalizeConfig",
        "PadConfig",
    ]
    assert train[1].scale == ((1333, 800),) and train[1].keep_ratio and train[2].prob == 0.5
    assert train[3].mean == (123.675, 116.28, 103.53) and train[3].std == (58.395, 57.12, 57.375)
    assert train[4].size_divisor == 32
    assert [type(t).__name__ for t in test] == [n for n in names if n != "RandomFlipConfig"]


def test_dataset_configs_round_trip_through_json():
    pipeline = (
        *default_train_pipeline()[:2],
        PhotoMetricDistortionConfig(),
        ExpandConfig(),
        MinIoURandomCropConfig(),
        RandomCropConfig(crop_size=(0.5, 0.5), crop_type="relative"),
        *default_train_pipeline()[2:],
    )
    coco = bccd_dataset_config("train", pipeline=pipeline)
    voc = VOCDatasetConfig(root="bundled://bccd", classes=BCCD_CLASSES)
    nested = RepeatDatasetConfig(dataset=ConcatDatasetConfig(datasets=(coco, voc)), times=2)
    for cfg in (coco, voc, nested):
        text = to_json(cfg)
        assert from_json(text, type(cfg)) == cfg
    item = json.loads(to_json(nested))["dataset"]
    assert item["type"] == "ConcatDataset" and item["datasets"][1]["type"] == "VOCDataset"
    assert json.loads(to_json(coco))["pipeline"][2]["type"] == "PhotoMetricDistortion"
    assert from_json(to_json(nested), RepeatDatasetConfig).dataset.datasets[0].pipeline == pipeline
    with pytest.raises(ConfigError, match=r"unknown type tag 'Mosaic'"):
        from_json(
            json.dumps({"ann_file": "a.json", "pipeline": [{"type": "Mosaic"}]}), CocoDatasetConfig
        )


def test_repeat_and_concat_built_from_configs():
    coco = bccd_dataset_config("val", pipeline=default_test_pipeline()[:1])
    concat = build(ConcatDatasetConfig(datasets=(coco, bccd_dataset_config("test"))))
    assert len(concat) == 87 + 72 and concat.class_names == BCCD_CLASSES
    assert concat[87].meta.image_id == concat.parts[1].image_ids[0]
    repeat = build(RepeatDatasetConfig(dataset=coco, times=3))
    assert len(repeat) == 3 * 87 and repeat[87].meta.image_id == repeat[0].meta.image_id
    assert len(repeat.to_coco_dict()["images"]) == 87
    with pytest.raises(ValueError, match="must be a concrete dataset config"):
        RepeatDatasetConfig(dataset=DatasetConfig())
