"""The richer wandb logging with an injected fake run (no network): sample table with predicted and
ground-truth boxes, curves image, summary, best checkpoint artifact."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from detfn.apis import load_detector
from detfn.apis.train_hooks import WandbMedia, wandb_boxes, wandb_media_hook
from detfn.engine import Event, Outputs, Stage, TrainState
from detfn.models.functional import detector_predict_fn
from detfn.registry import build
from detfn.structures import ImageDetections


class FakeRun:
    id = "fake123"

    def __init__(self):
        self.logged, self.summary, self.artifacts = [], {}, []

    def log(self, payload, step=None):
        self.logged.append(payload)

    def log_artifact(self, artifact):
        self.artifacts.append(artifact)


def test_wandb_boxes_format():
    dets = ImageDetections(
        torch.tensor([[1.0, 2, 30, 40], [5, 5, 9, 9]]),
        torch.tensor([0.9, 0.1]),
        torch.tensor([2, 0]),
    )
    data = wandb_boxes(dets, ["RBC", "WBC", "Platelets"], score_thr=0.3)
    assert data["class_labels"] == {0: "RBC", 1: "WBC", 2: "Platelets"}
    [box] = data["box_data"]
    assert box["position"] == {"minX": 1.0, "minY": 2.0, "maxX": 30.0, "maxY": 40.0}
    assert (
        box["class_id"] == 2
        and box["domain"] == "pixel"
        and box["scores"]["score"] == pytest.approx(0.9)
    )


def test_media_hook_logs_table_curves_summary_and_checkpoint(tiny_run):
    wandb = pytest.importorskip("wandb")
    cfg, work_dir = tiny_run
    detector = load_detector(work_dir / "config.json", work_dir / "latest.pth", "cpu")
    val_set = build(cfg.data.val, seed=0)
    run = FakeRun()
    hook = wandb_media_hook(
        detector_predict_fn(detector.model),
        val_set,
        "cpu",
        WandbMedia(num_images=3, score_thr=0.0, log_checkpoint=True),
        get_run=lambda: run,
    )
    state = TrainState(params=detector.params, buffers=detector.buffers, opt_state=None)
    context = SimpleNamespace(work_dir=work_dir)
    assert (
        hook.fn(Event(Stage.AFTER_TRAIN_ITER, state, Outputs(), context)) is None and not run.logged
    )
    metrics = {"bbox_mAP": 0.25, "bbox_mAP_50": 0.5}
    hook.fn(Event(Stage.AFTER_TRAIN_ITER, state, Outputs(metrics=metrics), context))
    [payload] = run.logged
    table = payload["val/samples"]
    assert isinstance(table, wandb.Table) and len(table.data) == 3
    for row, record in zip(table.data, val_set.records):
        image = row[2]
        assert isinstance(image, wandb.Image)
        truth = image._boxes["ground_truth"]._val  # wandb keeps the box_data list
        assert len(truth) == len(record.boxes) > 0
        assert "predictions" in image._boxes
    assert isinstance(payload["val/curves"], wandb.Image)
    assert run.summary == {"val/bbox_mAP": 0.25, "val/bbox_mAP_50": 0.5}
    assert len(run.artifacts) == 1 and run.artifacts[0].type == "model"
    hook.fn(Event(Stage.AFTER_TRAIN_ITER, state, Outputs(metrics=metrics), context))
    assert len(run.artifacts) == 1  # the same best checkpoint is not uploaded twice
