"""End to end through every mask part but the two-stage assembly: nuclei masks -> targets ->
a tiny pyramid + MaskBranch trained on the gt boxes -> paste -> RLE -> pycocotools segm mAP."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detfn.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LoadImageConfig,
    NormalizeConfig,
    PadConfig,
    collate,
    nuclei_dataset_config,
)
from detfn.evaluation.segm import coco_evaluate_instances, detections_to_segm_results
from detfn.models.roi_heads import FCNMaskHeadConfig, MaskBranchConfig, SingleRoIExtractorConfig
from detfn.registry import build
from detfn.structures import Detections

C = 16


class TinyPyramid(nn.Module):
    """Four levels at strides 4, 8, 16, 32, so the mask extractor's level mapping applies."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, C, 3, 2, 1), nn.ReLU(), nn.Conv2d(C, C, 3, 2, 1), nn.ReLU()
        )
        self.down = nn.ModuleList(nn.Conv2d(C, C, 3, 2, 1) for _ in range(3))

    def forward(self, x):
        levels = [self.stem(x)]
        for conv in self.down:
            levels.append(F.relu(conv(levels[-1])))
        return tuple(levels)


def _segm_map(ds, batch, dets):
    ids = [m.image_id for m in batch.metas]
    results = detections_to_segm_results(dets, ids, ds.label_to_cat_id)
    return coco_evaluate_instances(ds.coco, results, metrics=("segm",), img_ids=ids)["segm_mAP"]


@pytest.mark.slow
def test_mask_branch_overfits_a_few_nuclei_images():
    torch.manual_seed(0)
    pipeline = (
        LoadImageConfig(),
        NormalizeConfig(mean=IMAGENET_MEAN, std=IMAGENET_STD, to_rgb=True),
        PadConfig(size_divisor=32),
    )
    ds = build(nuclei_dataset_config("train", pipeline=pipeline))
    batch = collate([ds.get(0), ds.get(50)])  # one fluorescence, one stained image
    cfg = MaskBranchConfig(
        roi_extractor=SingleRoIExtractorConfig(output_size=14),
        mask_head=FCNMaskHeadConfig(num_convs=2, conv_out_channels=C),
    )
    branch, net = build(cfg, num_classes=1, in_channels=C), TinyPyramid()
    optimizer = torch.optim.Adam([*branch.parameters(), *net.parameters()], 3e-3)
    img, idx = torch.nonzero(batch.box_mask, as_tuple=True)
    rois = torch.cat([img[:, None].float(), batch.boxes[img, idx]], 1)  # gt boxes as positives
    pad = torch.tensor([m.pad_shape for m in batch.metas], dtype=torch.float32)
    losses = []
    for _ in range(100):
        feats = net(batch.images)
        loss = branch.loss(feats, rois, idx, torch.zeros_like(idx), batch.masks, pad)["loss_mask"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    dets = Detections(
        batch.boxes, batch.box_mask.float(), torch.where(batch.box_mask, 0, -1), batch.box_mask
    )
    with torch.no_grad():
        predicted = branch.predict(net(batch.images), dets, batch.metas)
    # baseline: every detection's mask is its whole box
    boxes_as_masks = []
    for det in predicted:
        h, w = det.masks.shape[1:]
        ys, xs = torch.arange(h)[:, None] + 0.5, torch.arange(w)[None] + 0.5
        b = det.boxes[:, :, None, None]
        inside = (xs > b[:, 0]) & (xs < b[:, 2]) & (ys > b[:, 1]) & (ys < b[:, 3])
        boxes_as_masks.append(det._replace(masks=inside))
    trained, baseline = _segm_map(ds, batch, predicted), _segm_map(ds, batch, boxes_as_masks)
    print(f"segm mAP trained {trained:.3f}, boxes as masks {baseline:.3f}")
    assert trained > 0.6 and trained > baseline + 0.2, (trained, baseline)
