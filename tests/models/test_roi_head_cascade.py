"""CascadeRoIHead: a stage's refinement is the decode of its regression (by the published
formula), the gt boxes added as proposals are not passed on to the next stage, and test-time
scores are the softmax of the stages' mean logits with the last stage's boxes."""

import math

import pytest
import torch

from detfn.models.roi_heads import (
    CascadeRoIHeadConfig,
    Shared2FCBBoxHeadConfig,
    SingleRoIExtractorConfig,
    cascade_stage,
    pad_rois,
    refine_rois,
)
from detfn.models.roi_heads import cascade as cascade_module
from detfn.registry import build
from detfn.structures import Batch, ImageMeta

C = 8  # feature channels


def _tiny(num_stages: int = 3) -> CascadeRoIHeadConfig:
    ious, stds = (0.5, 0.6, 0.7), ((0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033,) * 4)
    stages = []
    for i in range(num_stages):
        stage = cascade_stage(ious[i], stds[i])
        stages.append(
            type(stage)(
                bbox_roi_extractor=SingleRoIExtractorConfig(output_size=2),
                bbox_head=Shared2FCBBoxHeadConfig(
                    fc_out_channels=16,
                    roi_feat_size=2,
                    bbox_coder=stage.bbox_head.bbox_coder,
                    reg_class_agnostic=True,
                    loss_bbox=stage.bbox_head.loss_bbox,
                ),
                assigner=stage.assigner,
                sampler=stage.sampler,
            )
        )
    return CascadeRoIHeadConfig(
        stages=tuple(stages), stage_loss_weights=(1.0, 0.5, 0.25)[:num_stages]
    )


def _feats(seed: int = 0, batch: int = 2, size: int = 64):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, C, size // s, size // s, generator=g) for s in (4, 8, 16, 32))


def _batch(gts: list[list[list[float]]]) -> Batch:
    size, num = len(gts), max(len(g) for g in gts)
    boxes, labels = torch.zeros(size, num, 4), torch.full((size, num), -1)
    mask = torch.zeros(size, num, dtype=torch.bool)
    for i, g in enumerate(gts):
        boxes[i, : len(g)] = torch.tensor(g)
        labels[i, : len(g)] = 0
        mask[i, : len(g)] = True
    return Batch(
        images=torch.zeros(size, 3, 64, 64),
        boxes=boxes,
        labels=labels,
        box_mask=mask,
        ignore_boxes=torch.zeros(size, 0, 4),
        ignore_mask=torch.zeros(size, 0, dtype=torch.bool),
        metas=tuple(ImageMeta(f"{i}.jpg", i, (64, 64), (64, 64), (64, 64)) for i in range(size)),
    )


def _decode_by_hand(box, delta, stds, shape):
    """The published delta decoding (Girshick et al.), written out for one box."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cx, cy = x1 + 0.5 * w, y1 + 0.5 * h
    dx, dy, dw, dh = (d * s for d, s in zip(delta, stds))
    ncx, ncy, nw, nh = cx + dx * w, cy + dy * h, w * math.exp(dw), h * math.exp(dh)
    out = [ncx - nw / 2, ncy - nh / 2, ncx + nw / 2, ncy + nh / 2]
    hgt, wid = shape
    return [min(max(v, 0.0), lim) for v, lim in zip(out, (wid, hgt, wid, hgt))]


def test_default_stages_are_cascade_rcnn_r50_fpn():
    cfg = CascadeRoIHeadConfig()
    assert cfg.stage_loss_weights == (1.0, 0.5, 0.25) and len(cfg.stages) == 3
    assert [s.assigner.pos_iou_thr for s in cfg.stages] == [0.5, 0.6, 0.7]
    assert [s.bbox_head.bbox_coder.target_stds for s in cfg.stages] == [
        (0.1, 0.1, 0.2, 0.2),
        (0.05, 0.05, 0.1, 0.1),
        (0.033, 0.033, 0.067, 0.067),
    ]
    assert all(s.bbox_head.reg_class_agnostic for s in cfg.stages)
    with pytest.raises(ValueError, match="stage_loss_weights"):
        CascadeRoIHeadConfig(stage_loss_weights=(1.0, 0.5))


def test_refined_boxes_are_the_decode_of_the_stage_regression():
    torch.manual_seed(0)
    head = build(_tiny(), in_channels=C, num_classes=2)
    stage = head.stages[1]
    rois = torch.tensor([[0, 4.0, 6, 30, 40], [1, 10, 12, 50, 60], [1, 40, 2, 63, 20]])
    cls_score, bbox_pred = stage(_feats(), rois)
    bbox_pred = bbox_pred + torch.tensor([[0.5, -0.3, 0.2, -0.1]])  # a non-trivial regression
    labels = torch.tensor([2, 0, 1])  # background, then foreground classes
    shapes = torch.tensor([[64.0, 64.0], [48.0, 60.0]])
    refined = refine_rois(stage.bbox_head, rois, labels, cls_score, bbox_pred, shapes)
    assert torch.equal(refined[:, 0], rois[:, 0])
    stds = (0.05, 0.05, 0.1, 0.1)
    for k in range(3):
        shape = shapes[int(rois[k, 0])].tolist()
        expected = _decode_by_hand(rois[k, 1:].tolist(), bbox_pred[k].tolist(), stds, shape)
        assert refined[k, 1:].tolist() == pytest.approx(expected, abs=1e-4)


def test_pad_rois_keeps_order_per_image():
    rois = torch.tensor([[0, 1.0, 1, 2, 2], [0, 3, 3, 4, 4], [2, 5, 5, 6, 6]])
    boxes, mask = pad_rois(rois, 3)
    assert mask.tolist() == [[True, True], [False, False], [True, False]]
    assert boxes[0].tolist() == [[1, 1, 2, 2], [3, 3, 4, 4]] and boxes[2, 0].tolist() == [
        5,
        5,
        6,
        6,
    ]


def test_gt_boxes_are_dropped_from_the_next_stage_proposals(monkeypatch):
    torch.manual_seed(0)
    head = build(_tiny(), in_channels=C, num_classes=1)
    for stage in head.stages:  # identity refinement: the next input is the sampled RoIs
        torch.nn.init.zeros_(stage.bbox_head.fc_reg.weight)
        torch.nn.init.zeros_(stage.bbox_head.fc_reg.bias)
    gts = [[[10.0, 10, 30, 30], [34, 30, 60, 50]], [[5.0, 5, 40, 40]]]
    batch = _batch(gts)
    proposals = torch.tensor(
        [
            [[12.0, 11, 31, 29], [0, 0, 20, 20], [33, 31, 58, 52], [40, 2, 60, 20]],
            [[6.0, 4, 39, 41], [30, 30, 60, 60], [0, 0, 0, 0], [0, 0, 0, 0]],
        ]
    )
    proposal_mask = torch.tensor([[True] * 4, [True, True, False, False]])
    inputs = []
    real_sample = cascade_module.sample_rois

    def spy(cfg, boxes, mask, *args, **kwargs):
        inputs.append((boxes.clone(), mask.clone()))
        return real_sample(cfg, boxes, mask, *args, **kwargs)

    monkeypatch.setattr(cascade_module, "sample_rois", spy)
    losses = head.loss(_feats(), proposals, proposal_mask, batch, torch.Generator().manual_seed(0))
    assert set(losses) == {f"s{i}.{k}" for i in range(3) for k in ("loss_cls", "loss_bbox", "acc")}
    assert len(inputs) == 3
    for boxes, mask in inputs[1:]:
        # every proposal is sampled (few candidates), refined by zero deltas, and the gt rows
        # that the sampler added are gone: the next stage gets exactly the proposals again
        for i in range(2):
            got = sorted(map(tuple, boxes[i][mask[i]].tolist()))
            want = sorted(map(tuple, proposals[i][proposal_mask[i]].tolist()))
            assert got == want


def test_stage_losses_are_weighted():
    torch.manual_seed(0)
    head = build(_tiny(), in_channels=C, num_classes=1)
    batch = _batch([[[10.0, 10, 30, 30]], [[5.0, 5, 40, 40]]])
    proposals = torch.tensor(
        [[[12.0, 11, 31, 29], [0, 0, 20, 20]], [[6.0, 4, 39, 41], [1, 1, 9, 9]]]
    )
    mask = torch.ones(2, 2, dtype=torch.bool)
    weighted = head.loss(_feats(), proposals, mask, batch, torch.Generator().manual_seed(0))
    unit = build(
        CascadeRoIHeadConfig(stages=head.cfg.stages, stage_loss_weights=(1.0, 1.0, 1.0)),
        in_channels=C,
        num_classes=1,
    )
    unit.load_state_dict(head.state_dict())
    plain = unit.loss(_feats(), proposals, mask, batch, torch.Generator().manual_seed(0))
    for i, w in enumerate((1.0, 0.5, 0.25)):
        assert float(weighted[f"s{i}.loss_cls"]) == pytest.approx(
            w * float(plain[f"s{i}.loss_cls"])
        )
        assert float(weighted[f"s{i}.acc"]) == pytest.approx(float(plain[f"s{i}.acc"]))


def test_test_time_scores_average_the_stage_logits_and_boxes_come_from_the_last_stage():
    head = build(_tiny(), in_channels=C, num_classes=2)
    biases = ([2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [1.0, 0.0, 0.5])  # stage logits (fg, fg, bg)
    shifts = (0.0, 0.0, 0.3)  # only the last stage regresses (dx, in its stds units)
    for stage, bias, shift in zip(head.stages, biases, shifts):
        torch.nn.init.zeros_(stage.bbox_head.fc_cls.weight)
        stage.bbox_head.fc_cls.bias.data = torch.tensor(bias)
        torch.nn.init.zeros_(stage.bbox_head.fc_reg.weight)
        stage.bbox_head.fc_reg.bias.data = torch.tensor([shift, 0.0, 0.0, 0.0])
    proposals = torch.tensor([[[10.0, 10, 30, 30]]])
    dets = head.predict(
        _feats(batch=1), proposals, torch.ones(1, 1, dtype=torch.bool), torch.tensor([[64.0, 64.0]])
    )
    mean = torch.tensor(biases).mean(0)
    probs = torch.softmax(mean, 0)  # [fg0, fg1, bg]
    real = dets.mask[0]
    got = sorted(zip(dets.labels[0][real].tolist(), dets.scores[0][real].tolist()))
    assert got == [(0, pytest.approx(float(probs[0]))), (1, pytest.approx(float(probs[1])))]
    dx = 0.3 * 0.033 * 20  # last stage's std scales its delta
    for box in dets.boxes[0][real].tolist():
        assert box == pytest.approx([10 + dx, 10, 30 + dx, 30], abs=1e-4)
