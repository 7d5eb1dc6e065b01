"""MaxIoUAssigner: constructed counts, batched == per image (mmdetection's loop), edge cases."""

import pytest
import torch
from torchvision import ops

from detfn.boxes import batched_box_iou
from detfn.models.assigners import (
    AssignInput,
    MaxIoUAssignerConfig,
    assign_max_iou,
    gather_assigned,
)
from detfn.registry import build

RPN = MaxIoUAssignerConfig(0.7, 0.3, 0.3, match_low_quality=True)
RCNN = MaxIoUAssignerConfig(0.5, 0.5, 0.5, match_low_quality=False)


def assign_max_iou_single(cfg, boxes, gt, ignore):
    """Per-image reference written after mmdetection 2.x's MaxIoUAssigner, with Python loops."""
    n, m = boxes.shape[0], gt.shape[0]
    assigned = torch.full((n,), -1, dtype=torch.long)
    if m == 0:
        return torch.zeros(n, dtype=torch.long), torch.zeros(n)
    overlaps = ops.box_iou(gt, boxes)  # [M, N] like mmdetection
    if cfg.ignore_iof_thr > 0 and ignore.shape[0] > 0:
        for j in range(n):
            area = (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1])
            best = 0.0
            for g in range(ignore.shape[0]):
                w = (
                    torch.min(boxes[j, 2], ignore[g, 2]) - torch.max(boxes[j, 0], ignore[g, 0])
                ).clamp(min=0)
                h = (
                    torch.min(boxes[j, 3], ignore[g, 3]) - torch.max(boxes[j, 1], ignore[g, 1])
                ).clamp(min=0)
                best = max(best, float(w * h / area))
            if best > cfg.ignore_iof_thr:
                overlaps[:, j] = -1
    max_overlaps, argmax = overlaps.max(dim=0)
    gt_max, gt_argmax = overlaps.max(dim=1)
    thr = cfg.neg_iou_thr
    low, high = thr if isinstance(thr, tuple) else (0.0, thr)
    assigned[(max_overlaps >= low) & (max_overlaps < high)] = 0
    pos = max_overlaps >= cfg.pos_iou_thr
    assigned[pos] = argmax[pos] + 1
    if cfg.match_low_quality:
        for i in range(m):
            if gt_max[i] >= cfg.min_pos_iou:
                if cfg.gt_max_assign_all:
                    assigned[overlaps[i] == gt_max[i]] = i + 1
                else:
                    assigned[gt_argmax[i]] = i + 1
    return assigned, max_overlaps


def _pad(tensors, width=4):
    size = max(t.shape[0] for t in tensors)
    out = torch.zeros(len(tensors), size, width)
    mask = torch.zeros(len(tensors), size, dtype=torch.bool)
    for i, t in enumerate(tensors):
        out[i, : t.shape[0]] = t
        mask[i, : t.shape[0]] = True
    return out, mask


def _random_boxes(g, n, scale=60.0):
    xy = torch.rand(n, 2, generator=g) * scale
    return torch.cat((xy, xy + torch.rand(n, 2, generator=g) * 30 + 2), dim=1)


def test_constructed_case_counts():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # IoU 1 with gt0 -> pos (1)
            [0.0, 0.0, 10.0, 12.0],  # IoU 100/120 = 0.83 with gt0 -> pos (1)
            [
                20.0,
                20.0,
                30.0,
                36.0,
            ],  # IoU 100/160 = 0.625 with gt1 -> ignore band, low-quality best of gt1 -> 2
            [20.0, 20.0, 30.0, 40.0],  # IoU 0.5 with gt1 -> between 0.3 and 0.7 -> ignore (-1)
            [50.0, 50.0, 60.0, 60.0],  # IoU 0 -> negative (0)
            [0.0, 0.0, 10.0, 40.0],  # IoU 0.25 with gt0 -> negative (0)
        ]
    )
    res = assign_max_iou(
        RPN,
        boxes[None],
        torch.ones(1, 6, dtype=torch.bool),
        gt[None],
        torch.ones(1, 2, dtype=torch.bool),
        torch.zeros(1, 0, 4),
        torch.zeros(1, 0, dtype=torch.bool),
    )
    assert res.assigned.tolist() == [[1, 1, 2, -1, 0, 0]]
    torch.testing.assert_close(
        res.max_iou[0], torch.tensor([1.0, 100 / 120, 0.625, 0.5, 0.0, 0.25])
    )
    # R-CNN thresholds: no low-quality matching, 0.5 splits pos/neg
    res = assign_max_iou(
        RCNN,
        boxes[None],
        torch.ones(1, 6, dtype=torch.bool),
        gt[None],
        torch.ones(1, 2, dtype=torch.bool),
        torch.zeros(1, 0, 4),
        torch.zeros(1, 0, dtype=torch.bool),
    )
    assert res.assigned.tolist() == [[1, 1, 2, 2, 0, 0]]


def test_low_quality_ties_and_later_gt_wins():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])  # identical gts
    boxes = torch.tensor([[0.0, 0.0, 10.0, 20.0], [0.0, 0.0, 20.0, 10.0], [40.0, 40.0, 50.0, 50.0]])
    args = (
        torch.ones(1, 3, dtype=torch.bool),
        gt[None],
        torch.ones(1, 2, dtype=torch.bool),
        torch.zeros(1, 0, 4),
        torch.zeros(1, 0, dtype=torch.bool),
    )
    # both boxes have IoU 0.5 with both gts: all ties go to the last gt (index 2)
    assert assign_max_iou(RPN, boxes[None], *args).assigned.tolist() == [[2, 2, 0]]
    one = MaxIoUAssignerConfig(0.7, 0.3, 0.3, gt_max_assign_all=False)
    expected = assign_max_iou_single(one, boxes, gt, torch.zeros(0, 4))[0]
    assert assign_max_iou(one, boxes[None], *args).assigned[0].tolist() == expected.tolist()


def test_ignore_regions_and_invalid_boxes():
    cfg = MaxIoUAssignerConfig(0.7, 0.3, 0.3, ignore_iof_thr=0.5)
    gt = torch.tensor([[[0.0, 0.0, 10.0, 10.0]]])
    boxes = torch.tensor(
        [[[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0], [200.0, 200.0, 210.0, 210.0]]]
    )
    ignore = torch.tensor([[[95.0, 95.0, 108.0, 108.0], [0.0, 0.0, 0.0, 0.0]]])  # 64% of box 1
    ignore_mask = torch.tensor([[True, False]])
    box_mask = torch.tensor([[True, True, False]])
    res = assign_max_iou(
        cfg, boxes, box_mask, gt, torch.ones(1, 1, dtype=torch.bool), ignore, ignore_mask
    )
    assert res.assigned.tolist() == [[1, -1, -1]]
    # disabled ignore threshold -> box 1 is a plain negative
    res = assign_max_iou(
        RPN, boxes, box_mask, gt, torch.ones(1, 1, dtype=torch.bool), ignore, ignore_mask
    )
    assert res.assigned.tolist() == [[1, 0, -1]]


def test_neg_iou_range_tuple():
    cfg = MaxIoUAssignerConfig(0.7, (0.1, 0.3), 0.3, match_low_quality=False)
    gt = torch.tensor([[[0.0, 0.0, 10.0, 10.0]]])
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 40.0], [0.0, 0.0, 10.0, 200.0]]])  # IoU 0.25, 0.05
    res = assign_max_iou(
        cfg,
        boxes,
        torch.ones(1, 2, dtype=torch.bool),
        gt,
        torch.ones(1, 1, dtype=torch.bool),
        torch.zeros(1, 0, 4),
        torch.zeros(1, 0, dtype=torch.bool),
    )
    assert res.assigned.tolist() == [[0, -1]]


@pytest.mark.parametrize(
    "cfg",
    [
        RPN,
        RCNN,
        MaxIoUAssignerConfig(0.5, 0.4, 0.0, ignore_iof_thr=0.3),
        MaxIoUAssignerConfig(0.6, (0.1, 0.4), 0.2, gt_max_assign_all=False),
    ],
)
def test_batched_equals_per_image(cfg):
    g = torch.Generator().manual_seed(0)
    boxes = torch.stack([_random_boxes(g, 40) for _ in range(4)])
    gts = [_random_boxes(g, k) for k in (3, 0, 5, 1)]
    ignores = [_random_boxes(g, k) for k in (1, 2, 0, 0)]
    gt_boxes, gt_mask = _pad(gts)
    ignore_boxes, ignore_mask = _pad(ignores)
    candidate_mask = torch.ones(4, 40, dtype=torch.bool)
    inp = AssignInput(boxes, candidate_mask, (), gt_boxes, gt_mask, ignore_boxes, ignore_mask)
    res = build(cfg)(inp)
    for i in range(4):
        expected, expected_iou = assign_max_iou_single(cfg, boxes[i], gts[i], ignores[i])
        assert res.assigned[i].tolist() == expected.tolist()
        torch.testing.assert_close(res.max_iou[i], expected_iou)
    assert (res.assigned > 0).any() and (res.assigned == 0).any()


def test_empty_gt_and_empty_boxes():
    boxes = torch.rand(2, 5, 4) + torch.tensor([0.0, 0.0, 1.0, 1.0])
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    none = (torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool))
    res = assign_max_iou(RPN, boxes, mask, *none, *none)
    assert res.assigned.tolist() == [[0] * 5, [0, 0, 0, -1, -1]]
    padded_gt = (torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.bool))
    res = assign_max_iou(RPN, boxes, mask, *padded_gt, *none)
    assert res.assigned.tolist() == [[0] * 5, [0, 0, 0, -1, -1]]
    assert res.max_iou.eq(0).all()
    res = assign_max_iou(
        RPN, torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool), *padded_gt, *none
    )
    assert res.assigned.shape == (2, 0)


def test_iou_equals_torchvision():
    g = torch.Generator().manual_seed(3)
    a, b = _random_boxes(g, 12), _random_boxes(g, 4)
    torch.testing.assert_close(batched_box_iou(a[None], b[None])[0], ops.box_iou(a, b))


def test_gather_assigned():
    assigned = torch.tensor([[2, 0, -1, 1]])
    labels = torch.tensor([[7, 9]])
    assert gather_assigned(assigned, labels, fill=-1).tolist() == [[9, -1, -1, 7]]
    boxes = torch.arange(8.0).view(1, 2, 4)
    assert gather_assigned(assigned, boxes)[0, 0].tolist() == [4.0, 5.0, 6.0, 7.0]
    assert gather_assigned(assigned, torch.zeros(1, 0, 4)).shape == (1, 4, 4)


def test_config_errors():
    with pytest.raises(ValueError, match="MaxIoUAssignerConfig.neg_iou_thr"):
        MaxIoUAssignerConfig(0.5, 0.6)
    with pytest.raises(ValueError, match="MaxIoUAssignerConfig.pos_iou_thr"):
        MaxIoUAssignerConfig(1.5, 0.3)
    with pytest.raises(ValueError, match="gt_mask must be a bool"):
        assign_max_iou(
            RPN,
            torch.zeros(1, 2, 4),
            torch.ones(1, 2, dtype=torch.bool),
            torch.zeros(1, 1, 4),
            torch.ones(1, 1),
            torch.zeros(1, 0, 4),
            torch.zeros(1, 0, dtype=torch.bool),
        )
