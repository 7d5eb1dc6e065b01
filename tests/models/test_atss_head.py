"""ATSS head: the positives of the loss are the assigner's, the losses match a hand-written
reference of mmdetection's formulas, and detections are well-formed."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from detfn.models.anchors import grid_anchors
from detfn.models.assigners import AssignInput, MaxIoUAssignerConfig
from detfn.models.atss_assigner import ATSSAssignerConfig, assign_atss
from detfn.models.dense_heads.atss_head import ATSSHeadConfig
from detfn.models.losses import aligned_giou, sigmoid_focal_loss
from detfn.registry import build
from detfn.structures import Batch, ImageMeta

NUM_CLASSES = 3
SIZE = 256
STRIDES = (8, 16, 32, 64, 128)


def _head():
    torch.manual_seed(0)
    head = build(ATSSHeadConfig(feat_channels=32), in_channels=32, num_classes=NUM_CLASSES)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return head


def _batch():
    boxes = torch.tensor(
        [
            [[40.0, 50.0, 120.5, 140.0], [150.0, 30.0, 250.0, 230.5]],
            [[10.5, 20.0, 60.0, 90.0], [0.0, 0.0, 0.0, 0.0]],
        ]
    )
    mask = torch.tensor([[True, True], [True, False]])
    metas = (
        ImageMeta("a.jpg", 0, (SIZE, SIZE), (SIZE, SIZE), (SIZE, SIZE)),
        ImageMeta("b.jpg", 1, (200, 180), (200, 180), (224, 192)),  # padded to 224 x 192
    )
    return Batch(
        images=torch.zeros(2, 3, SIZE, SIZE),
        boxes=boxes,
        labels=torch.tensor([[2, 0], [1, -1]]),
        box_mask=mask,
        ignore_boxes=torch.zeros(2, 0, 4),
        ignore_mask=torch.zeros(2, 0, dtype=torch.bool),
        metas=metas,
    )


def _feats():
    gen = torch.Generator().manual_seed(3)
    return [torch.randn(2, 32, SIZE // s, SIZE // s, generator=gen) for s in STRIDES]


def test_positives_are_the_assigners_and_invalid_anchors_take_no_part():
    head, batch, feats = _head(), _batch(), _feats()
    outputs = head(feats)
    anchors = head.anchors(outputs.cls_scores)
    sizes = [tuple(m.shape[-2:]) for m in outputs.cls_scores]
    targets = head.targets(anchors, sizes, batch)
    # Anchors of image 1 on cells beyond its 224 x 192 padded extent are invalid.
    flat = torch.cat(anchors)
    counts = tuple(a.shape[0] for a in anchors)
    ys = torch.cat([torch.arange(h).repeat_interleave(w) for h, w in sizes])
    xs = torch.cat([torch.arange(w).repeat(h) for h, w in sizes])
    stride = torch.cat([torch.full((h * w,), s) for (h, w), s in zip(sizes, STRIDES)])
    valid1 = (ys < torch.ceil(224 / stride)) & (xs < torch.ceil(192 / stride))
    assert not bool(valid1.all())
    assert bool((targets.label_weights[1][~valid1] == 0).all())
    assert bool((targets.label_weights[0] == 1).all())
    # Image 0 assigned alone by the assigner: the same positives, labelled with the gt's class.
    alone = assign_atss(
        ATSSAssignerConfig(topk=9),
        AssignInput(
            flat[None],
            torch.ones(1, flat.shape[0], dtype=torch.bool),
            counts,
            batch.boxes[:1],
            batch.box_mask[:1],
            torch.zeros(1, 0, 4),
            torch.zeros(1, 0, dtype=torch.bool),
        ),
    ).assigned[0]
    assert torch.equal(targets.positive[0], alone > 0)
    assert int((alone == 1).sum()) >= 3 and int((alone == 2).sum()) >= 3
    assert bool((targets.labels[0][alone == 1] == 2).all())
    assert bool((targets.labels[0][alone == 2] == 0).all())
    assert bool((targets.labels[0][alone == 0] == NUM_CLASSES).all())
    # Every positive's anchor centre lies inside its gt.
    centres = (flat[:, :2] + flat[:, 2:]) / 2
    gt = targets.gt_boxes[0][targets.positive[0]]
    c = centres[targets.positive[0]]
    assert bool(((c > gt[:, :2]) & (c < gt[:, 2:])).all())


def test_losses_match_a_hand_written_reference():
    head, batch, feats = _head(), _batch(), _feats()
    losses = head.loss(feats, batch)
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())

    outputs = head(feats)
    anchors = head.anchors(outputs.cls_scores)
    sizes = [tuple(m.shape[-2:]) for m in outputs.cls_scores]
    t = head.targets(anchors, sizes, batch)
    flat = torch.cat(anchors)
    logits = torch.cat([o.permute(0, 2, 3, 1).reshape(2, -1, NUM_CLASSES) for o in outputs[0]], 1)
    deltas = torch.cat([o.permute(0, 2, 3, 1).reshape(2, -1, 4) for o in outputs[1]], 1)
    ctr = torch.cat([o.permute(0, 2, 3, 1).reshape(2, -1) for o in outputs[2]], 1)
    num_pos = [int(p.sum()) for p in t.positive]
    samples = float(sum(max(n, 1) for n in num_pos))
    onehot = F.one_hot(t.labels, NUM_CLASSES + 1)[..., :NUM_CLASSES].float()
    focal = sigmoid_focal_loss(logits, onehot, reduction="none").sum(-1)
    loss_cls = (focal * t.label_weights).sum() / samples

    pos = t.positive
    a = flat.expand(2, -1, -1)[pos]
    g = t.gt_boxes[pos]
    cx, cy = (a[:, 0] + a[:, 2]) / 2, (a[:, 1] + a[:, 3]) / 2
    lr = torch.stack((cx - g[:, 0], g[:, 2] - cx), 1)
    tb = torch.stack((cy - g[:, 1], g[:, 3] - cy), 1)
    centerness = torch.sqrt(
        lr.min(1).values / lr.max(1).values * tb.min(1).values / tb.max(1).values
    )
    d = deltas[pos] * torch.tensor([0.1, 0.1, 0.2, 0.2])
    w, h = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    px, py = cx + d[:, 0] * w, cy + d[:, 1] * h
    pw, ph = w * d[:, 2].exp(), h * d[:, 3].exp()
    pred = torch.stack((px - pw / 2, py - ph / 2, px + pw / 2, py + ph / 2), 1)
    loss_bbox = (
        2.0 * ((1 - aligned_giou(pred, g)) * centerness).sum() / centerness.sum().clamp(min=1)
    )
    loss_ctr = F.binary_cross_entropy_with_logits(ctr[pos], centerness, reduction="sum") / samples

    torch.testing.assert_close(losses["loss_cls"], loss_cls, rtol=1e-5, atol=0)
    torch.testing.assert_close(losses["loss_bbox"], loss_bbox, rtol=1e-5, atol=0)
    torch.testing.assert_close(losses["loss_centerness"], loss_ctr, rtol=1e-5, atol=0)
    total = sum(losses.values())
    total.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())


def test_no_gt_gives_zero_box_losses_with_gradient():
    head, batch, feats = _head(), _batch(), _feats()
    empty = Batch(
        images=batch.images,
        boxes=torch.zeros(2, 0, 4),
        labels=torch.zeros(2, 0, dtype=torch.long),
        box_mask=torch.zeros(2, 0, dtype=torch.bool),
        ignore_boxes=batch.ignore_boxes,
        ignore_mask=batch.ignore_mask,
        metas=batch.metas,
    )
    losses = head.loss(feats, empty)
    assert float(losses["loss_bbox"].detach()) == 0.0
    assert float(losses["loss_centerness"].detach()) == 0.0
    assert float(losses["loss_cls"].detach()) > 0
    sum(losses.values()).backward()


def test_predict_gives_clipped_padded_detections():
    head, feats = _head(), _feats()
    with torch.no_grad():
        head.atss_cls.bias.fill_(0.0)  # scores around 0.5: many candidates above 0.05
        dets = head.predict(feats, torch.tensor([[256.0, 256.0], [200.0, 180.0]]))
    assert dets.boxes.shape == (2, 100, 4)
    assert bool(dets.mask.all())
    assert bool((dets.boxes[1][:, 2] <= 180).all() and (dets.boxes[1][:, 3] <= 200).all())
    assert bool((dets.scores[:, :-1] >= dets.scores[:, 1:]).all())  # best first
    assert bool(((dets.labels >= 0) & (dets.labels < NUM_CLASSES)).all())
    anchors = torch.cat(grid_anchors(head.cfg.anchor_generator, [f.shape[-2:] for f in feats]))
    assert anchors.shape[0] == sum((SIZE // s) ** 2 for s in STRIDES)


def test_assigner_is_pluggable_through_the_registry():
    torch.manual_seed(0)
    cfg = ATSSHeadConfig(
        feat_channels=32, assigner=MaxIoUAssignerConfig(pos_iou_thr=0.5, neg_iou_thr=0.4)
    )
    head = build(cfg, in_channels=32, num_classes=NUM_CLASSES)
    batch, feats = _batch(), _feats()
    outputs = head(feats)
    anchors = head.anchors(outputs.cls_scores)
    targets = head.targets(anchors, [tuple(m.shape[-2:]) for m in outputs.cls_scores], batch)
    # MaxIoU ignores anchors with IoU in [0.4, 0.5): some label weights are 0 in image 0.
    assert bool((targets.label_weights[0] == 0).any())
    assert int(targets.positive.sum()) > 0
    assert all(torch.isfinite(v) for v in head.loss(feats, batch).values())
