"""The RetinaNet coco preset is mmdetection 2.x's retinanet_r50_fpn_1x_coco, value by value
(mmdet-facts.md section 2.2), and its bccd preset is sized like Faster R-CNN's."""

from __future__ import annotations

import math

import pytest
import torch

from detfn.apis import (
    FASTER_RCNN_R50_FPN_1X_COCO,
    RETINANET_R50_FPN_1X_COCO,
    ExperimentConfig,
    bccd_cpu_preset,
    retinanet_bccd_preset,
)
from detfn.apis.presets import bccd_data
from detfn.config import from_json, to_json
from detfn.engine.optim import SGDConfig
from detfn.engine.schedules import StepSchedule
from detfn.models.anchors import anchor_scales, base_anchors
from detfn.models.detectors import SingleStageDetectorConfig
from detfn.models.losses import FocalLossConfig, L1LossConfig
from detfn.models.samplers import PseudoSamplerConfig
from detfn.registry import build

CFG = RETINANET_R50_FPN_1X_COCO
MODEL = CFG.model


def test_backbone_and_neck_p3_to_p7():
    assert isinstance(MODEL, SingleStageDetectorConfig) and MODEL.num_classes == 80
    assert MODEL.backbone == FASTER_RCNN_R50_FPN_1X_COCO.model.backbone  # R-50, frozen stem
    n = MODEL.neck
    assert (n.in_channels, n.out_channels, n.num_outs) == ((256, 512, 1024, 2048), 256, 5)
    assert (n.start_level, n.add_extra_convs, n.relu_before_extra_convs) == (1, "on_input", False)
    assert n.conv_init == "xavier_uniform"


def test_head_anchors_coder_and_losses():
    h = MODEL.bbox_head
    assert (h.stacked_convs, h.feat_channels, h.prior_prob) == (4, 256, 0.01)
    a = h.anchor_generator
    assert (a.octave_base_scale, a.scales_per_octave, a.scales) == (4.0, 3, None)
    assert a.ratios == (0.5, 1.0, 2.0) and a.strides == (8, 16, 32, 64, 128)
    assert a.center_offset == 0.0
    assert anchor_scales(a) == pytest.approx((4.0, 4 * 2 ** (1 / 3), 4 * 2 ** (2 / 3)))
    square = base_anchors(a)[0][3:6]  # ratio 1: sides 32, 40.3, 50.8 px on P3, unrounded
    torch.testing.assert_close(square[:, 2] - square[:, 0], 8 * torch.tensor(anchor_scales(a)))
    c = h.bbox_coder
    assert c.target_means == (0.0,) * 4 and c.target_stds == (1.0,) * 4
    assert c.wh_ratio_clip == pytest.approx(16 / 1000) and c.clip_border
    assert h.loss_cls == FocalLossConfig(gamma=2.0, alpha=0.25, loss_weight=1.0)
    assert h.loss_bbox == L1LossConfig(loss_weight=1.0)


def test_train_and_test_cfg():
    h = MODEL.bbox_head
    s = h.assigner
    assert (s.pos_iou_thr, s.neg_iou_thr, s.min_pos_iou, s.ignore_iof_thr) == (0.5, 0.4, 0.0, -1)
    assert s.match_low_quality is True and s.gt_max_assign_all is True
    assert h.sampler == PseudoSamplerConfig() and h.allowed_border == -1
    t = h.test_cfg
    assert (t.nms_pre, t.score_thr, t.iou_threshold, t.max_per_img) == (1000, 0.05, 0.5, 100)


def test_built_head_structure_and_prior_probability_init():
    torch.manual_seed(0)
    head = build(MODEL).bbox_head
    assert len(head.cls_convs) == len(head.reg_convs) == 4
    assert head.cls_convs[0].conv.in_channels == 256  # the neck's width, given once
    assert head.retina_cls.out_channels == 9 * 80 and head.retina_reg.out_channels == 9 * 4
    bias = -math.log((1 - 0.01) / 0.01)
    torch.testing.assert_close(head.retina_cls.bias, torch.full((720,), bias))
    assert head.reg_convs[2].conv.bias.abs().sum() == 0 and head.retina_reg.bias.abs().sum() == 0
    assert head.cls_convs[0].conv.weight.std().item() == pytest.approx(0.01, rel=0.05)


def test_schedule_lr_001_and_data():
    r = CFG.runner
    assert r.optimizer == SGDConfig(lr=0.01, momentum=0.9, weight_decay=1e-4)
    assert r.optimizer_hook.grad_clip is None
    assert r.lr == StepSchedule(
        step=(8, 11), gamma=0.1, warmup="linear", warmup_iters=500, warmup_ratio=0.001
    )
    assert r.max_epochs == 12
    assert CFG.data == FASTER_RCNN_R50_FPN_1X_COCO.data  # coco_detection, 2 images per GPU


def test_bccd_preset_is_sized_like_the_faster_rcnn_one():
    retina, faster = retinanet_bccd_preset(), bccd_cpu_preset()
    # half-size images (320x240); the Faster R-CNN preset's are 400x300, the rest is shared
    assert retina.data == bccd_data() and faster.data == bccd_data(scale=(400, 300))
    assert retina.model.backbone == faster.model.backbone
    assert retina.model.neck.out_channels == faster.model.neck.out_channels == 128
    assert retina.model.class_names == faster.model.class_names == ("RBC", "WBC", "Platelets")
    assert retina.runner.max_epochs == faster.runner.max_epochs == 8
    assert retina.runner.optimizer.lr == 0.01
    assert retina.model.bbox_head.anchor_generator.octave_base_scale == 2.0


@pytest.mark.parametrize("cfg", [RETINANET_R50_FPN_1X_COCO, retinanet_bccd_preset()])
def test_presets_round_trip_through_json_as_their_detector_type(cfg):
    back = from_json(to_json(cfg), ExperimentConfig)
    assert back == cfg and isinstance(back.model, SingleStageDetectorConfig)
    assert '"type": "SingleStageDetector"' in to_json(cfg)
