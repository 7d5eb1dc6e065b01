"""MaskBranch: the loss is targets + head + BCE composed; predict maps masks to original images."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from detfn.models.roi_heads import (
    FCNMaskHeadConfig,
    MaskBranch,
    MaskBranchConfig,
    SingleRoIExtractorConfig,
    mask_loss,
    mask_targets,
    masks_for_detections,
    paste_masks,
)
from detfn.registry import build
from detfn.structures import Detections, ImageMeta

SMALL = MaskBranchConfig(
    roi_extractor=SingleRoIExtractorConfig(output_size=14),
    mask_head=FCNMaskHeadConfig(num_convs=2, conv_out_channels=16),
)


def _feats(seed=0, batch=2, size=64):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, 8, size // s, size // s, generator=g) for s in (4, 8, 16, 32))


def _gt():
    masks0 = torch.zeros((2, 60, 64), dtype=torch.bool)
    masks0[0, 10:30, 5:25] = True
    masks0[1, 35:55, 30:60] = True
    masks1 = torch.zeros((1, 48, 64), dtype=torch.bool)
    masks1[0, 4:40, 8:50] = True
    return (masks0, masks1)


def test_branch_builds_with_detector_context_and_mmdet_defaults():
    branch = build(MaskBranchConfig(), num_classes=80, in_channels=256)
    assert isinstance(branch, MaskBranch)
    assert branch.roi_extractor.cfg.output_size == 14 and branch.cfg.mask_thr_binary == 0.5
    assert branch.mask_head.conv_logits.out_channels == 80
    assert branch.mask_head.convs[0].in_channels == 256
    with pytest.raises(ValueError, match="num_classes"):
        build(MaskBranchConfig(), in_channels=256)
    with pytest.raises(ValueError, match="mask_thr_binary"):
        MaskBranchConfig(mask_thr_binary=1.5)


def test_loss_is_the_composition_of_targets_head_and_bce():
    torch.manual_seed(0)
    branch = build(SMALL, num_classes=3, in_channels=8)
    feats = _feats()
    rois = torch.tensor([[0, 4, 8, 27, 31.0], [0, 28, 33, 62, 58], [1, 6, 2, 52, 42]])
    gt_index, labels = torch.tensor([0, 1, 0]), torch.tensor([2, 0, 1])
    shapes = torch.tensor([[64.0, 64.0], [64.0, 64.0]])
    loss = branch.loss(feats, rois, gt_index, labels, _gt(), shapes)["loss_mask"]
    logits = branch.mask_head(branch.roi_extractor(feats, rois))
    expected = mask_loss(logits, mask_targets(_gt(), rois, gt_index, 28, shapes), labels)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in branch.parameters())
    # no positives: a zero loss that still reaches every parameter
    empty = branch.loss(feats, rois[:0], gt_index[:0], labels[:0], _gt(), shapes)["loss_mask"]
    assert empty.item() == 0 and empty.requires_grad


def test_predict_pastes_into_each_original_image_and_unflips():
    torch.manual_seed(1)
    branch = build(SMALL, num_classes=3, in_channels=8)
    feats = _feats(1)
    boxes = torch.zeros(2, 3, 4)
    boxes[0, 0] = torch.tensor([8.0, 8.0, 40.0, 30.0])
    boxes[0, 1] = torch.tensor([20.0, 30.0, 60.0, 58.0])
    boxes[1, 0] = torch.tensor([10.0, 4.0, 50.0, 44.0])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    labels = torch.tensor([[1, 2, -1], [0, -1, -1]])
    dets = Detections(boxes, torch.rand(2, 3), labels, mask)
    metas = (
        ImageMeta("a", 1, (30, 32), (60, 64), (64, 64), (2.0, 2.0, 2.0, 2.0)),
        ImageMeta("b", 2, (48, 64), (48, 64), (64, 64), flip=True, flip_direction="horizontal"),
    )
    out = branch.predict(feats, dets, metas)
    assert [tuple(d.masks.shape) for d in out] == [(2, 30, 32), (1, 48, 64)]
    probs = branch.probabilities(feats, dets)
    assert probs.shape == (3, 28, 28)
    # image 0: boxes halved into the 30x32 original, masks pasted there
    torch.testing.assert_close(out[0].boxes, boxes[0, :2] / 2)
    assert torch.equal(out[0].masks, paste_masks(probs[:2], boxes[0, :2] / 2, (30, 32)))
    # image 1 was flipped: the box is mirrored back and so is the mask
    assert out[1].boxes.tolist() == [[14.0, 4.0, 54.0, 44.0]]
    assert torch.equal(out[1].masks, paste_masks(probs[2:].flip(-1), out[1].boxes, (48, 64)))
    with pytest.raises(ValueError, match="2 masks for 3 detections"):
        masks_for_detections(probs[:2], dets, metas)


def test_torchvision_conventions_switch_targets_and_paste():
    cfg = dataclasses.replace(SMALL, conventions="torchvision")
    torch.manual_seed(2)
    branch = build(cfg, num_classes=3, in_channels=8)
    feats = _feats(2)
    rois = torch.tensor([[0, -4, 8, 27, 31.0], [1, 6, 2, 70, 42]])
    gt_index, labels = torch.tensor([0, 0]), torch.tensor([2, 1])
    loss = branch.loss(feats, rois, gt_index, labels, _gt(), torch.ones(2, 2))["loss_mask"]
    logits = branch.mask_head(branch.roi_extractor(feats, rois))
    soft = mask_targets(_gt(), rois, gt_index, 28, None, aligned=False, binarize=False)
    torch.testing.assert_close(loss, mask_loss(logits, soft, labels))


def test_targets_from_a_collated_nuclei_batch_cover_their_gt_masks():
    """The hand-off from the data path: Batch.masks rows follow Batch.boxes rows, so the gt boxes
    used as RoIs (mmdetection adds them to the proposals) get their own masks as targets."""
    from detfn.data import collate, nuclei_dataset_config

    ds = build(nuclei_dataset_config("train"))
    batch = collate([ds.get(0), ds.get(50)])
    img, idx = torch.nonzero(batch.box_mask, as_tuple=True)
    rois = torch.cat([img[:, None].float(), batch.boxes[img, idx]], 1)
    pad = torch.tensor([m.pad_shape for m in batch.metas], dtype=torch.float32)
    targets = mask_targets(batch.masks, rois, idx, 28, pad)
    boxes = batch.boxes[img, idx]
    area = torch.stack([batch.masks[b][i].sum() for b, i in zip(img.tolist(), idx.tolist())])
    fill = area / ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    assert (targets.mean((1, 2)) - fill).abs().max() < 0.1
    assert targets.mean() > 0.5  # nuclei fill most of their boxes
