"""detfn's RetinaNet against torchvision's ``retinanet_resnet50_fpn(weights=None)``.

Both get the same weights (torchvision's, renamed to detfn's) and the settings where the two
differ by default (mmdet-facts 2.7) set equal: P6 from P5 with a ReLU before P7 (mmdetection's
``on_output`` + ``relu_before_extra_convs``), detfn's unrounded octave anchors copied into
torchvision's ``cell_anchors``, trainable BatchNorm in the backbone (torchvision's choice without
pretrained weights), 100 detections per image, images whose size divides by the top stride 128
and batch size 1 for the losses (torchvision averages per image, mmdetection over the batch).
The gt boxes are apart, so the two low-quality matching rules agree. Then the whole chain must
agree: backbone, FPN, head, anchors, MaxIoU assignment, focal and L1 losses with their
normalisation, per-level top-k, decoding, class-wise NMS.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from detfn.config import override
from detfn.models.anchors import base_anchors
from detfn.models.detectors import RETINANET_R50_FPN
from detfn.models.functional import detector_loss_fn, detector_predict_fn, split
from detfn.registry import build
from detfn.structures import Batch, ImageMeta
from experiments.torchvision_weights import retinanet_to_detfn

NUM_CLASSES = 3
SIZE = 256


def detfn_config():
    return override(
        RETINANET_R50_FPN,
        {
            "num_classes": NUM_CLASSES,
            "backbone.norm_eval": False,
            "backbone.frozen_stages": -1,
            "neck.add_extra_convs": "on_output",
            "neck.relu_before_extra_convs": True,
        },
    )


def torchvision_model(cfg) -> nn.Module:
    from torchvision.models.detection import retinanet_resnet50_fpn

    model = retinanet_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=NUM_CLASSES,
        min_size=SIZE,
        max_size=SIZE,
        image_mean=[0.0, 0.0, 0.0],
        image_std=[1.0, 1.0, 1.0],
        detections_per_img=100,
    )
    model.anchor_generator.cell_anchors = base_anchors(cfg.bbox_head.anchor_generator)
    return model


@pytest.fixture(scope="module")
def models():
    """Seeded torchvision weights, class logits spread so that scores pass the 0.05 threshold."""
    torch.manual_seed(0)
    cfg = detfn_config()
    reference = torchvision_model(cfg)
    nn.init.normal_(reference.head.classification_head.cls_logits.weight, std=0.05)
    nn.init.zeros_(reference.head.classification_head.cls_logits.bias)
    model = build(cfg)
    mapped = retinanet_to_detfn(reference.state_dict())
    unmapped = set(model.state_dict()) ^ set(mapped)
    assert not unmapped, f"unmapped weights: {sorted(unmapped)}"
    model.load_state_dict(mapped)
    return reference, model


def make_batch(num_images: int) -> Batch:
    g = torch.Generator().manual_seed(1)
    boxes = torch.tensor(
        [
            [[10.0, 12.0, 70.0, 60.0], [120.0, 30.0, 200.0, 150.0], [30.0, 170.0, 90.0, 240.0]],
            [[150.0, 150.0, 250.0, 230.0], [20.0, 20.0, 60.0, 110.0], [0.0, 0.0, 0.0, 0.0]],
        ]
    )[:num_images]
    labels = torch.tensor([[0, 2, 1], [1, 0, -1]])[:num_images]
    shape = (SIZE, SIZE)
    return Batch(
        images=torch.randn(num_images, 3, SIZE, SIZE, generator=g),
        boxes=boxes,
        labels=labels,
        box_mask=labels >= 0,
        ignore_boxes=torch.zeros(num_images, 0, 4),
        ignore_mask=torch.zeros(num_images, 0, dtype=torch.bool),
        metas=tuple(ImageMeta(f"{i}.jpg", i, shape, shape, shape) for i in range(num_images)),
    )


def torchvision_inputs(batch: Batch):
    images = list(batch.images)
    targets = [
        {"boxes": batch.boxes[i][batch.box_mask[i]], "labels": batch.labels[i][batch.box_mask[i]]}
        for i in range(len(batch))
    ]
    return images, targets


def test_training_losses_equal_torchvision(models):
    reference, model = models
    reference.train()
    batch = make_batch(1)
    _, losses = detector_loss_fn(model)(*split(model), batch)
    with torch.no_grad():
        expected = reference(*torchvision_inputs(batch))
    for ours, theirs in (("loss_cls", "classification"), ("loss_bbox", "bbox_regression")):
        assert expected[theirs] > 0, theirs
        torch.testing.assert_close(losses[ours], expected[theirs], rtol=1e-4, atol=1e-6)


@torch.no_grad()
def test_detections_equal_torchvision(models):
    reference, model = models
    reference.eval()
    batch = make_batch(2)
    ours = detector_predict_fn(model)(*split(model), batch.images, batch.metas)
    theirs = reference(torchvision_inputs(batch)[0])
    for mine, ref in zip(ours, theirs):
        assert len(mine.scores) == len(ref["scores"]) == 100
        torch.testing.assert_close(mine.scores, ref["scores"], atol=1e-5, rtol=1e-4)
        for run in tied_runs(ref["scores"], atol=1e-5, rtol=1e-4):
            ours_run = by_label_and_box(mine.labels[run], mine.boxes[run])
            theirs_run = by_label_and_box(ref["labels"][run], ref["boxes"][run])
            torch.testing.assert_close(ours_run[0], theirs_run[0])
            torch.testing.assert_close(ours_run[1], theirs_run[1], atol=1e-3, rtol=1e-4)


def tied_runs(scores: torch.Tensor, atol: float, rtol: float) -> list[slice]:
    """Runs of consecutive (descending) scores closer than the score tolerance: within one, the
    order of the detections is round-off (random weights give many near-equal scores), so the
    comparison below takes each run as a set."""
    runs, start = [], 0
    for i in range(1, len(scores) + 1):
        if i == len(scores) or scores[i - 1] - scores[i] > atol + rtol * abs(scores[i]):
            runs.append(slice(start, i))
            start = i
    return runs


def by_label_and_box(
    labels: torch.Tensor, boxes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The detections of a run in a canonical order: by label, then by the box's corners."""
    order = sorted(range(len(labels)), key=lambda i: (int(labels[i]), *boxes[i].tolist()))
    return labels[order], boxes[order]
