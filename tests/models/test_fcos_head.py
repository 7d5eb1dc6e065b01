"""FCOS head with mmdetection's base settings (exp regression, IoU log loss weighted by
centerness, centerness on the cls tower, score = cls * centerness): losses against a hand-written
reference of mmdetection's formulas, detections against a per-image loop of mmdetection's
post-processing, and the options' effect on the outputs."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms

from detfn.models.dense_heads.centerness_predict import CenternessTestConfig
from detfn.models.dense_heads.fcos_head import FCOSHeadConfig
from detfn.models.losses import sigmoid_focal_loss
from detfn.models.points import grid_points
from detfn.registry import build
from detfn.structures import Batch, ImageMeta

NUM_CLASSES = 3
SIZE = 256
STRIDES = (8, 16, 32, 64, 128)


def _head(**changes):
    torch.manual_seed(0)
    cfg = dataclasses.replace(FCOSHeadConfig(feat_channels=32), **changes)
    head = build(cfg, in_channels=32, num_classes=NUM_CLASSES)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return head


def _feats():
    gen = torch.Generator().manual_seed(5)
    return [torch.randn(2, 32, SIZE // s, SIZE // s, generator=gen) for s in STRIDES]


def _batch():
    boxes = torch.tensor(
        [
            [[40.0, 50.0, 120.5, 140.0], [150.0, 30.0, 250.0, 230.5], [20.0, 20.0, 40.5, 30.0]],
            [[10.5, 20.0, 60.0, 90.0], [5.0, 100.0, 240.0, 250.0], [0.0, 0.0, 0.0, 0.0]],
        ]
    )
    mask = torch.tensor([[True, True, True], [True, True, False]])
    meta = ImageMeta("a.jpg", 0, (SIZE, SIZE), (SIZE, SIZE), (SIZE, SIZE))
    return Batch(
        images=torch.zeros(2, 3, SIZE, SIZE),
        boxes=boxes,
        labels=torch.tensor([[2, 0, 1], [1, 2, -1]]),
        box_mask=mask,
        ignore_boxes=torch.zeros(2, 0, 4),
        ignore_mask=torch.zeros(2, 0, dtype=torch.bool),
        metas=(meta, meta),
    )


def _flat(maps, channels):
    return torch.cat([m.permute(0, 2, 3, 1).reshape(2, -1, channels) for m in maps], 1)


def test_losses_match_mmdetection_formulas():
    head, feats, batch = _head(), _feats(), _batch()
    losses = head.loss(feats, batch)
    out = head(feats)
    points, t = head.targets(out, batch)
    pos = t.assigned > 0
    assert int(pos.sum()) > 30
    num_pos = float(pos.sum())
    onehot = F.one_hot(t.labels, NUM_CLASSES + 1)[..., :NUM_CLASSES].float()
    logits = _flat(out.cls_scores, NUM_CLASSES)
    loss_cls = sigmoid_focal_loss(logits, onehot, reduction="sum") / num_pos

    p = points.expand(2, -1, -1)[pos]
    gt = batch.boxes.gather(1, (t.assigned - 1).clamp(min=0)[..., None].expand(-1, -1, 4))[pos]
    left, top, right, bottom = (
        p[:, 0] - gt[:, 0],
        p[:, 1] - gt[:, 1],
        gt[:, 2] - p[:, 0],
        gt[:, 3] - p[:, 1],
    )
    ctr = torch.sqrt(
        torch.minimum(left, right)
        / torch.maximum(left, right)
        * torch.minimum(top, bottom)
        / torch.maximum(top, bottom)
    )
    d = _flat(out.bbox_preds, 4)[pos]  # exp(scale * conv): pixels
    pred = torch.stack(
        (p[:, 0] - d[:, 0], p[:, 1] - d[:, 1], p[:, 0] + d[:, 2], p[:, 1] + d[:, 3]), 1
    )
    iw = (torch.minimum(pred[:, 2], gt[:, 2]) - torch.maximum(pred[:, 0], gt[:, 0])).clamp(min=0)
    ih = (torch.minimum(pred[:, 3], gt[:, 3]) - torch.maximum(pred[:, 1], gt[:, 1])).clamp(min=0)
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
    iou = iw * ih / (area(pred) + area(gt) - iw * ih)
    loss_bbox = (-iou.clamp(min=1e-6).log() * ctr).sum() / ctr.sum()
    c = _flat(out.centernesses, 1).squeeze(2)[pos]
    loss_ctr = F.binary_cross_entropy_with_logits(c, ctr, reduction="sum") / num_pos

    torch.testing.assert_close(losses["loss_cls"], loss_cls, rtol=1e-5, atol=0)
    torch.testing.assert_close(losses["loss_bbox"], loss_bbox, rtol=1e-5, atol=0)
    torch.testing.assert_close(losses["loss_centerness"], loss_ctr, rtol=1e-5, atol=0)
    sum(losses.values()).backward()
    assert all(torch.isfinite(q.grad).all() for q in head.parameters() if q.grad is not None)


def _reference_predict(head, feats, img_shapes, cfg):
    """mmdetection's ``_get_bboxes_single`` + ``_bbox_post_process`` for one image at a time."""
    out = head(feats)
    points = grid_points(head.cfg.prior_generator, [f.shape[-2:] for f in feats])
    results = []
    for i in range(2):
        boxes, scores, labels = [], [], []
        for lvl, stride in enumerate(STRIDES):
            s = out.cls_scores[lvl][i].permute(1, 2, 0).reshape(-1, NUM_CLASSES).sigmoid()
            c = out.centernesses[lvl][i].reshape(-1).sigmoid()
            d = out.bbox_preds[lvl][i].permute(1, 2, 0).reshape(-1, 4)
            if head.cfg.norm_on_bbox:
                d = d * stride
            idx = (s > cfg.score_thr).nonzero()
            sc, order = s[s > cfg.score_thr].sort(descending=True)
            sc, idx = sc[: cfg.nms_pre], idx[order[: cfg.nms_pre]]
            loc, lab = idx.unbind(1)
            pt, dd = points[lvl][loc], d[loc]
            b = torch.stack(
                (
                    pt[:, 0] - dd[:, 0],
                    pt[:, 1] - dd[:, 1],
                    pt[:, 0] + dd[:, 2],
                    pt[:, 1] + dd[:, 3],
                ),
                1,
            )
            h, w = img_shapes[i].tolist()
            b = torch.stack(
                (
                    b[:, 0].clamp(0, w),
                    b[:, 1].clamp(0, h),
                    b[:, 2].clamp(0, w),
                    b[:, 3].clamp(0, h),
                ),
                1,
            )
            boxes.append(b)
            scores.append(sc * c[loc])
            labels.append(lab)
        b, sc, lab = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
        keep = batched_nms(b, sc, lab, cfg.iou_threshold)[: cfg.max_per_img]
        results.append((b[keep], sc[keep], lab[keep]))
    return results


def test_detections_match_mmdetection_per_image_loop():
    cfg = CenternessTestConfig(nms_pre=60, score_thr=0.05, iou_threshold=0.5, max_per_img=40)
    for changes in ({}, {"norm_on_bbox": True, "centerness_on_reg": True}):
        head = _head(test_cfg=cfg, **changes)
        with torch.no_grad():
            head.conv_cls.bias.fill_(-1.0)  # many (point, class) pairs above 0.05
            shapes = torch.tensor([[256.0, 256.0], [200.0, 150.0]])
            dets = head.predict(_feats(), shapes)
            expected = _reference_predict(head, _feats(), shapes, cfg)
        for i, (boxes, scores, labels) in enumerate(expected):
            keep = dets.mask[i]
            assert int(keep.sum()) == boxes.shape[0] == 40
            torch.testing.assert_close(dets.boxes[i][keep], boxes)
            torch.testing.assert_close(dets.scores[i][keep], scores)
            assert torch.equal(dets.labels[i][keep], labels)


def test_options_change_the_forward_as_documented():
    feats = _feats()
    base = _head()
    out = base(feats)
    assert all(bool((d > 0).all()) for d in out.bbox_preds)  # exp: strictly positive
    normed = _head(norm_on_bbox=True)
    normed.load_state_dict(base.state_dict())
    with torch.no_grad():
        for lvl in range(len(STRIDES)):
            raw = normed.scales[lvl](normed.conv_reg(normed.reg_convs(feats[lvl])))
            torch.testing.assert_close(normed(feats).bbox_preds[lvl], raw.clamp(min=0))
            torch.testing.assert_close(out.bbox_preds[lvl], raw.exp())
    on_reg = _head(centerness_on_reg=True)
    on_reg.load_state_dict(base.state_dict())
    with torch.no_grad():
        expected = on_reg.conv_centerness(on_reg.reg_convs(feats[0]))
        torch.testing.assert_close(on_reg(feats).centernesses[0], expected)
        assert not torch.allclose(out.centernesses[0], expected)
    biased = _head(conv_bias=True)
    assert biased.cls_convs[0].conv.bias is not None and base.cls_convs[0].conv.bias is None


def test_no_gt_and_no_detection_edge_cases():
    head, feats, batch = _head(), _feats(), _batch()
    empty = dataclasses.replace(
        batch,
        boxes=torch.zeros(2, 0, 4),
        labels=torch.zeros(2, 0, dtype=torch.long),
        box_mask=torch.zeros(2, 0, dtype=torch.bool),
    )
    losses = head.loss(feats, empty)
    assert float(losses["loss_bbox"].detach()) == 0.0
    assert float(losses["loss_centerness"].detach()) == 0.0
    assert float(losses["loss_cls"].detach()) > 0
    sum(losses.values()).backward()
    with torch.no_grad():
        head.conv_cls.bias.fill_(-20.0)  # every score below 0.05
        dets = head.predict(feats, torch.tensor([[256.0, 256.0]] * 2))
    assert dets.boxes.shape == (2, 100, 4) and not bool(dets.mask.any())
    assert bool((dets.labels == -1).all())
