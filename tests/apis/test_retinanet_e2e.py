"""Every detector through the same entry points: ``experiments.retinanet`` takes
``experiments.faster_rcnn``'s flags and presets (one shared CLI); a tiny RetinaNet trained for 2
iterations is loaded back from its config.json by ``load_detector``, predicts through
``inference_detector`` and is evaluated by ``experiments.test``."""

from __future__ import annotations

import json

import pytest
import torch

from detfn.apis import (
    ExperimentConfig,
    inference_detector,
    load_detector,
    retinanet_bccd_preset,
    train_detector,
)
from detfn.config import load, override
from detfn.models.detectors import SingleStageDetectorConfig
from experiments import faster_rcnn, retinanet
from experiments import test as test_cli
from tests.apis.tiny_bccd import TINY, tiny_data_updates

SCALE = (128, 96)


def test_retinanet_cli_has_the_faster_rcnn_flags_and_presets():
    assert retinanet.parse([]) == retinanet_bccd_preset()
    argv = ["--lr", "0.005", "--iters", "7", "--no-wandb", "--model.bbox-head.stacked-convs", "2"]
    cfg = retinanet.parse(argv)
    assert cfg.runner.optimizer.lr == 0.005 and cfg.runner.max_iters == 7
    assert cfg.runner.wandb is None and cfg.model.bbox_head.stacked_convs == 2
    coco = retinanet.parse(["--preset", "coco", "--data-root", "/data/coco"])
    assert isinstance(coco.model, SingleStageDetectorConfig) and coco.runner.optimizer.lr == 0.01
    assert coco.data == faster_rcnn.parse(["--preset", "coco", "--data-root", "/data/coco"]).data
    assert faster_rcnn.main is retinanet.main  # one main, not a copy


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("retina")
    cfg = retinanet_bccd_preset()
    updates = {
        "work_dir": str(work_dir),
        "device": "cpu",
        "runner.max_epochs": None,
        "runner.max_iters": 2,
        "runner.evaluation": None,
        "runner.wandb": None,
        "runner.checkpoint.by_epoch": False,
        # an untrained head scores about its prior (0.01): keep every box for the test
        "model.bbox_head.test_cfg.score_thr": 0.0,
        "model.bbox_head.test_cfg.nms_pre": 100,
    }
    cfg = override(cfg, {**updates, **tiny_data_updates(SCALE)})
    state = train_detector(cfg)
    assert state.iter == 2
    return cfg, work_dir


def test_loaded_back_from_config_json_predicts(trained):
    cfg, work_dir = trained
    saved = load(work_dir / "config.json", ExperimentConfig)
    assert saved == cfg and isinstance(saved.model, SingleStageDetectorConfig)
    detector = load_detector(work_dir / "config.json", work_dir / "latest.pth", "cpu")
    assert detector.class_names == ("RBC", "WBC", "Platelets")
    image = sorted((TINY / "JPEGImages").glob("*.jpg"))[0]
    [det] = inference_detector(detector, [image])
    assert 0 < len(det.boxes) <= 100 and int(det.labels.max()) < 3
    assert float(det.boxes[:, 2].max()) <= 640 and float(det.boxes[:, 3].max()) <= 480
    assert torch.all(det.scores[:-1] >= det.scores[1:])


def test_experiments_test_evaluates_the_retinanet_checkpoint(trained, tmp_path):
    _, work_dir = trained
    args = test_cli.TestArgs(
        config=str(work_dir / "config.json"),
        checkpoint=str(work_dir / "latest.pth"),
        out=str(tmp_path / "results.json"),
        num_workers=0,
    )
    metrics = test_cli.main(args)
    assert 0.0 <= metrics["bbox_mAP"] <= 1.0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results and {r["category_id"] for r in results} <= {1, 2, 3}
