"""The default experiment config is mmdetection 2.x's faster_rcnn_r50_fpn_1x_coco, value by value
(mmdet-facts.md section 2.1)."""

from __future__ import annotations

import pytest

from detfn.apis import FASTER_RCNN_R50_FPN_1X_COCO, ExperimentConfig, bccd_cpu_preset
from detfn.config import from_json, to_json
from detfn.data import (
    LoadImageConfig,
    NormalizeConfig,
    PadConfig,
    RandomFlipConfig,
    ResizeConfig,
)
from detfn.engine.optim import SGDConfig
from detfn.engine.schedules import StepSchedule
from detfn.models.losses import CrossEntropyLossConfig, L1LossConfig

CFG = FASTER_RCNN_R50_FPN_1X_COCO
MODEL = CFG.model


def test_backbone_and_neck():
    b = MODEL.backbone
    assert (b.depth, b.num_stages, b.out_indices) == (50, 4, (0, 1, 2, 3))
    assert (b.frozen_stages, b.norm, b.norm_eval) == (1, "BN", True)
    n = MODEL.neck
    assert (n.in_channels, n.out_channels, n.num_outs) == ((256, 512, 1024, 2048), 256, 5)
    assert n.add_extra_convs is False and n.start_level == 0


def test_rpn_head_anchors_coder_losses_and_train_test_cfg():
    rpn = MODEL.rpn_head
    assert rpn.feat_channels == 256
    a = rpn.anchor_generator
    assert a.scales == (8.0,) and a.ratios == (0.5, 1.0, 2.0)
    assert a.strides == (4, 8, 16, 32, 64) and a.center_offset == 0.0
    assert rpn.bbox_coder.target_means == (0.0,) * 4 and rpn.bbox_coder.target_stds == (1.0,) * 4
    assert rpn.bbox_coder.wh_ratio_clip == pytest.approx(16 / 1000) and rpn.bbox_coder.clip_border
    assert rpn.loss_cls == CrossEntropyLossConfig(use_sigmoid=True, loss_weight=1.0)
    assert rpn.loss_bbox == L1LossConfig(loss_weight=1.0)
    s = rpn.assigner
    assert (s.pos_iou_thr, s.neg_iou_thr, s.min_pos_iou) == (0.7, 0.3, 0.3)
    assert s.match_low_quality is True and s.ignore_iof_thr == -1
    assert (rpn.sampler.num, rpn.sampler.pos_fraction, rpn.sampler.neg_pos_ub) == (256, 0.5, -1)
    assert rpn.sampler.add_gt_as_proposals is False
    assert rpn.allowed_border == -1
    tr, te = rpn.train_proposal, rpn.test_proposal
    assert (tr.nms_pre, tr.max_per_img, tr.iou_threshold, tr.min_bbox_size) == (2000, 1000, 0.7, 0)
    assert (te.nms_pre, te.max_per_img, te.iou_threshold, te.min_bbox_size) == (1000, 1000, 0.7, 0)


def test_roi_head_extractor_bbox_head_and_rcnn_cfg():
    roi = MODEL.roi_head
    e = roi.bbox_roi_extractor
    assert (e.output_size, e.sampling_ratio, e.aligned) == (7, 0, True)
    assert e.featmap_strides == (4, 8, 16, 32) and e.finest_scale == 56
    h = roi.bbox_head
    assert (h.fc_out_channels, h.roi_feat_size, MODEL.num_classes) == (1024, 7, 80)
    assert h.reg_class_agnostic is False
    assert h.bbox_coder.target_stds == (0.1, 0.1, 0.2, 0.2)
    assert h.bbox_coder.target_means == (0.0,) * 4
    assert h.loss_cls == CrossEntropyLossConfig(use_sigmoid=False, loss_weight=1.0)
    assert h.loss_bbox == L1LossConfig(loss_weight=1.0)
    a = roi.assigner
    assert (a.pos_iou_thr, a.neg_iou_thr, a.min_pos_iou) == (0.5, 0.5, 0.5)
    assert a.match_low_quality is False and a.ignore_iof_thr == -1
    s = roi.sampler
    assert (s.num, s.pos_fraction, s.neg_pos_ub, s.add_gt_as_proposals) == (512, 0.25, -1, True)
    assert (roi.score_thr, roi.nms_iou, roi.max_per_img) == (0.05, 0.5, 100)


def test_channel_widths_flow_from_the_neck_and_classes_from_the_detector():
    from detfn.registry import build

    model = build(MODEL)
    assert model.rpn_head.rpn_conv.in_channels == 256 == MODEL.neck.out_channels
    assert model.roi_head.bbox_head.shared_fcs[0].in_features == 256 * 7 * 7
    assert model.roi_head.bbox_head.fc_cls.out_features == 81
    assert model.roi_head.bbox_head.fc_reg.out_features == 320


def test_schedule_1x_and_runtime():
    r = CFG.runner
    assert r.optimizer == SGDConfig(lr=0.02, momentum=0.9, weight_decay=1e-4)
    assert r.optimizer_hook.grad_clip is None and r.optimizer_hook.cumulative_iters == 1
    assert r.lr == StepSchedule(
        step=(8, 11), gamma=0.1, warmup="linear", warmup_iters=500, warmup_ratio=0.001
    )
    assert r.lr.by_epoch is True
    assert (r.max_epochs, r.max_iters, r.workflow) == (12, None, (("train", 1),))
    assert r.checkpoint.interval == 1 and r.text_logger.interval == 50
    assert r.evaluation.interval == 1


def test_data_pipelines_and_loaders():
    train, test = CFG.data.train, CFG.data.test
    assert train.ann_file.endswith("annotations/instances_train2017.json")
    assert train.filter_empty_gt and train.min_size == 32 and test.test_mode
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    assert train.pipeline == (
        LoadImageConfig(),
        ResizeConfig(scale=((1333, 800),), keep_ratio=True),
        RandomFlipConfig(prob=0.5),
        NormalizeConfig(mean=mean, std=std, to_rgb=True),
        PadConfig(size_divisor=32),
    )
    assert test.pipeline == (
        LoadImageConfig(),
        ResizeConfig(scale=((1333, 800),), keep_ratio=True),
        NormalizeConfig(mean=mean, std=std, to_rgb=True),
        PadConfig(size_divisor=32),
    )
    assert CFG.data.train_loader.batch_size == 2 and CFG.data.train_loader.num_workers == 2
    assert CFG.data.test_loader.batch_size == 1 and not CFG.data.test_loader.shuffle


@pytest.mark.parametrize("cfg", [FASTER_RCNN_R50_FPN_1X_COCO, bccd_cpu_preset()])
def test_presets_round_trip_through_json(cfg):
    assert from_json(to_json(cfg), ExperimentConfig) == cfg


def test_num_classes_must_match_the_dataset_classes():
    preset = bccd_cpu_preset()
    with pytest.raises(ValueError, match=r"num_classes=80 but data.train.classes has 3"):
        ExperimentConfig(model=FASTER_RCNN_R50_FPN_1X_COCO.model, data=preset.data)
