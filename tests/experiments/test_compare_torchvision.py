"""experiments.compare_torchvision's FCOS twin: built as the bccd preset except where listed.

With torchvision's weights copied in, detfn's FCOS built from ``fcos_bccd_preset`` with only
``FCOS_DIFFERENCES`` changed (plus tower conv biases, which the twin holds at zero) gives the
twin's losses and detections on real BCCD images at the preset's 320 x 240: so the twin's
backbone, FPN levels, points (nominal strides, offset 0.5), assignment without center sampling,
test threshold, top-k, NMS and detections per image are the preset's, and the listed points are
the only differences. A smoke run of ``--model fcos`` checks the command end to end.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import pytest
import torch

from detfn.apis import fcos_bccd_preset
from detfn.config import override
from detfn.data import build_loader
from detfn.models.functional import detector_loss_fn, detector_predict_fn, split
from detfn.registry import build
from experiments.compare_torchvision import (
    CompareArgs,
    images_and_targets,
    main,
    sgd_like,
    with_data_root,
)
from experiments.torchvision_models import (
    FCOS_DIFFERENCES,
    torchvision_fcos_bccd,
    twin_box_sides,
    twin_distance_scale,
)
from experiments.torchvision_weights import fcos_to_detfn, load_torchvision_weights

TINY = Path(__file__).resolve().parents[1] / "assets" / "tiny" / "bccd8"
LOSS_NAMES = {
    "loss_cls": "classification",
    "loss_bbox": "bbox_regression",
    "loss_centerness": "bbox_ctrness",
}


@pytest.fixture(scope="module")
def preset():
    return with_data_root(fcos_bccd_preset(), TINY)


@pytest.fixture(scope="module")
def pair(preset):
    """(detfn, twin) with the twin's weights; output convs redrawn with std 0.05 so that scores
    spread and no top-k or NMS decision hinges on round-off between near-equal scores."""
    torch.manual_seed(0)
    twin = torchvision_fcos_bccd(preset)
    head = twin.head
    with torch.no_grad():
        for conv in (
            head.classification_head.cls_logits,
            head.regression_head.bbox_reg,
            head.regression_head.bbox_ctrness,
        ):
            conv.weight.normal_(0.0, 0.05)
    # the twin's tower convs have (zero, frozen) biases: detfn's get them too
    cfg = override(preset.model, {**FCOS_DIFFERENCES, "bbox_head.conv_bias": True})
    model = build(cfg)
    scale = twin_distance_scale(preset.model)  # the twin regresses in half strides
    load_torchvision_weights(model, twin, partial(fcos_to_detfn, scale=scale))
    return model, twin


def _batch(preset):
    dataset = build(preset.data.val)
    loader_cfg = override(preset.data.test_loader, {"batch_size": 2, "num_workers": 0})
    return next(iter(build_loader(dataset, loader_cfg)))


def test_twin_keeps_the_preset_recipe(preset):
    twin = torchvision_fcos_bccd(preset)
    test_cfg = preset.model.bbox_head.test_cfg
    assert (twin.score_thresh, twin.nms_thresh) == (test_cfg.score_thr, test_cfg.iou_threshold)
    assert (twin.topk_candidates, twin.detections_per_img) == (1000, 100)
    # the preset's ranges (-1, 32) ... (256, inf) are torchvision's (4 a, 8 a) with a = s / 2,
    # so the preset's radius of 1.5 strides is 3 box sides
    assert twin_box_sides(preset.model.bbox_head) == (4.0, 8.0, 16.0, 32.0, 64.0)
    assert twin.center_sampling_radius == 3.0
    assert twin.transform.min_size == (240,) and twin.transform.max_size == 320
    towers = [twin.head.classification_head.conv, twin.head.regression_head.conv]
    assert sum(isinstance(m, torch.nn.Conv2d) for m in towers[0]) == 4
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in towers[0]) == 4
    # mmcv's multipliers: conv biases 2x lr without decay, norms and weights 1x with decay
    groups = {
        (g["lr"], g["weight_decay"]): g["params"]
        for g in sgd_like(twin, preset.runner.optimizer).param_groups
    }
    assert set(groups) == {(0.01, 1e-4), (0.02, 0.0)}
    named = {id(p): n for n, p in twin.named_parameters()}
    biases = [named[id(p)] for p in groups[(0.02, 0.0)]]
    assert "backbone.fpn.extra_blocks.p6.bias" in biases
    assert "head.classification_head.cls_logits.bias" in biases
    assert all(n.endswith(".bias") and ".bn" not in n for n in biases)
    assert "head.classification_head.conv.0.bias" in biases  # the preset's conv_bias=True
    decayed = [named[id(p)] for p in groups[(0.01, 1e-4)]]
    assert "backbone.body.bn1.bias" in decayed and "head.regression_head.conv.1.bias" in decayed


def test_twin_computes_the_preset_but_for_the_listed_differences(preset, pair):
    model, twin = pair
    batch = _batch(preset)
    images, targets = images_and_targets(batch, label_offset=0)
    model.eval()
    twin.eval()
    with torch.no_grad():
        ours = detector_predict_fn(model)(*split(model), batch.images, batch.metas)
        theirs = twin(images)
    compared = 0
    for mine, ref, meta in zip(ours, theirs, batch.metas):
        scale = torch.tensor(meta.scale_factor)
        assert len(mine.scores) == len(ref["scores"]) > 10
        torch.testing.assert_close(mine.scores, ref["scores"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(mine.labels, ref["labels"])
        torch.testing.assert_close(mine.boxes, ref["boxes"] / scale, rtol=1e-4, atol=1e-3)
        compared += len(mine.scores)
    assert compared > 50

    model.train()
    twin.train()
    _, losses = detector_loss_fn(model)(*split(model), batch)
    with torch.no_grad():
        expected = twin(images, targets)
    for ours_key, theirs_key in LOSS_NAMES.items():
        assert expected[theirs_key] > 0, theirs_key
        torch.testing.assert_close(losses[ours_key], expected[theirs_key], rtol=1e-4, atol=1e-6)


def test_compare_fcos_runs_end_to_end(capsys):
    args = CompareArgs(model="fcos", epochs=1, log_interval=1, max_iters=2, data_root=TINY)
    metrics = main(args)
    printed = capsys.readouterr().out
    assert "epoch 1 iter 2 loss " in printed and "iter 3 " not in printed
    losses = [float(line.split()[5]) for line in printed.splitlines() if " loss " in line]
    assert len(losses) == 2 and all(math.isfinite(v) and v > 0 for v in losses)
    assert "torchvision bbox_mAP_copypaste: " in printed
    assert 0.0 <= metrics["bbox_mAP"] <= 1.0
