"""End to end on the real tiny BCCD subset: train a few iterations through the experiment entry
point, write checkpoints, reload them, predict, evaluate through pycocotools."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from detfn.apis import (
    ExperimentConfig,
    bccd_cpu_preset,
    inference_detector,
    load_detector,
    save_drawing,
)
from detfn.config import load, override
from detfn.data import build_loader
from detfn.engine.hooks.evaluation import EvaluationHookConfig
from detfn.models.functional import detector_loss_fn, detector_predict_fn
from detfn.registry import build
from experiments import faster_rcnn
from experiments import test as test_cli
from tests.apis.tiny_bccd import tiny_data_updates

TINY = Path(__file__).resolve().parents[1] / "assets" / "tiny" / "bccd8"
SCALE = (224, 168)


def tiny_config(work_dir: Path) -> ExperimentConfig:
    """The BCCD CPU preset on the 8 tiny images at a small scale, 3 epochs of 4 iterations."""
    cfg = bccd_cpu_preset()
    updates = {
        "work_dir": str(work_dir),
        "device": "cpu",
        "runner.max_epochs": 3,
        # half the preset's lr: 4 warmup iterations to 0.02 make 12 iterations too noisy to test
        "runner.optimizer.lr": 0.01,
        "runner.lr": override(cfg.runner.lr, "warmup_iters", 4),
        "runner.evaluation": EvaluationHookConfig(interval=3, save_best="auto"),
        "runner.wandb": None,
        "runner.text_logger.interval": 1,
        # a 12-iteration model is not confident yet: keep every detection so that the whole
        # prediction path (NMS, rescaling, COCO results) has boxes to work on
        "model.roi_head.score_thr": 0.0,
    }
    return override(cfg, {**updates, **tiny_data_updates(SCALE)})


def mean_train_loss(cfg: ExperimentConfig, params, buffers) -> float:
    """Mean total loss over the tiny set, with a fixed sampling seed (no augmentation drift)."""
    model = build(cfg.model)
    loss_fn = detector_loss_fn(model)
    dataset = build(override(cfg.data.train, "pipeline", cfg.data.test.pipeline), seed=0)
    loader = build_loader(dataset, override(cfg.data.test_loader, "batch_size", 2))
    torch.manual_seed(0)
    with torch.no_grad():
        totals = [float(loss_fn(params, buffers, batch)[0]) for batch in loader]
    return sum(totals) / len(totals)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("e2e")
    cfg = tiny_config(work_dir)
    torch.manual_seed(cfg.seed)
    model = build(cfg.model)
    from detfn.models.functional import split

    initial = split(model)
    before = mean_train_loss(cfg, *(dict(t) for t in initial))
    metrics = faster_rcnn.main(cfg)
    return cfg, work_dir, before, metrics


def test_run_writes_config_checkpoints_and_metrics(trained):
    cfg, work_dir, _, metrics = trained
    assert load(work_dir / "config.json", ExperimentConfig) == cfg
    assert {"epoch_3.pth", "latest.json", "metrics.jsonl"} <= {p.name for p in work_dir.iterdir()}
    assert list(work_dir.glob("best_bbox_mAP_epoch_3.pth"))
    lines = [json.loads(line) for line in (work_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if r["mode"] == "train"]
    assert len(train) == 12
    # linear warmup of mmcv: lr = 0.02 * (1 - (1 - i / 4) * (1 - 0.001)) for i = 0..3
    expected = [0.01 * (1 - (1 - i / 4) * 0.999) for i in range(4)] + [0.01] * 8
    assert [r["lr"] for r in train] == pytest.approx(expected)
    assert all(r["momentum"] == 0.9 for r in train)
    assert any(r["mode"] == "val" and "bbox_mAP" in r for r in lines)
    assert 0.0 <= metrics["bbox_mAP"] <= 1.0 and "bbox_classwise" in metrics


def test_training_lowers_the_loss(trained):
    cfg, work_dir, before, _ = trained
    detector = load_detector(work_dir / "config.json", work_dir / "latest.pth", "cpu")
    after = mean_train_loss(cfg, detector.params, detector.buffers)
    assert after < 0.8 * before, (before, after)


def test_reloaded_checkpoint_predicts_in_original_coordinates(trained, tmp_path):
    _, work_dir, _, _ = trained
    detector = load_detector(work_dir / "config.json", work_dir / "epoch_3.pth", "cpu")
    images = sorted((TINY / "JPEGImages").glob("*.jpg"))[:2]
    small = torch.zeros(3, 50, 70, dtype=torch.uint8)
    dets = inference_detector(detector, [*images, small])
    assert len(dets) == 3
    for det, (h, w) in zip(dets, [(480, 640), (480, 640), (50, 70)]):
        assert det.boxes.shape[1] == 4 and len(det.boxes) == len(det.scores) == len(det.labels)
        assert det.boxes.shape[0] <= 100
        if len(det.boxes):
            assert float(det.boxes[:, 2].max()) <= w and float(det.boxes[:, 3].max()) <= h
            assert float(det.scores.min()) > 0.0 and int(det.labels.max()) < 3
    # the same weights through the pure predict function give the same detections
    predict = detector_predict_fn(detector.model)
    dataset = build(detector.cfg.data.test, seed=0)
    batch = next(iter(build_loader(dataset, detector.cfg.data.test_loader)))
    direct = predict(detector.params, detector.buffers, batch.images, batch.metas)
    again = predict(detector.params, detector.buffers, batch.images, batch.metas)
    assert torch.equal(direct[0].boxes, again[0].boxes)
    png = save_drawing(detector, images[0], dets[0], tmp_path / "pred.png", score_thr=0.0)
    assert png.stat().st_size > 0


def test_experiments_test_evaluates_a_checkpoint(trained, tmp_path, capsys):
    _, work_dir, _, _ = trained
    args = test_cli.TestArgs(
        config=str(work_dir / "config.json"),
        checkpoint=str(work_dir / "latest.pth"),
        ann_file=str(TINY / "instances.json"),
        img_prefix=str(TINY / "JPEGImages"),
        out=str(tmp_path / "results.json"),
        show_dir=str(tmp_path / "show"),
        num_workers=0,
        show_score_thr=0.0,
    )
    metrics = test_cli.main(args)
    assert set(metrics) >= {"bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m"}
    results = json.loads((tmp_path / "results.json").read_text())
    assert {r["category_id"] for r in results} <= {1, 2, 3}
    assert len(list((tmp_path / "show").glob("*.png"))) == 8
    assert "Average Precision" in capsys.readouterr().out
