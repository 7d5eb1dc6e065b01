"""Shared2FCBBoxHead: structure, mmdet init, hand-computed losses and decoding."""

import math

import pytest
import torch
import torch.nn.functional as F

from detfn import registry
from detfn.models.losses import GIoULossConfig, SmoothL1LossConfig
from detfn.models.roi_heads.bbox_head import Shared2FCBBoxHeadConfig, accuracy


def _tiny_cfg(**kw) -> Shared2FCBBoxHeadConfig:
    return Shared2FCBBoxHeadConfig(fc_out_channels=8, roi_feat_size=2, **kw)


def test_default_structure_and_mmdet_init():
    torch.manual_seed(0)
    head = registry.build(Shared2FCBBoxHeadConfig(), in_channels=256, num_classes=80)
    assert head.shared_fcs[0].weight.shape == (1024, 256 * 7 * 7)
    assert head.shared_fcs[1].weight.shape == (1024, 1024)
    assert head.fc_cls.weight.shape == (81, 1024)  # 80 classes + background (last)
    assert head.fc_reg.weight.shape == (320, 1024)  # class-specific
    assert head.cfg.bbox_coder.target_stds == (0.1, 0.1, 0.2, 0.2)
    assert head.fc_cls.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert head.fc_reg.weight.std().item() == pytest.approx(0.001, rel=0.05)
    bound = math.sqrt(6 / (256 * 49 + 1024))  # xavier uniform, gain 1
    w = head.shared_fcs[0].weight
    assert w.abs().max().item() <= bound and w.abs().max().item() > 0.99 * bound
    for fc in (*head.shared_fcs, head.fc_cls, head.fc_reg):
        assert (fc.bias == 0).all()


def test_pytorch_init_is_nn_linears_default_on_every_fc():
    torch.manual_seed(0)
    head = registry.build(Shared2FCBBoxHeadConfig(init="pytorch"), in_channels=64, num_classes=80)
    for fc in (*head.shared_fcs, head.fc_cls, head.fc_reg):
        bound = 1 / math.sqrt(fc.in_features)  # kaiming_uniform_(a=sqrt(5)) and its bias rule
        for tensor in (fc.weight, fc.bias):
            assert tensor.abs().max().item() <= bound and tensor.abs().max().item() > 0.9 * bound
    assert head.fc_reg.weight.std().item() == pytest.approx(1 / math.sqrt(3 * 1024), rel=0.05)


def test_forward_matches_manual_fc_relu_stack():
    torch.manual_seed(1)
    head = registry.build(_tiny_cfg(), in_channels=2, num_classes=3)
    feats = torch.randn(5, 2, 2, 2)
    cls_score, bbox_pred = head(feats)
    x = feats.reshape(5, 8)
    for fc in head.shared_fcs:
        x = torch.relu(x @ fc.weight.T + fc.bias)
    torch.testing.assert_close(cls_score, x @ head.fc_cls.weight.T + head.fc_cls.bias)
    torch.testing.assert_close(bbox_pred, x @ head.fc_reg.weight.T + head.fc_reg.bias)
    assert cls_score.shape == (5, 4) and bbox_pred.shape == (5, 12)


def _loss_case():
    rois = torch.tensor(
        [
            [0, 0.0, 0.0, 10.0, 10.0],  # pos, class 1, gt shifted by (1, 1)
            [0, 0.0, 0.0, 10.0, 20.0],  # pos, class 2, gt [0, 0, 20, 20]
            [1, 5.0, 5.0, 15.0, 15.0],  # negative
            [1, 3.0, 3.0, 9.0, 9.0],  # negative
        ]
    )
    labels = torch.tensor([1, 2, 3, 3])
    gt = torch.tensor([[1.0, 1, 11, 11], [0, 0, 20, 20], [0, 0, 0, 0], [0, 0, 0, 0]])
    cls_score = torch.tensor(
        [[0.1, 2.0, 0.3, 0.0], [0.5, 0.2, 0.1, 0.9], [0.0, 0.0, 0.0, 3.0], [1.0, 0.0, 0.0, 0.5]]
    )
    bbox_pred = torch.linspace(-1, 1, 48).reshape(4, 12)
    # Hand-encoded targets with stds (0.1, 0.1, 0.2, 0.2):
    # roi0: px=5, pw=10, gx=6 -> dx=0.1/0.1=1; same for y; dw=dh=log(1)=0
    # roi1: (px,py,pw,ph)=(5,10,10,20), gt (10,10,20,20) -> dx=0.5/0.1=5, dy=0, dw=log2/0.2, dh=0
    targets = {
        0: torch.tensor([1.0, 1.0, 0.0, 0.0]),
        1: torch.tensor([5.0, 0.0, math.log(2) / 0.2, 0.0]),
    }
    return rois, labels, gt, cls_score, bbox_pred, targets


def test_loss_values_by_hand():
    head = registry.build(_tiny_cfg(), in_channels=2, num_classes=3)
    rois, labels, gt, cls_score, bbox_pred, targets = _loss_case()
    losses = head.loss(cls_score, bbox_pred, rois, labels, gt)
    expected_cls = F.cross_entropy(cls_score, labels)  # mean over the 4 sampled RoIs
    l1 = (bbox_pred[0, 4:8] - targets[0]).abs().sum() + (
        bbox_pred[1, 8:12] - targets[1]
    ).abs().sum()
    expected_bbox = l1 / 4  # avg_factor = all sampled RoIs, not only positives
    assert losses["loss_cls"].item() == pytest.approx(expected_cls.item(), rel=1e-6)
    assert losses["loss_bbox"].item() == pytest.approx(expected_bbox.item(), rel=1e-6)
    # argmax: [1, 3, 3, 0] vs labels [1, 2, 3, 3] -> 2 of 4 correct
    assert losses["acc"].item() == pytest.approx(50.0)
    assert accuracy(cls_score, labels).requires_grad is False


def test_smooth_l1_and_decoded_giou_variants():
    rois, labels, gt, cls_score, bbox_pred, targets = _loss_case()
    head = registry.build(
        _tiny_cfg(loss_bbox=SmoothL1LossConfig(beta=1.0)), in_channels=2, num_classes=3
    )
    d0, d1 = bbox_pred[0, 4:8] - targets[0], bbox_pred[1, 8:12] - targets[1]
    diff = torch.cat([d0, d1]).abs()
    ref = torch.where(diff < 1, 0.5 * diff**2, diff - 0.5).sum() / 4
    assert head.loss(cls_score, bbox_pred, rois, labels, gt)["loss_bbox"].item() == pytest.approx(
        ref.item(), rel=1e-6
    )

    head = registry.build(
        _tiny_cfg(reg_decoded_bbox=True, loss_bbox=GIoULossConfig()), in_channels=2, num_classes=3
    )
    zero_pred = torch.zeros(4, 12)  # decodes to the RoI itself
    # roi0 vs gt0: inter 81, union 119, hull 121 -> giou = 81/119 - 2/121
    # roi1 vs gt1: inter 200, union 400, hull 400 -> giou = 0.5
    giou0 = 81 / 119 - 2 / 121
    ref = ((1 - giou0) + (1 - 0.5)) / 4
    loss = head.loss(cls_score, zero_pred, rois, labels, gt)["loss_bbox"]
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    with pytest.raises(ValueError, match="needs reg_decoded_bbox=True"):
        _tiny_cfg(loss_bbox=GIoULossConfig())


def test_no_positives_gives_zero_finite_bbox_loss_and_gradients():
    head = registry.build(_tiny_cfg(), in_channels=2, num_classes=3)
    rois = torch.tensor([[0, 0.0, 0, 0, 0], [0, 1.0, 1, 5, 5]])  # a degenerate RoI as well
    feats = torch.randn(2, 2, 2, 2)
    cls_score, bbox_pred = head(feats)
    losses = head.loss(cls_score, bbox_pred, rois, torch.tensor([3, 3]), torch.zeros(2, 4))
    assert losses["loss_bbox"].item() == 0.0
    (losses["loss_cls"] + losses["loss_bbox"]).backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters())


def test_decode_softmax_and_class_specific_clipped_boxes():
    head = registry.build(_tiny_cfg(), in_channels=2, num_classes=3)
    rois = torch.tensor([[0, 10.0, 10, 30, 30], [1, 0, 0, 8, 8]])
    cls_score = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    bbox_pred = torch.zeros(2, 12)
    bbox_pred[0, 4:8] = torch.tensor([10.0, 0.0, 0.0, 0.0])  # class 1 moves right by 10*0.1*20
    scores, boxes = head.decode(rois, cls_score, bbox_pred, torch.tensor([[40, 45], [6, 100]]))
    torch.testing.assert_close(scores, F.softmax(cls_score, dim=1))
    assert boxes.shape == (2, 3, 4)
    assert boxes[0, 0].tolist() == [10, 10, 30, 30]
    assert boxes[0, 1].tolist() == [30, 10, 45, 30]  # [30, 10, 50, 30] clipped to W=45
    assert boxes[1, 2].tolist() == [0, 0, 8, 6]  # clipped to H=6
