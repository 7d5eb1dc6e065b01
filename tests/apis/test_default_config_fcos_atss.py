"""The FCOS and ATSS coco presets are mmdetection 2.x's fcos_r50_caffe_fpn_gn-head_1x_coco and
atss_r50_fpn_1x_coco outside the heads (mmdet-facts.md sections 2.3 and 2.4; the heads' own
values are tests/models/test_dense_head_defaults_1x.py), their bccd presets are sized like Faster
R-CNN's, and both train through the shared CLI and the single-stage assembly."""

from __future__ import annotations

import pytest
import torch

from detfn.apis import (
    ATSS_R50_FPN_1X_COCO,
    FASTER_RCNN_R50_FPN_1X_COCO,
    FCOS_R50_CAFFE_FPN_GN_HEAD_1X_COCO,
    ExperimentConfig,
    atss_bccd_preset,
    bccd_cpu_preset,
    fcos_bccd_preset,
)
from detfn.apis.presets import bccd_data
from detfn.config import from_json, to_json
from detfn.data import NormalizeConfig
from detfn.engine.hooks.optimizer import GradClipConfig
from detfn.engine.optim import ParamGroupsConfig, SGDConfig
from detfn.engine.schedules import StepSchedule
from detfn.models.dense_heads import ATSSHeadConfig, FCOSHeadConfig
from detfn.models.detectors import SingleStageDetectorConfig
from detfn.models.functional import detector_loss_fn, split
from detfn.registry import build
from experiments import atss, fcos

FCOS_CFG, ATSS_CFG = FCOS_R50_CAFFE_FPN_GN_HEAD_1X_COCO, ATSS_R50_FPN_1X_COCO


def test_fcos_backbone_neck_and_caffe_normalization():
    m = FCOS_CFG.model
    assert isinstance(m, SingleStageDetectorConfig) and isinstance(m.bbox_head, FCOSHeadConfig)
    b = m.backbone
    assert (b.depth, b.style, b.norm, b.norm_eval, b.frozen_stages) == (
        50,
        "caffe",
        "FrozenBN",
        True,
        1,
    )
    n = m.neck
    assert (n.start_level, n.add_extra_convs, n.relu_before_extra_convs, n.num_outs) == (
        1,
        "on_output",
        True,
        5,
    )
    assert n.out_channels == 256 and m.num_classes == 80
    caffe = NormalizeConfig(mean=(102.9801, 115.9465, 122.7717), std=(1.0, 1.0, 1.0), to_rgb=False)
    for dataset in (FCOS_CFG.data.train, FCOS_CFG.data.val, FCOS_CFG.data.test):
        assert [t for t in dataset.pipeline if isinstance(t, NormalizeConfig)] == [caffe]


def test_fcos_schedule():
    r = FCOS_CFG.runner
    assert r.optimizer == SGDConfig(
        lr=0.01,
        momentum=0.9,
        weight_decay=1e-4,
        param_groups=ParamGroupsConfig(bias_lr_mult=2.0, bias_decay_mult=0.0),
    )
    assert r.optimizer_hook.grad_clip == GradClipConfig(max_norm=35.0, norm_type=2.0)
    assert r.lr == StepSchedule(
        step=(8, 11), gamma=0.1, warmup="constant", warmup_iters=500, warmup_ratio=1 / 3
    )
    assert r.max_epochs == 12


def test_atss_backbone_neck_and_schedule():
    m = ATSS_CFG.model
    assert isinstance(m.bbox_head, ATSSHeadConfig)
    assert m.backbone == FASTER_RCNN_R50_FPN_1X_COCO.model.backbone
    n = m.neck
    assert (n.start_level, n.add_extra_convs, n.relu_before_extra_convs, n.num_outs) == (
        1,
        "on_output",
        False,
        5,
    )
    r = ATSS_CFG.runner
    assert r.optimizer == SGDConfig(lr=0.01, momentum=0.9, weight_decay=1e-4)
    assert r.optimizer_hook.grad_clip is None
    assert r.lr == StepSchedule(
        step=(8, 11), gamma=0.1, warmup="linear", warmup_iters=500, warmup_ratio=0.001
    )
    assert ATSS_CFG.data == FASTER_RCNN_R50_FPN_1X_COCO.data


@pytest.mark.parametrize("preset", [fcos_bccd_preset, atss_bccd_preset])
def test_bccd_presets_sized_like_faster_rcnn_and_round_trip(preset):
    cfg, faster = preset(), bccd_cpu_preset()
    # half-size images (320x240); the Faster R-CNN preset's are 400x300, the rest is shared
    assert cfg.data == bccd_data() and faster.data == bccd_data(scale=(400, 300))
    assert cfg.model.backbone == faster.model.backbone
    assert cfg.model.neck.out_channels == 128 and cfg.model.bbox_head.feat_channels == 128
    assert cfg.model.class_names == faster.model.class_names
    assert cfg.runner.max_epochs == 8 and cfg.runner.optimizer.lr == 0.01
    assert from_json(to_json(cfg), ExperimentConfig) == cfg


@pytest.mark.parametrize("module, preset", [(fcos, fcos_bccd_preset), (atss, atss_bccd_preset)])
def test_entry_points_share_the_cli(module, preset):
    assert module.parse([]) == preset()
    cfg = module.parse(["--lr", "0.002", "--model.bbox-head.stacked-convs", "2", "--no-wandb"])
    assert cfg.runner.optimizer.lr == 0.002 and cfg.model.bbox_head.stacked_convs == 2
    coco = module.parse(["--preset", "coco", "--data-root", "/d"])
    assert coco.data.train.ann_file == "/d/annotations/instances_train2017.json"


@pytest.mark.parametrize("preset", [fcos_bccd_preset, atss_bccd_preset])
def test_the_single_stage_assembly_trains_each_head(preset):
    from detfn.structures import Batch, ImageMeta

    torch.manual_seed(0)
    model = build(preset().model)
    shape = (64, 96)
    batch = Batch(
        images=torch.randn(1, 3, *shape),
        boxes=torch.tensor([[[10.0, 8.0, 40.0, 50.0], [50.0, 20.0, 90.0, 60.0]]]),
        labels=torch.tensor([[0, 2]]),
        box_mask=torch.ones(1, 2, dtype=torch.bool),
        ignore_boxes=torch.zeros(1, 0, 4),
        ignore_mask=torch.zeros(1, 0, dtype=torch.bool),
        metas=(ImageMeta("x.jpg", 0, shape, shape, shape),),
    )
    total, losses = detector_loss_fn(model)(*split(model), batch)
    assert torch.isfinite(total) and total > 0 and len(losses) == 3


@pytest.mark.parametrize("preset", [fcos_bccd_preset, atss_bccd_preset])
def test_trained_then_loaded_back_from_its_config_json(preset, tmp_path):
    from detfn.apis import inference_detector, load_detector, train_detector
    from detfn.config import override
    from tests.apis.tiny_bccd import TINY, tiny_data_updates

    cfg = override(
        preset(),
        {
            "work_dir": str(tmp_path),
            "device": "cpu",
            "runner.max_epochs": None,
            "runner.max_iters": 1,
            "runner.evaluation": None,
            "runner.wandb": None,
            "runner.checkpoint.by_epoch": False,
            "model.bbox_head.test_cfg.score_thr": 0.0,
            **tiny_data_updates((96, 64)),
        },
    )
    train_detector(cfg)
    detector = load_detector(tmp_path / "config.json", tmp_path / "latest.pth", "cpu")
    assert detector.cfg == cfg and detector.class_names == ("RBC", "WBC", "Platelets")
    [det] = inference_detector(detector, [sorted((TINY / "JPEGImages").glob("*.jpg"))[0]])
    assert 0 < len(det.boxes) <= 100 and int(det.labels.max()) < 3
    assert float(det.boxes[:, 2].max()) <= 640 and float(det.boxes[:, 3].max()) <= 480
