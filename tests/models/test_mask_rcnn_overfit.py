"""The whole Mask R-CNN (RPN, box head, mask branch of the two-stage assembly) overfits a
nuclei image from scratch: after a short run its masks on that image reach a high segm mAP
(pycocotools), far above a box-shaped mask of the same detections. Slow: 120 Adam steps took
about 2 minutes on a 2-core CPU shared with other jobs (30 Nov 2026, GroupNorm backbone: bbox
mAP 0.861, segm mAP 0.766, box-shaped masks 0.162; 80 steps gave segm mAP 0.502); CI skips it."""

from __future__ import annotations

import pytest
import torch

from detfn.apis import mask_rcnn_nuclei_preset
from detfn.config import override
from detfn.data import collate, default_test_pipeline, nuclei_dataset_config
from detfn.evaluation.segm import coco_evaluate_instances, detections_to_segm_results
from detfn.models.functional import detector_loss_fn, detector_predict_fn, split
from detfn.registry import build

STEPS = 120


def small_mask_rcnn():
    """The nuclei preset's Mask R-CNN with narrower layers (64-channel FPN, RPN and mask head),
    for an image at its own size: anchors of scale 2 (8 px on P2), as the preset's 16 px are
    for images at twice their size."""
    return override(
        mask_rcnn_nuclei_preset().model,
        {
            "rpn_head.anchor_generator.scales": (2.0,),
            "neck.out_channels": 64,
            "rpn_head.feat_channels": 64,
            "roi_head.bbox_head.fc_out_channels": 256,
            "roi_head.mask_branch.mask_head.conv_out_channels": 64,
        },
    )


@pytest.mark.slow
def test_mask_rcnn_overfits_a_nuclei_image():
    torch.manual_seed(0)
    dataset = build(nuclei_dataset_config("train", pipeline=default_test_pipeline((320, 256))))
    batch = collate([dataset.get(50)])  # a stained image, 320x256, 17 nuclei
    model = build(small_mask_rcnn())
    params, buffers = split(model)
    params = {k: v.detach().requires_grad_() for k, v in params.items()}
    loss_fn = detector_loss_fn(model)
    optimizer = torch.optim.Adam(params.values(), lr=2e-3)
    for step in range(STEPS):
        total, losses = loss_fn(params, buffers, batch)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        if step % 10 == 0:
            print(step, {k: round(float(v), 3) for k, v in losses.items()})
    model.eval()
    with torch.no_grad():
        dets = detector_predict_fn(model)(params, buffers, batch.images, batch.metas)
    ids = [m.image_id for m in batch.metas]
    results = detections_to_segm_results(dets, ids, dataset.label_to_cat_id)
    boxes_as_masks = [d._replace(masks=_box_masks(d.boxes, d.masks.shape[1:])) for d in dets]
    baseline = detections_to_segm_results(boxes_as_masks, ids, dataset.label_to_cat_id)
    segm = coco_evaluate_instances(dataset.coco, results, img_ids=ids)
    box_shaped = coco_evaluate_instances(dataset.coco, baseline, ("segm",), img_ids=ids)
    print(
        f"bbox mAP {segm['bbox_mAP']:.3f}, segm mAP {segm['segm_mAP']:.3f}, "
        f"box-shaped masks {box_shaped['segm_mAP']:.3f}"
    )
    assert segm["segm_mAP"] > 0.5 and segm["segm_mAP"] > box_shaped["segm_mAP"] + 0.1


def _box_masks(boxes, shape):
    height, width = shape
    ys = torch.arange(height)[:, None] + 0.5
    xs = torch.arange(width)[None] + 0.5
    b = boxes[:, :, None, None]
    return (xs > b[:, 0]) & (xs < b[:, 2]) & (ys > b[:, 1]) & (ys < b[:, 3])
