"""detfn's Mask R-CNN against torchvision's ``maskrcnn_resnet50_fpn(weights=None)``.

Both get the same weights (torchvision's, renamed by the Faster R-CNN test's mapping plus the
mask head: four 3x3 convs, the 2x2 deconv, and the logits without torchvision's background
channel) and the same settings where the libraries differ by default (mmdet-facts.md 2.7):
RoIAlign without the half-pixel shift and 2x2 samples per bin in both extractors, whole-pixel
anchor corners, Smooth L1 (beta 1/9), no low-quality R-CNN matches, trainable BatchNorm, and the
mask branch's ``torchvision`` conventions (soft 28x28 targets from unclipped RoIs; torchvision's
paste). On bundled nuclei images at half size, with samplers that keep every candidate, the mask
loss must agree, and at test time, given the same detections, the pasted masks must equal
torchvision's probabilities thresholded at 0.5 (its reference evaluator's rule).
"""

from __future__ import annotations

import pytest
import torch
from test_faster_rcnn_vs_torchvision import RATIOS, torchvision_to_detfn
from torch import Tensor, nn

from detfn.config import override
from detfn.data import build_loader, collate, default_test_pipeline, nuclei_dataset_config
from detfn.models.detectors import MASK_RCNN_R50_FPN
from detfn.models.functional import detector_loss_fn, detector_predict_fn, split
from detfn.models.losses import SmoothL1LossConfig
from detfn.registry import build
from experiments.compare_torchvision import images_and_targets

SCALE = (160, 128)  # the 256x256 and 320x256 nuclei at half size: min side 128, max 160
EVERYTHING = 10**6


def detfn_config(sample_everything: bool = False):
    updates = {
        "num_classes": 1,
        "class_names": ("nucleus",),
        "backbone.norm_eval": False,
        "backbone.frozen_stages": -1,
        "rpn_head.anchor_generator.ratios": RATIOS,
        "rpn_head.loss_bbox": SmoothL1LossConfig(beta=1 / 9),
        "roi_head.bbox_head.loss_bbox": SmoothL1LossConfig(beta=1 / 9),
        "roi_head.assigner.match_low_quality": False,
        "roi_head.bbox_roi_extractor.aligned": False,
        "roi_head.bbox_roi_extractor.sampling_ratio": 2,
        "roi_head.mask_branch.roi_extractor.aligned": False,
        "roi_head.mask_branch.roi_extractor.sampling_ratio": 2,
        "roi_head.mask_branch.conventions": "torchvision",
    }
    if sample_everything:
        updates.update({"rpn_head.sampler.num": EVERYTHING, "roi_head.sampler.num": EVERYTHING})
    return override(MASK_RCNN_R50_FPN, updates)


def torchvision_reference() -> nn.Module:
    from torchvision.models.detection import maskrcnn_resnet50_fpn
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    sizes = ((32,), (64,), (128,), (256,), (512,))
    return maskrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=2,
        # detfn's pipeline resizes and normalizes: torchvision's transform is an identity here
        min_size=SCALE[1],
        max_size=SCALE[0],
        image_mean=[0.0, 0.0, 0.0],
        image_std=[1.0, 1.0, 1.0],
        rpn_anchor_generator=AnchorGenerator(sizes, (RATIOS,) * 5),
        rpn_post_nms_top_n_train=1000,  # mmdet's train max_per_img (torchvision: 2000)
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2),
        mask_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2),
    )


def torchvision_to_detfn_mask(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The Faster R-CNN mapping plus the mask head; the background mask channel is dropped."""
    mask_keys = {k for k in state if ".mask_" in k}
    out = torchvision_to_detfn({k: v for k, v in state.items() if k not in mask_keys})
    prefix = "roi_head.mask_branch.mask_head."
    for key in mask_keys:
        value = state[key]
        leaf = key.rsplit(".", 1)[1]
        if ".mask_head." in key:
            name = f"{prefix}convs.{key.split('.')[2]}.{leaf}"
        elif "conv5_mask" in key:
            name = f"{prefix}upsample.{leaf}"
        else:
            name, value = f"{prefix}conv_logits.{leaf}", value[1:]
        out[name] = value
    return out


@pytest.fixture(scope="module")
def reference_state() -> dict[str, Tensor]:
    """Seeded torchvision weights; objectness and mask logits spread so that rankings and the
    0.5 threshold do not hinge on round-off."""
    torch.manual_seed(0)
    reference = torchvision_reference()
    nn.init.normal_(reference.rpn.head.cls_logits.weight, std=0.5)
    nn.init.normal_(reference.roi_heads.mask_predictor.mask_fcn_logits.weight, std=0.05)
    return reference.state_dict()


def models_with(state, cfg):
    reference = torchvision_reference()
    reference.load_state_dict(state)
    model = build(cfg)
    mapped = torchvision_to_detfn_mask(state)
    unmapped = set(model.state_dict()) ^ set(mapped)
    assert not unmapped, f"unmapped weights: {sorted(unmapped)}"
    model.load_state_dict(mapped)
    return reference, model


def nuclei_batch(indices=(0, 50)):
    dataset = build(nuclei_dataset_config("val", pipeline=default_test_pipeline(SCALE)))
    return collate([dataset.get(i) for i in indices]) if indices else dataset


def with_masks(batch):
    images, targets = images_and_targets(batch)
    for target, masks in zip(targets, batch.masks):
        target["masks"] = masks.to(torch.uint8)
    return images, targets


def test_mask_loss_equals_torchvision(reference_state):
    reference, model = models_with(reference_state, detfn_config(sample_everything=True))
    reference.rpn.fg_bg_sampler.batch_size_per_image = EVERYTHING
    reference.roi_heads.fg_bg_sampler.batch_size_per_image = EVERYTHING
    reference.train()
    batch = nuclei_batch((0, 12))
    params, buffers = split(model)
    _, losses = detector_loss_fn(model)(params, buffers, batch)
    expected = reference(*with_masks(batch))
    assert expected["loss_mask"] > 0
    torch.testing.assert_close(losses["loss_mask"], expected["loss_mask"], rtol=1e-4, atol=1e-6)


@torch.no_grad()
def test_pasted_masks_equal_torchvision(reference_state):
    """Given detfn's final detections, torchvision's mask path (MultiScaleRoIAlign 14, mask head,
    predictor, ``maskrcnn_inference``, ``paste_masks_in_image`` into the original image) gives
    the same masks as detfn's, thresholded at 0.5."""
    from torchvision.models.detection.roi_heads import maskrcnn_inference, paste_masks_in_image

    reference, model = models_with(reference_state, detfn_config())
    reference.eval()
    predict = detector_predict_fn(model)
    params, buffers = split(model)
    loader = build_loader(nuclei_batch(()), override(_loader(), {"batch_size": 2}))
    batch = next(iter(loader))
    ours = predict(params, buffers, batch.images, batch.metas)
    image_list, _ = reference.transform(with_masks(batch)[0])
    feats = reference.backbone(image_list.tensors)
    heads = reference.roi_heads
    resized = [d.boxes * torch.tensor(m.scale_factor) for d, m in zip(ours, batch.metas)]
    pooled = heads.mask_roi_pool(feats, resized, image_list.image_sizes)  # network's frame
    logits = heads.mask_predictor(heads.mask_head(pooled))
    probs = maskrcnn_inference(logits, [d.labels + 1 for d in ours])
    compared = 0
    for mine, meta, prob in zip(ours, batch.metas, probs):
        expected = paste_masks_in_image(prob, mine.boxes, meta.ori_shape)[:, 0] > 0.5
        assert mine.masks.shape == expected.shape and expected.any()
        assert torch.equal(mine.masks, expected)
        compared += len(mine.scores)
    assert compared >= 100


def _loader():
    from detfn.apis.experiment import eval_loader

    return override(eval_loader(), {"num_workers": 0})
