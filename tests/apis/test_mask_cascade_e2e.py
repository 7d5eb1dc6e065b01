"""Mask detectors through the shared entry points: ``experiments.mask_rcnn`` and
``experiments.cascade_rcnn`` (``--mask``) parse the shared flags; a tiny Cascade Mask R-CNN
trained for 2 iterations on nuclei is loaded back by ``load_detector``, returns masks from
``inference_detector``, and ``experiments.test`` scores it with bbox and segm metrics and writes
the RLE results and drawings."""

from __future__ import annotations

import json

import pytest
import torch

from detfn.apis import (
    cascade_nuclei_preset,
    inference_detector,
    load_detector,
    mask_rcnn_nuclei_preset,
    save_drawing,
    train_detector,
)
from detfn.config import override
from detfn.data import default_test_pipeline, default_train_pipeline
from detfn.data.bundled import nuclei_uris, resolve_path
from detfn.models.detectors import TwoStageDetectorConfig
from detfn.models.roi_heads import CascadeRoIHeadConfig
from experiments import cascade_rcnn, faster_rcnn, mask_rcnn
from experiments import test as test_cli

SCALE = (128, 128)


def test_mask_and_cascade_clis_share_the_flags_and_presets():
    assert mask_rcnn.parse([]) == mask_rcnn_nuclei_preset()
    assert cascade_rcnn.parse([]) == cascade_nuclei_preset()
    cfg = cascade_rcnn.parse(["--mask", "--iters", "5", "--no-wandb"])
    assert cfg == override(
        cascade_nuclei_preset(mask=True),
        {"runner.max_epochs": None, "runner.max_iters": 5, "runner.wandb": None},
    )
    assert cfg.model.roi_head.with_mask and cfg.runner.evaluation.save_best == "segm_mAP"
    coco = cascade_rcnn.parse(["--preset", "coco", "--mask", "--data-root", "/data/coco"])
    assert coco.name == "cascade_mask_rcnn_r50_fpn_1x_coco" and coco.data.train.with_mask
    box = faster_rcnn.parse(["--preset", "coco", "--data-root", "/data/coco"])
    assert coco.data.train.ann_file == box.data.train.ann_file
    assert mask_rcnn.main is faster_rcnn.main  # one main, not a copy


def _tiny(cfg, work_dir):
    stage_updates = {}
    for i in range(3):
        p = f"model.roi_head.stages.{i}."
        stage_updates.update(
            {
                p + "bbox_head.fc_out_channels": 32,
                p + "mask_branch.mask_head.num_convs": 1,
                p + "mask_branch.mask_head.conv_out_channels": 16,
                p + "sampler.num": 64,
            }
        )
    updates = {
        **stage_updates,
        "work_dir": str(work_dir),
        "device": "cpu",
        "runner.max_epochs": None,
        "runner.max_iters": 2,
        "runner.evaluation": None,
        "runner.wandb": None,
        "runner.checkpoint.by_epoch": False,
        "model.neck.out_channels": 32,
        "model.rpn_head.feat_channels": 32,
        "model.rpn_head.test_proposal.max_per_img": 50,
        "model.roi_head.score_thr": 0.0,  # untrained: keep boxes so that masks are pasted
        "model.roi_head.max_per_img": 10,
        "data.train_loader.num_workers": 0,
        "data.test_loader.num_workers": 0,
        "data.train.pipeline": default_train_pipeline(scale=SCALE),
        "data.val.pipeline": default_test_pipeline(scale=SCALE),
        "data.test.pipeline": default_test_pipeline(scale=SCALE),
    }
    return override(cfg, updates)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("cascade_mask")
    cfg = _tiny(cascade_nuclei_preset(mask=True), work_dir)
    torch.manual_seed(0)
    state = train_detector(cfg)
    assert state.iter == 2
    return cfg, work_dir


def test_loaded_cascade_mask_detector_returns_masks_and_draws_them(trained, tmp_path):
    _, work_dir = trained
    detector = load_detector(work_dir / "config.json", work_dir / "latest.pth", "cpu")
    assert isinstance(detector.cfg.model, TwoStageDetectorConfig)
    assert isinstance(detector.cfg.model.roi_head, CascadeRoIHeadConfig)
    _, img_prefix = nuclei_uris("val")
    image = sorted(resolve_path(img_prefix).rglob("*.png"))[0]
    [det] = inference_detector(detector, [image])
    assert det.masks is not None and det.masks.dtype == torch.bool
    assert det.masks.shape[0] == len(det.boxes) == 10
    height, width = det.masks.shape[1:]
    assert float(det.boxes[:, 2].max()) <= width and float(det.boxes[:, 3].max()) <= height
    drawn = save_drawing(detector, image, det, tmp_path / "drawn.png", score_thr=0.0)
    assert drawn.stat().st_size > 0


def test_experiments_test_gives_segm_and_bbox_metrics(trained, tmp_path):
    _, work_dir = trained
    args = test_cli.TestArgs(
        config=str(work_dir / "config.json"),
        checkpoint=str(work_dir / "latest.pth"),
        out=str(tmp_path / "results.json"),
        show_dir=str(tmp_path / "show"),
        num_workers=0,
    )
    metrics = test_cli.main(args)
    assert 0.0 <= metrics["bbox_mAP"] <= 1.0 and 0.0 <= metrics["segm_mAP"] <= 1.0
    segm = json.loads((tmp_path / "results.segm.json").read_text())
    assert segm and all(set(r["segmentation"]) == {"size", "counts"} for r in segm)
    assert json.loads((tmp_path / "results.bbox.json").read_text())
    assert len(list((tmp_path / "show").glob("*.png"))) == 20
