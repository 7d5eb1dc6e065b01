"""detfn's Faster R-CNN inference against torchvision's ``FasterRCNN`` as an independent reference.

Both models get the same weights (torchvision's, mapped to detfn's names) and the same settings
where the two libraries differ by default: RoIAlign without the half-pixel shift (torchvision has
no ``aligned``), 2x2 samples per bin, and anchor shapes whose corners are whole pixels (torchvision
rounds its base anchors, mmdetection does not). The whole chain must then agree on real images:
backbone, FPN, RPN proposals (per-level top-k, NMS across levels), RoI level mapping, RoIAlign,
box head, decoding, per-class NMS and the top 100. In training, with samplers that keep every
candidate (so that no random draw differs), the four losses and the gradients must agree: anchor
and proposal assignment, box targets, loss normalization, and every backward pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from detfn.apis import bccd_cpu_preset
from detfn.config import override
from detfn.data import build_loader, default_test_pipeline
from detfn.models.functional import detector_loss_fn, detector_predict_fn, split
from detfn.registry import build
from experiments import compare_torchvision
from experiments.compare_torchvision import images_and_targets
from experiments.torchvision_weights import INTEGER_CORNER_RATIOS, torchvision_to_detfn

TINY = Path(__file__).resolve().parents[1] / "assets" / "tiny" / "bccd8"
NUM_CLASSES = 3
# ratio h/w 1/4, 1, 4 at scale 4: base anchors 32x8, 16x16, 8x32 on stride 4, all corners integer
RATIOS = INTEGER_CORNER_RATIOS
SIZE = (240, 320)  # (height, width) of the test batches: torchvision's transform keeps it


def detfn_model_config():
    return override(
        bccd_cpu_preset().model,
        {
            "rpn_head.anchor_generator.ratios": RATIOS,
            "roi_head.bbox_roi_extractor.aligned": False,
        },
    )


def torchvision_model() -> nn.Module:
    return compare_torchvision.torchvision_model(NUM_CLASSES, ratios=RATIOS, image_size=SIZE)


@pytest.fixture(scope="module")
def reference_state() -> dict[str, Tensor]:
    """Seeded torchvision weights, objectness logits spread so that the proposal ranking does not
    hinge on round-off."""
    torch.manual_seed(0)
    reference = torchvision_model()
    nn.init.normal_(reference.rpn.head.cls_logits.weight, std=0.5)
    return reference.state_dict()


def models_with(state: dict[str, Tensor], detfn_cfg) -> tuple[nn.Module, nn.Module]:
    reference = torchvision_model()
    reference.load_state_dict(state)
    model = build(detfn_cfg)
    mapped = torchvision_to_detfn(state)
    unmapped = set(model.state_dict()) ^ set(mapped)
    assert not unmapped, f"unmapped weights: {sorted(unmapped)}"
    model.load_state_dict(mapped)
    return reference, model


def tiny_batches():
    cfg = bccd_cpu_preset().data
    dataset = build(
        override(
            cfg.val,
            {
                "ann_file": str(TINY / "instances.json"),
                "img_prefix": str(TINY / "JPEGImages"),
                "pipeline": default_test_pipeline(scale=SIZE[::-1]),
            },
        ),
        seed=0,
    )
    loader_cfg = override(cfg.test_loader, {"batch_size": 2, "num_workers": 0})
    return list(build_loader(dataset, loader_cfg))[:2]


@torch.no_grad()
def test_detections_equal_torchvision_with_the_same_weights(reference_state):
    reference, model = models_with(reference_state, detfn_model_config())
    reference.eval()
    predict = detector_predict_fn(model)
    params, buffers = split(model)
    compared = 0
    for batch in tiny_batches():
        ours = predict(params, buffers, batch.images, batch.metas)
        theirs = reference(images_and_targets(batch)[0])
        for mine, ref, meta in zip(ours, theirs, batch.metas):
            scale = torch.tensor(meta.scale_factor)
            assert len(mine.scores) == len(ref["scores"]) > 0
            torch.testing.assert_close(mine.scores, ref["scores"], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(mine.labels, ref["labels"] - 1)
            torch.testing.assert_close(mine.boxes, ref["boxes"] / scale, atol=1e-2, rtol=1e-4)
            compared += len(mine.scores)
    assert compared >= 100


def sample_everything(cfg):
    """Samplers whose budget exceeds every candidate: both libraries then keep all positives and
    negatives, so the losses no longer depend on random draws."""
    return override(cfg, {"rpn_head.sampler.num": 10**6, "roi_head.sampler.num": 10**6})


def test_training_losses_and_gradients_equal_torchvision(reference_state):
    reference, model = models_with(reference_state, sample_everything(detfn_model_config()))
    reference.rpn.fg_bg_sampler.batch_size_per_image = 10**6
    reference.roi_heads.fg_bg_sampler.batch_size_per_image = 10**6
    reference.train()
    params, buffers = split(model)
    params = {k: v.detach().requires_grad_() for k, v in params.items()}
    batch = tiny_batches()[0]
    assert not batch.ignore_mask.any()

    total, losses = detector_loss_fn(model)(params, buffers, batch)
    expected = reference(*images_and_targets(batch))

    pairs = {
        "loss_rpn_cls": "loss_objectness",
        "loss_rpn_bbox": "loss_rpn_box_reg",
        "loss_cls": "loss_classifier",
        "loss_bbox": "loss_box_reg",
    }
    for ours, theirs in pairs.items():
        assert expected[theirs] > 0, theirs
        torch.testing.assert_close(losses[ours], expected[theirs], rtol=1e-4, atol=1e-6)
    # conv1 gathers the gradient of every path, RoIAlign's backward included
    names = (
        "backbone.conv1.weight",
        "neck.lateral_convs.0.weight",
        "rpn_head.rpn_conv.weight",
        "roi_head.bbox_head.shared_fcs.0.weight",
    )
    grads = torch.autograd.grad(total, [params[n] for n in names])
    reference_params = dict(reference.named_parameters())
    reference_names = (
        "backbone.body.conv1.weight",
        "backbone.fpn.inner_blocks.0.0.weight",
        "rpn.head.conv.0.0.weight",
        "roi_heads.box_head.fc6.weight",
    )
    expected_grads = torch.autograd.grad(
        sum(expected.values()), [reference_params[n] for n in reference_names]
    )
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-3, atol=1e-6)
