"""Mask R-CNN parts: FCNMaskHead, mask targets, mask loss and paste, against torchvision and by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import maskrcnn_loss, paste_masks_in_image
from torchvision.ops import roi_align

from detfn.models.roi_heads import (
    FCNMaskHead,
    FCNMaskHeadConfig,
    SingleRoIExtractorConfig,
    mask_loss,
    mask_roi_extractor_config,
    mask_targets,
    paste_masks,
    paste_masks_per_image,
)
from detfn.registry import build


def _polygon_mask(polygon, height, width):
    rle = mask_utils.merge(mask_utils.frPyObjects([polygon], height, width))
    return torch.from_numpy(mask_utils.decode(rle)).bool()


# ---- head --------------------------------------------------------------------------------------


def test_mask_extractor_is_mmdets_14x14_roi_align():
    cfg = mask_roi_extractor_config()
    assert cfg == SingleRoIExtractorConfig(output_size=14)
    assert (cfg.sampling_ratio, cfg.aligned, cfg.featmap_strides, cfg.finest_scale) == (
        0,
        True,
        (4, 8, 16, 32),
        56,
    )


def test_fcn_mask_head_shapes_and_mmdet_init():
    torch.manual_seed(0)
    head = build(FCNMaskHeadConfig(), in_channels=256, num_classes=80)
    assert isinstance(head, FCNMaskHead) and head.cfg.mask_size == 28
    out = head(torch.randn(3, 256, 14, 14))
    assert out.shape == (3, 80, 28, 28)
    params = sum(p.numel() for p in head.parameters())
    assert params == 4 * (256 * 256 * 9 + 256) + (256 * 256 * 4 + 256) + (256 * 80 + 80)
    for conv in (*head.convs, head.upsample, head.conv_logits):
        assert torch.count_nonzero(conv.bias) == 0
    # Kaiming normal, fan_out, ReLU gain: std = sqrt(2 / (out_channels * k * k))
    w = head.convs[1].weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / (256 * 9)), rel=0.02)
    logits = head.conv_logits.weight
    assert logits.std().item() == pytest.approx(math.sqrt(2 / 80), rel=0.05)
    agnostic = build(FCNMaskHeadConfig(class_agnostic=True), in_channels=8, num_classes=3)
    assert agnostic(torch.randn(2, 8, 14, 14)).shape == (2, 1, 28, 28)
    with pytest.raises(ValueError, match="num_classes"):
        build(FCNMaskHeadConfig(), in_channels=256)
    with pytest.raises(ValueError, match="num_convs"):
        FCNMaskHeadConfig(num_convs=0)


def test_fcn_mask_head_equals_torchvision_heads_with_copied_weights():
    torch.manual_seed(1)
    head = build(FCNMaskHeadConfig(), in_channels=16, num_classes=5)
    tv_convs = MaskRCNNHeads(16, [256, 256, 256, 256], 1)
    tv_pred = MaskRCNNPredictor(256, 256, 5)
    with torch.no_grad():
        for ours, theirs in zip(head.convs, tv_convs):
            theirs[0].weight.copy_(ours.weight)
            theirs[0].bias.copy_(ours.bias)
        tv_pred.conv5_mask.weight.copy_(head.upsample.weight)
        tv_pred.conv5_mask.bias.copy_(head.upsample.bias)
        tv_pred.mask_fcn_logits.weight.copy_(head.conv_logits.weight)
        tv_pred.mask_fcn_logits.bias.copy_(head.conv_logits.bias)
    x = torch.randn(4, 16, 14, 14)
    torch.testing.assert_close(head(x), tv_pred(tv_convs(x)), rtol=1e-5, atol=1e-5)


# ---- targets -----------------------------------------------------------------------------------


def test_mask_target_of_a_known_polygon_and_box():
    # Left half of a 56x56 box: pixel columns 0..27 of rows 0..55.
    mask = _polygon_mask([0, 0, 28, 0, 28, 56, 0, 56], 64, 64)
    # A 28x28 square covering pixel columns 17..30 inside a 28x28 RoI at (10, 5).
    square = _polygon_mask([17, 12, 31, 12, 31, 26, 17, 26], 64, 64)
    rois = torch.tensor([[0, 0, 0, 56, 56], [0, 10, 5, 38, 33.0]])
    targets = mask_targets((torch.stack([mask, square]),), rois, torch.tensor([0, 1]))
    expected_half = torch.zeros(28, 28)
    expected_half[:, :14] = 1  # each target pixel averages a 2x2 block of pixel centres
    expected_square = torch.zeros(28, 28)
    expected_square[7:21, 7:21] = 1  # rows 12..25 - 5, columns 17..30 - 10
    assert torch.equal(targets[0], expected_half)
    assert torch.equal(targets[1], expected_square)


def _random_case(seed, num_images=2, height=60, width=72):
    g = torch.Generator().manual_seed(seed)
    gt_masks, proposals, idxs, gt_labels = [], [], [], []
    for _ in range(num_images):
        m = int(torch.randint(1, 5, (1,), generator=g))
        masks = torch.zeros((m, height, width), dtype=torch.bool)
        for k in range(m):  # random blobs: a few rectangles each
            for _ in range(3):
                x0, y0 = (int(v) for v in torch.randint(0, 50, (2,), generator=g))
                masks[k, y0 : y0 + 12, x0 : x0 + 15] = True
        gt_masks.append(masks)
        gt_labels.append(torch.randint(0, 4, (m,), generator=g))
        p = int(torch.randint(1, 7, (1,), generator=g))
        xy = torch.rand((p, 2), generator=g) * torch.tensor([width - 10.0, height - 10.0])
        wh = torch.rand((p, 2), generator=g) * 40 + 3
        proposals.append(torch.cat([xy, xy + wh], 1))  # some cross the image border
        idxs.append(torch.randint(0, m, (p,), generator=g))
    rois = torch.cat(
        [torch.cat([torch.full((len(p), 1), float(b)), p], 1) for b, p in enumerate(proposals)]
    )
    return gt_masks, proposals, idxs, gt_labels, rois


def test_mask_targets_equal_a_per_roi_reference_with_mmdets_conventions():
    gt_masks, proposals, idxs, _, rois = _random_case(3)
    shapes = torch.tensor([[60.0, 72.0], [60.0, 72.0]])
    ours = mask_targets(gt_masks, rois, torch.cat(idxs), clip_shapes=shapes)
    expected = []
    for masks, boxes, index in zip(gt_masks, proposals, idxs):
        for box, i in zip(boxes, index):  # one RoI at a time, clipped, aligned, binarized
            box = torch.stack(
                [box[0].clamp(0, 72), box[1].clamp(0, 60), box[2].clamp(0, 72), box[3].clamp(0, 60)]
            )
            one = roi_align(masks[i][None, None].float(), [box[None]], 28, 1.0, 0, True)
            expected.append((one[0, 0] >= 0.5).float())
    assert torch.equal(ours, torch.stack(expected))


def test_mask_loss_equals_torchvisions_maskrcnn_loss():
    gt_masks, proposals, idxs, gt_labels, rois = _random_case(5)
    labels = torch.cat([lab[i] for lab, i in zip(gt_labels, idxs)])
    logits = torch.randn(len(rois), 4, 28, 28, generator=torch.Generator().manual_seed(6))
    logits.requires_grad_(True)
    # torchvision's conventions: aligned=False, soft targets, no clipping
    targets = mask_targets(gt_masks, rois, torch.cat(idxs), aligned=False, binarize=False)
    ours = mask_loss(logits, targets, labels)
    theirs = maskrcnn_loss(logits, proposals, [m.float() for m in gt_masks], gt_labels, idxs)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
    (g1,) = torch.autograd.grad(ours, logits)
    (g2,) = torch.autograd.grad(theirs, logits)
    torch.testing.assert_close(g1, g2)
    # mmdetection's conventions (aligned, clipped, binarized) give a different, nearby number
    mm = mask_loss(logits, mask_targets(gt_masks, rois, torch.cat(idxs)), labels)
    assert not torch.isclose(mm, ours) and abs(float((mm - ours).detach())) < 0.1


def test_mask_loss_by_hand_and_without_positives():
    logits = torch.zeros(2, 3, 2, 2)
    logits[0, 1] = 2.0  # only the label channel counts
    logits[1, 0] = -1.0
    targets = torch.tensor([[[1.0, 0], [1, 1]], [[0.0, 0], [0, 1]]])
    labels = torch.tensor([1, 0])
    expected = (
        3 * math.log1p(math.exp(-2))
        + math.log1p(math.exp(2))
        + 3 * math.log1p(math.exp(-1))
        + math.log1p(math.exp(1))
    ) / 8
    assert mask_loss(logits, targets, labels).item() == pytest.approx(expected, rel=1e-6)
    empty = torch.zeros(0, 3, 28, 28, requires_grad=True)
    loss = mask_loss(empty, torch.zeros(0, 28, 28), torch.zeros(0, dtype=torch.int64))
    assert loss.item() == 0 and loss.requires_grad
    head = build(FCNMaskHeadConfig(loss_weight=2.0), in_channels=4, num_classes=3)
    assert head.loss(logits, targets, labels)["loss_mask"].item() == pytest.approx(2 * expected)


# ---- paste -------------------------------------------------------------------------------------


def _random_detections(seed, num=12, size=28):
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand((num, size, size), generator=g)
    xy = torch.rand((num, 2), generator=g) * torch.tensor([90.0, 70.0]) - 10
    wh = torch.rand((num, 2), generator=g) * 50 + 1
    return probs, torch.cat([xy, xy + wh], 1)


def test_paste_equals_torchvisions_paste_masks_in_image():
    probs, boxes = _random_detections(7)
    theirs = paste_masks_in_image(probs[:, None], boxes, (80, 96))[:, 0]
    ours = paste_masks(probs, boxes, (80, 96), threshold=None, convention="torchvision")
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-6)
    binary = paste_masks(probs, boxes, (80, 96), threshold=0.5, convention="torchvision")
    decided = (theirs - 0.5).abs() > 1e-5
    assert torch.equal(binary[decided], (theirs >= 0.5)[decided])


def _mmdet_paste_reference(probs, boxes, height, width):
    """mmdetection's _do_paste_mask: grid_sample over pixel centres, zero padding."""
    x0, y0, x1, y1 = torch.split(boxes, 1, dim=1)
    img_y = (torch.arange(height, dtype=torch.float32) + 0.5 - y0) / (y1 - y0) * 2 - 1
    img_x = (torch.arange(width, dtype=torch.float32) + 0.5 - x0) / (x1 - x0) * 2 - 1
    gx = img_x[:, None, :].expand(len(boxes), height, width)
    gy = img_y[:, :, None].expand(len(boxes), height, width)
    grid = torch.stack([gx, gy], dim=3)
    return F.grid_sample(probs[:, None], grid, align_corners=False)[:, 0]


def test_paste_equals_mmdets_grid_sample_paste():
    probs, boxes = _random_detections(8)
    reference = _mmdet_paste_reference(probs, boxes, 80, 96)
    ours = paste_masks(probs, boxes, (80, 96), threshold=None)
    torch.testing.assert_close(ours, reference, rtol=0, atol=2e-6)
    binary = paste_masks(probs, boxes, (80, 96))
    decided = (reference - 0.5).abs() > 1e-5
    assert binary.dtype == torch.bool
    assert torch.equal(binary[decided], (reference >= 0.5)[decided])


def test_paste_then_crop_gives_the_mask_back():
    probs = torch.zeros(1, 28, 28)
    probs[0, :, :14] = 1.0  # left half
    box = torch.tensor([[8.0, 8.0, 64.0, 64.0]])  # 2 image pixels per mask pixel
    pasted = paste_masks(probs, box, (72, 80))
    expected = torch.zeros(72, 80, dtype=torch.bool)
    expected[8:64, 8:36] = True  # by hand: pixel centres sample the mask at (x - 8) / 2 - 0.25
    assert torch.equal(pasted[0], expected)
    back = mask_targets((pasted,), torch.tensor([[0.0, 8, 8, 64, 64]]), torch.tensor([0]))
    assert torch.equal(back[0], probs[0])


def test_paste_per_image_and_empty():
    probs, boxes = _random_detections(9, num=5)
    index = torch.tensor([1, 0, 1, 1, 0])
    per_image = paste_masks_per_image(probs, boxes, index, [(40, 50), (80, 96)])
    assert [tuple(m.shape) for m in per_image] == [(2, 40, 50), (3, 80, 96)]
    assert torch.equal(per_image[1], paste_masks(probs[index == 1], boxes[index == 1], (80, 96)))
    assert paste_masks(probs[:0], boxes[:0], (5, 6)).shape == (0, 5, 6)


def test_pasted_masks_rle_encode_for_coco():
    from detfn.evaluation.segm import encode_masks

    probs, boxes = _random_detections(10, num=4)
    masks = paste_masks(probs, boxes, (80, 96))
    rles = encode_masks(masks)
    assert all(isinstance(r["counts"], str) and r["size"] == [80, 96] for r in rles)
    decoded = np.stack([mask_utils.decode(dict(r, counts=r["counts"].encode())) for r in rles])
    assert np.array_equal(decoded.astype(bool), masks.numpy())


def test_paste_benchmark_runs_both_pairs(capsys):
    from experiments import benchmark_mask_paste as bench

    rows = bench.main(bench.PasteBenchmarkArgs(num=3, height=40, width=48, repeats=1))
    assert [r[0] for r in rows] == ["torchvision convention", "mmdet convention"]
    assert "ratio" in capsys.readouterr().out
