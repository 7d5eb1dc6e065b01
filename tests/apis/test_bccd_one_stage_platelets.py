"""What the one-stage bccd presets change for BCCD's platelets, on hand-computed cases.

FCOS: the preset's regress ranges are mmdetection's halved, so that a platelet-sized box
(20 px at the presets' half size) and an RBC-sized one (52 px) are no longer both regressed from
P3 alone. ATSS: gradients are clipped (its warmup spike otherwise wrecks the classifier).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from detfn.apis import atss_bccd_preset, fcos_bccd_preset
from detfn.engine.hooks.optimizer import GradClipConfig
from detfn.models.dense_heads.fcos_head import DEFAULT_REGRESS_RANGES, FCOSOutputs
from detfn.models.dense_heads.fcos_targets import INF
from detfn.registry import build
from detfn.structures import Batch, ImageMeta

SIZE = 128  # P3..P7 maps of 16, 8, 4, 2, 1 cells
STRIDES = (8, 16, 32, 64, 128)
PLATELET = [8.0, 8.0, 28.0, 28.0]  # 20 x 20, centre (18, 18)
RBC = [32.0, 32.0, 84.0, 84.0]  # 52 x 52, centre (58, 58)


def _targets(regress_ranges):
    """Targets of the preset's FCOS head (center sampling 1.5, distances in strides) for one
    128 x 128 image holding the platelet (label 2) and the RBC (label 0)."""
    cfg = fcos_bccd_preset().model.bbox_head
    head = build(
        dataclasses.replace(cfg, regress_ranges=regress_ranges), in_channels=8, num_classes=3
    )
    maps = [torch.zeros(1, 3, SIZE // s, SIZE // s) for s in STRIDES]
    batch = Batch(
        images=torch.zeros(1, 3, SIZE, SIZE),
        boxes=torch.tensor([[PLATELET, RBC]]),
        labels=torch.tensor([[2, 0]]),
        box_mask=torch.ones(1, 2, dtype=torch.bool),
        ignore_boxes=torch.zeros(1, 0, 4),
        ignore_mask=torch.zeros(1, 0, dtype=torch.bool),
        metas=(ImageMeta("x.jpg", 0, (SIZE, SIZE), (SIZE, SIZE), (SIZE, SIZE)),),
    )
    points, targets = head.targets(FCOSOutputs(maps, maps, maps), batch)
    level = torch.repeat_interleave(
        torch.arange(len(STRIDES)), torch.tensor([(SIZE // s) ** 2 for s in STRIDES])
    )
    return points, level, targets


def _positives(points, level, targets, gt):
    """Sorted (level, x, y) of the points that took gt ``gt`` (0-based)."""
    taken = targets.assigned[0] == gt + 1
    return sorted(
        (int(lv), int(x), int(y)) for lv, (x, y) in zip(level[taken], points[taken].tolist())
    )


def test_the_preset_halves_mmdetections_regress_ranges():
    ranges = fcos_bccd_preset().model.bbox_head.regress_ranges
    assert ranges == ((-1, 32), (32, 64), (64, 128), (128, 256), (256, INF))
    assert [r[1] for r in ranges[:-1]] == [r[1] / 2 for r in DEFAULT_REGRESS_RANGES[:-1]]


def test_platelet_on_p3_rbc_mostly_on_p4_with_the_preset_ranges():
    points, level, t = _targets(fcos_bccd_preset().model.bbox_head.regress_ranges)
    # Platelet: P3 points at 4 + 8k strictly inside the box (12, 20; 28 is on its side), whose
    # farthest side is 16 <= 32. P4's (24, 24) lies inside but its farthest side, 16, is < 32.
    assert _positives(points, level, t, 0) == [(0, 12, 12), (0, 12, 20), (0, 20, 12), (0, 20, 20)]
    # RBC: P3 points in the centre region 58 +- 12 are 52, 60, 68; x or y = 68 is 36 px from
    # the left/top side (> 32), so 4 stay. P4 points 40, 56, 72 in 58 +- 24: all but (56, 56)
    # (farthest 28 < 32) have a farthest side of 40 or 44, in (32, 64].
    p4 = [(1, x, y) for x in (40, 56, 72) for y in (40, 56, 72) if (x, y) != (56, 56)]
    assert _positives(points, level, t, 1) == [
        (0, 52, 52),
        (0, 52, 60),
        (0, 60, 52),
        (0, 60, 60),
        *p4,
    ]
    labels = t.labels[0]
    assert labels[level == 0].bincount(minlength=4).tolist()[:3] == [4, 0, 4]
    # distances in strides: P4 point (40, 40) is (8, 8, 44, 44) px from the RBC's sides
    at = ((level == 1) & (points == torch.tensor([40.0, 40.0])).all(1)).nonzero()[0, 0]
    assert t.distances[0, at].tolist() == [0.5, 0.5, 2.75, 2.75]


def test_with_mmdetections_ranges_both_cells_share_p3():
    points, level, t = _targets(DEFAULT_REGRESS_RANGES)
    assert _positives(points, level, t, 0) == [(0, 12, 12), (0, 12, 20), (0, 20, 12), (0, 20, 20)]
    # every RBC centre-region point (farthest side <= 36 <= 64) stays on P3, none on P4
    rbc = [(0, x, y) for x in (52, 60, 68) for y in (52, 60, 68)]
    assert _positives(points, level, t, 1) == rbc


@pytest.mark.parametrize("preset", [atss_bccd_preset, fcos_bccd_preset])
def test_one_stage_bccd_presets_clip_gradients_at_35(preset):
    assert preset().runner.optimizer_hook.grad_clip == GradClipConfig(max_norm=35.0, norm_type=2.0)
