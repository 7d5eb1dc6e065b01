"""detfn's FCOSHead equals torchvision's FCOS head, losses and post-processing, with the same
weights and torchvision's settings (mmdet-facts.md section 2.7):

* points at ``(x * s, y * s)``: ``PointGeneratorConfig(offset=0.0)``;
* tower convs with bias, ReLU distances in stride units, centerness on the regression tower,
  center sampling with radius 1.5: ``conv_bias=True``, ``norm_on_bbox=True`` (the per-level
  Scale stays at its initial 1.0, torchvision has none), ``centerness_on_reg=True``,
  ``center_sampling=True``;
* regress ranges (0, 64), ..., (512, inf): torchvision's bounds are strict, detfn's inclusive,
  which differs only for a point exactly on a bound (random boxes never are);
* GIoU loss (torchvision's eps 1e-7), not weighted by centerness, divided by the number of
  positives: ``loss_bbox=GIoULossConfig(eps=1e-7)``, ``centerness_weighted=False``;
* scores ``sqrt(sigmoid(cls) * sigmoid(ctr))`` thresholded at 0.2, NMS 0.6:
  ``CenternessTestConfig(score_thr=0.2, iou_threshold=0.6, score_mode="geometric_mean")``.

Head level only: both heads read the same random FPN maps of a 256 x 256 input, whose size
divides by the top stride so that torchvision's integer-division strides are the nominal ones.
"""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection import fcos_resnet50_fpn
from torchvision.models.detection.image_list import ImageList

from detfn.models.dense_heads.fcos_head import build_fcos_head, torchvision_fcos_head
from detfn.structures import Batch, ImageMeta
from experiments.torchvision_weights import fcos_head_to_detfn

NUM_CLASSES = 4
SIZE = 256
CHANNELS = 256
STRIDES = (8, 16, 32, 64, 128)

TORCHVISION_SETTINGS = torchvision_fcos_head()


@pytest.fixture(scope="module")
def heads():
    torch.manual_seed(0)
    tv = fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=NUM_CLASSES).eval()
    with torch.no_grad():  # non-trivial weights: random, larger than the 0.01 init
        for param in tv.head.parameters():
            param.normal_(0.0, 0.05)
    ours = build_fcos_head(TORCHVISION_SETTINGS, in_channels=CHANNELS, num_classes=NUM_CLASSES)
    missing = ours.load_state_dict(fcos_head_to_detfn(tv.head.state_dict()), strict=False)
    assert missing.unexpected_keys == []
    assert missing.missing_keys == [f"scales.{i}.scale" for i in range(len(STRIDES))]
    return tv, ours.eval()


def _inputs(batch_size: int = 2):
    gen = torch.Generator().manual_seed(1)
    feats = [
        torch.randn(batch_size, CHANNELS, SIZE // s, SIZE // s, generator=gen) for s in STRIDES
    ]
    # Random boxes of many sizes, so several levels get positives; image 1 has fewer (padding).
    centres = torch.rand(batch_size, 6, 2, generator=gen) * 200 + 28
    sides = torch.rand(batch_size, 6, 2, generator=gen) * 230 + 8
    # Clamped half a pixel inside: a side on the image border would put points of the last
    # column exactly on a regress-range bound (256 - 192 = 64), where the two differ by design.
    boxes = torch.cat((centres - sides / 2, centres + sides / 2), -1).clamp(0.5, SIZE - 0.5)
    labels = torch.randint(0, NUM_CLASSES, (batch_size, 6), generator=gen)
    mask = torch.ones(batch_size, 6, dtype=torch.bool)
    mask[1, 4:] = False
    boxes, labels = boxes * mask[..., None], torch.where(mask, labels, -1)
    meta = ImageMeta("x.jpg", 0, (SIZE, SIZE), (SIZE, SIZE), (SIZE, SIZE))
    batch = Batch(
        images=torch.zeros(batch_size, 3, SIZE, SIZE),
        boxes=boxes,
        labels=labels,
        box_mask=mask,
        ignore_boxes=torch.zeros(batch_size, 0, 4),
        ignore_mask=torch.zeros(batch_size, 0, dtype=torch.bool),
        metas=(meta,) * batch_size,
    )
    return feats, batch


def _tv_anchors(tv, feats, batch_size):
    images = ImageList(torch.zeros(batch_size, 3, SIZE, SIZE), [(SIZE, SIZE)] * batch_size)
    return tv.anchor_generator(images, feats)


def _tv_targets(batch):
    return [
        {"boxes": batch.boxes[i][batch.box_mask[i]], "labels": batch.labels[i][batch.box_mask[i]]}
        for i in range(len(batch))
    ]


def test_losses_and_gradients_equal_torchvision(heads):
    tv, ours = heads
    feats, batch = _inputs()
    anchors, targets = _tv_anchors(tv, feats, 2), _tv_targets(batch)
    tv.zero_grad()
    ours.zero_grad()
    expected = tv.compute_loss(targets, tv.head(feats), anchors, [f[0, 0].numel() for f in feats])
    outputs = ours(feats)
    got = ours.loss_of_outputs(outputs, batch)
    _, fcos_targets = ours.targets(outputs, batch)
    num_pos = int((fcos_targets.assigned > 0).sum())
    assert num_pos > 20  # a meaningful comparison: positives on several levels
    levels = (fcos_targets.assigned > 0).split([f[0, 0].numel() for f in feats], dim=1)
    assert sum(bool(level.any()) for level in levels) >= 3
    for ours_key, tv_key in (
        ("loss_cls", "classification"),
        ("loss_bbox", "bbox_regression"),
        ("loss_centerness", "bbox_ctrness"),
    ):
        torch.testing.assert_close(got[ours_key], expected[tv_key], rtol=1e-4, atol=0.0)

    sum(expected.values()).backward()
    sum(got.values()).backward()
    tv_grads = fcos_head_to_detfn({n: p.grad for n, p in tv.head.named_parameters()})
    for name, param in ours.named_parameters():
        if name.startswith("scales."):
            continue
        torch.testing.assert_close(param.grad, tv_grads[name], rtol=1e-3, atol=1e-7)


def test_detections_equal_torchvision(heads):
    tv, ours = heads
    feats, _ = _inputs()
    sizes = [f[0, 0].numel() for f in feats]
    with torch.no_grad():
        outputs = tv.head(feats)
        split = {k: list(v.split(sizes, dim=1)) for k, v in outputs.items()}
        anchors = [list(a.split(sizes)) for a in _tv_anchors(tv, feats, 2)]
        expected = tv.postprocess_detections(split, anchors, [(SIZE, SIZE)] * 2)
        dets = ours.predict(feats, torch.tensor([[SIZE, SIZE]] * 2, dtype=torch.float32))
    for i, exp in enumerate(expected):
        keep = dets.mask[i]
        assert 5 < int(keep.sum()) <= 100
        assert int(keep.sum()) == exp["boxes"].shape[0]
        torch.testing.assert_close(dets.boxes[i][keep], exp["boxes"], rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(dets.scores[i][keep], exp["scores"], rtol=1e-5, atol=1e-6)
        assert torch.equal(dets.labels[i][keep], exp["labels"])
