"""FCOSHeadConfig and ATSSHeadConfig defaults are mmdetection 2.x's fcos_r50_caffe_fpn_gn-head_1x_coco
and atss_r50_fpn_1x_coco head values, value by value (mmdet-facts.md sections 2.3 and 2.4)."""

from __future__ import annotations

import math

import pytest
import torch

from detfn.config import from_json, to_json
from detfn.models.assigners import MaxIoUAssignerConfig
from detfn.models.atss_assigner import ATSSAssignerConfig
from detfn.models.dense_heads import ATSSHeadConfig, FCOSHeadConfig
from detfn.models.dense_heads.centerness_predict import CenternessTestConfig
from detfn.models.dense_heads.towers import prior_bias
from detfn.models.losses import (
    CrossEntropyLossConfig,
    FocalLossConfig,
    GIoULossConfig,
    IoULossConfig,
)
from detfn.registry import build


def test_fcos_head_defaults():
    c = FCOSHeadConfig()
    assert (c.feat_channels, c.stacked_convs, c.norm, c.conv_bias) == (256, 4, "GN", None)
    assert c.prior_prob == 0.01
    assert c.prior_generator.strides == (8, 16, 32, 64, 128)
    assert c.prior_generator.offset == 0.5
    assert c.regress_ranges == ((-1, 64), (64, 128), (128, 256), (256, 512), (512, 1e8))
    assert (c.center_sampling, c.center_sample_radius) == (False, 1.5)
    assert (c.norm_on_bbox, c.centerness_on_reg) == (False, False)
    assert c.bbox_coder.clip_border is True
    assert c.loss_cls == FocalLossConfig(gamma=2.0, alpha=0.25, loss_weight=1.0)
    assert c.loss_bbox == IoULossConfig(mode="log", eps=1e-6, loss_weight=1.0)
    assert c.loss_centerness == CrossEntropyLossConfig(use_sigmoid=True, loss_weight=1.0)
    assert c.centerness_weighted is True
    t = c.test_cfg
    assert (t.nms_pre, t.score_thr, t.iou_threshold, t.max_per_img) == (1000, 0.05, 0.5, 100)
    assert t.score_mode == "product"


def test_atss_head_defaults():
    c = ATSSHeadConfig()
    assert (c.feat_channels, c.stacked_convs, c.norm, c.conv_bias) == (256, 4, "GN", None)
    assert c.prior_prob == 0.01
    a = c.anchor_generator
    assert a.ratios == (1.0,) and a.scales is None
    assert (a.octave_base_scale, a.scales_per_octave) == (8.0, 1)
    assert a.strides == (8, 16, 32, 64, 128) and a.center_offset == 0.0
    assert c.bbox_coder.target_means == (0.0,) * 4
    assert c.bbox_coder.target_stds == (0.1, 0.1, 0.2, 0.2)
    assert c.assigner == ATSSAssignerConfig(topk=9, ignore_iof_thr=-1.0)
    assert c.allowed_border == -1
    assert c.loss_cls == FocalLossConfig(gamma=2.0, alpha=0.25, loss_weight=1.0)
    assert c.loss_bbox == GIoULossConfig(eps=1e-6, loss_weight=2.0)
    assert c.loss_centerness == CrossEntropyLossConfig(use_sigmoid=True, loss_weight=1.0)
    t = c.test_cfg
    assert (t.nms_pre, t.score_thr, t.iou_threshold, t.max_per_img) == (1000, 0.05, 0.6, 100)
    assert t.score_mode == "product"


@pytest.mark.parametrize("cfg_type", [FCOSHeadConfig, ATSSHeadConfig])
def test_built_head_init_and_json_round_trip(cfg_type):
    cfg = cfg_type()
    assert from_json(to_json(cfg), cfg_type) == cfg
    torch.manual_seed(0)
    head = build(cfg, in_channels=256, num_classes=80)
    cls = head.conv_cls if cfg_type is FCOSHeadConfig else head.atss_cls
    assert cls.out_channels == 80
    assert torch.allclose(cls.bias, torch.full((80,), prior_bias(0.01)))
    assert math.isclose(prior_bias(0.01), -math.log(99), rel_tol=1e-12)
    tower = head.cls_convs[0]
    assert tower.conv.bias is None  # "auto": GN follows, so no conv bias
    assert isinstance(tower.gn, torch.nn.GroupNorm) and tower.gn.num_groups == 32
    assert len(head.cls_convs) == len(head.reg_convs) == 4
    assert 0.008 < float(tower.conv.weight.detach().std()) < 0.012  # Normal(0, 0.01)
    assert [float(s.scale.detach()) for s in head.scales] == [1.0] * 5


def test_bad_values_fail_with_one_line():
    with pytest.raises(ValueError, match="FCOSHeadConfig.regress_ranges"):
        FCOSHeadConfig(regress_ranges=((-1, 64),))
    with pytest.raises(ValueError, match="FCOSHeadConfig.prior_prob"):
        FCOSHeadConfig(prior_prob=1.0)
    with pytest.raises(ValueError, match="ATSSHeadConfig.loss_centerness"):
        ATSSHeadConfig(loss_centerness=CrossEntropyLossConfig(use_sigmoid=False))
    with pytest.raises(ValueError, match="feat_channels divisible by 32"):
        build(FCOSHeadConfig(feat_channels=48), in_channels=48, num_classes=3)


def test_variants_round_trip_through_json():
    giou_variant = FCOSHeadConfig(
        center_sampling=True,
        norm_on_bbox=True,
        centerness_on_reg=True,
        conv_bias=True,
        loss_bbox=GIoULossConfig(),
        test_cfg=CenternessTestConfig(iou_threshold=0.6),
    )
    assert from_json(to_json(giou_variant), FCOSHeadConfig) == giou_variant
    max_iou = ATSSHeadConfig(assigner=MaxIoUAssignerConfig(pos_iou_thr=0.5, neg_iou_thr=0.4))
    decoded = from_json(to_json(max_iou), ATSSHeadConfig)
    assert decoded == max_iou and isinstance(decoded.assigner, MaxIoUAssignerConfig)
