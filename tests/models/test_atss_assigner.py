"""ATSS assigner: hand-computed cases, a plain per-image reference written after mmdetection's
loop (``ATSSAssigner.assign``), and batched == per image."""

from __future__ import annotations

import statistics

import pytest
import torch

from detfn.boxes import box_iou
from detfn.models.anchors import AnchorGeneratorConfig, grid_anchors
from detfn.models.assigners import AssignInput
from detfn.models.atss_assigner import ATSSAssignerConfig, assign_atss
from detfn.registry import build


def _inp(candidates, num_per_level, gts, mask=None, gt_mask=None):
    candidates = torch.tensor(candidates, dtype=torch.float32)[None]
    gts = torch.tensor(gts, dtype=torch.float32).reshape(1, -1, 4)
    return AssignInput(
        candidates,
        torch.ones(candidates.shape[:2], dtype=torch.bool) if mask is None else mask,
        tuple(num_per_level),
        gts,
        torch.ones(gts.shape[:2], dtype=torch.bool) if gt_mask is None else gt_mask,
        torch.zeros(1, 0, 4),
        torch.zeros(1, 0, dtype=torch.bool),
    )


# Boxes 10 px tall in y in [0, 10]; level 0 anchors 10 wide, level 1 anchors 20 wide.
TWO_LEVELS = [
    [0, 0, 10, 10],  # a0, centre (5, 5)
    [3, 0, 13, 10],  # a1, centre (8, 5)
    [10, 0, 20, 10],  # a2, centre (15, 5)
    [30, 0, 40, 10],  # a3, centre (35, 5)
    [-5, 0, 15, 10],  # a4, centre (5, 5)   level 1
    [5, 0, 25, 10],  # a5, centre (15, 5)  level 1
]


def test_hand_computed_two_levels_two_gts():
    gt_a, gt_b = [0, 0, 10, 10], [4, 0, 24, 10]
    # gt A (centre (5, 5)): 2 closest per level are a0, a1 (distances 0, 3) and a4, a5 (0, 10).
    ious_a = [1.0, 70 / 130, 100 / 200, 50 / 250]
    thr_a = statistics.mean(ious_a) + statistics.stdev(ious_a)  # 0.5596 + 0.3303 = 0.8899
    assert ious_a[0] >= thr_a and max(ious_a[1:]) < thr_a  # only a0
    # gt B (centre (14, 5)): a2, a1 (distances 1, 6) and a5, a4 (1, 9).
    ious_b = [100 / 200, 90 / 210, 190 / 210, 110 / 290]
    thr_b = statistics.mean(ious_b) + statistics.stdev(ious_b)  # 0.5532 + 0.2396 = 0.7927
    assert ious_b[2] >= thr_b and max(ious_b[:2] + ious_b[3:]) < thr_b  # only a5
    result = assign_atss(ATSSAssignerConfig(topk=2), _inp(TWO_LEVELS, (4, 2), [gt_a, gt_b]))
    assert result.assigned.tolist() == [[1, 0, 0, 0, 0, 2]]
    torch.testing.assert_close(result.max_iou[0, [0, 5]], torch.tensor([1.0, 190 / 210]))


def test_centre_outside_gt_is_not_positive():
    # gt [0, 0, 4, 10], centre (2, 5); topk 3 takes b0, b1, b2 (distances 3, 6, 6).
    anchors = [[-6, 0, 4, 10], [3, 0, 13, 10], [-9, 0, 1, 10], [20, 0, 30, 10]]
    ious = [40 / 100, 10 / 130, 10 / 130]
    thr = statistics.mean(ious) + statistics.stdev(ious)  # 0.1846 + 0.1865 = 0.3712
    assert ious[0] >= thr  # b0 passes the IoU test, but its centre (-1, 5) is outside the gt
    result = assign_atss(ATSSAssignerConfig(topk=3), _inp(anchors, (4,), [[0, 0, 4, 10]]))
    assert result.assigned.tolist() == [[0, 0, 0, 0]]


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_anchor_positive_for_two_gts_goes_to_the_higher_iou(order):
    anchors = [[0, 0, 10, 10], [50, 0, 60, 10], [60, 0, 70, 10]]
    gts = [[0, 0, 10, 10], [1, 0, 11, 10]]  # c0 has IoU 1 with the first, 9/11 with the second
    # Each gt: candidates' IoUs (x, 0, 0), threshold x/3 + x/sqrt(3) < x, so c0 is positive
    # for both; it goes to the first gt (IoU 1) wherever that gt sits in the list.
    result = assign_atss(ATSSAssignerConfig(topk=3), _inp(anchors, (3,), [gts[i] for i in order]))
    assert result.assigned.tolist() == [[order.index(0) + 1, 0, 0]]


def test_single_candidate_has_no_threshold_and_no_gt_gives_negatives():
    # One candidate per gt: the unbiased std of one value is NaN (torch.std), no positive.
    result = assign_atss(ATSSAssignerConfig(topk=1), _inp([[0, 0, 10, 10]], (1,), [[0, 0, 10, 10]]))
    assert result.assigned.tolist() == [[0]]
    empty = assign_atss(ATSSAssignerConfig(), _inp(TWO_LEVELS, (4, 2), torch.zeros(0, 4).tolist()))
    assert empty.assigned.tolist() == [[0] * 6]


def _reference(anchors, num_per_level, gts, topk):
    """mmdetection's per-image ATSS written plainly: a loop over levels and over gts."""
    num, num_gt = anchors.shape[0], gts.shape[0]
    assigned = torch.zeros(num, dtype=torch.long)
    if num_gt == 0:
        return assigned
    iou = box_iou(anchors, gts)  # [N, M]
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    best = torch.full((num,), -float("inf"))
    for g in range(num_gt):
        gt_centre = (gts[g, :2] + gts[g, 2:]) / 2
        dist = ((centres - gt_centre) ** 2).sum(1).sqrt()
        cands, start = [], 0
        for count in num_per_level:
            k = min(topk, count)
            cands.append(dist[start : start + count].topk(k, largest=False).indices + start)
            start += count
        cand = torch.cat(cands)
        thr = iou[cand, g].mean() + iou[cand, g].std()
        for n in cand.tolist():
            c = centres[n]
            inside = min(c[0] - gts[g, 0], c[1] - gts[g, 1], gts[g, 2] - c[0], gts[g, 3] - c[1])
            if iou[n, g] >= thr and inside > 0.01 and iou[n, g] > best[n]:
                best[n], assigned[n] = iou[n, g], g + 1
    return assigned


def _random_batch(seed):
    gen = torch.Generator().manual_seed(seed)
    cfg = AnchorGeneratorConfig(strides=(8, 16, 32), ratios=(1.0,), scales=(8.0,))
    levels = grid_anchors(cfg, [(12, 12), (6, 6), (3, 3)])
    anchors = torch.cat(levels)
    counts = tuple(a.shape[0] for a in levels)
    batch, max_gt = 3, 5
    xy = torch.rand(batch, max_gt, 2, generator=gen) * 70
    wh = torch.rand(batch, max_gt, 2, generator=gen) * 60 + 8
    gts = torch.cat((xy, xy + wh), -1)
    gt_mask = torch.tensor([[True] * 5, [True, True, False, False, False], [False] * 5])
    valid = torch.rand(batch, anchors.shape[0], generator=gen) > 0.1
    return anchors, counts, gts * gt_mask[..., None], gt_mask, valid


def test_batched_equals_mmdetection_style_reference_per_image():
    anchors, counts, gts, gt_mask, valid = _random_batch(0)
    batch = gts.shape[0]
    inp = AssignInput(
        anchors.expand(batch, -1, -1),
        valid,
        counts,
        gts,
        gt_mask,
        torch.zeros(batch, 0, 4),
        torch.zeros(batch, 0, dtype=torch.bool),
    )
    assigner = build(ATSSAssignerConfig(topk=9))
    result = assigner(inp)
    assert int((result.assigned > 0).sum()) > 5
    level = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    for i in range(batch):
        # mmdetection drops invalid anchors before assigning, then maps the result back.
        keep = valid[i]
        kept_counts = [int((keep & (level == lv)).sum()) for lv in range(len(counts))]
        ref = _reference(anchors[keep], kept_counts, gts[i][gt_mask[i]], 9)
        assert torch.equal(result.assigned[i][keep], ref)
        assert bool((result.assigned[i][~keep] == -1).all())
        single = assign_atss(
            ATSSAssignerConfig(topk=9),
            AssignInput(
                anchors[None],
                valid[i : i + 1],
                counts,
                gts[i : i + 1, gt_mask[i]],
                gt_mask[i : i + 1, gt_mask[i]],
                torch.zeros(1, 0, 4),
                torch.zeros(1, 0, dtype=torch.bool),
            ),
        )
        assert torch.equal(single.assigned[0], result.assigned[i])
