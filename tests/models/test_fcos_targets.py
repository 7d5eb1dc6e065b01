"""FCOS targets on hand-computed cases: regress ranges (inclusive bounds), strict inside test,
the smallest-area rule, center sampling, norm_on_bbox and centerness."""

from __future__ import annotations

import math

import torch

from detfn.models.dense_heads.fcos_targets import INF, centerness_targets, fcos_targets, per_point

GTS = [
    [0.0, 0.0, 20.0, 20.0],
    [0.0, 0.0, 100.0, 100.0],
    [0.0, 0.0, 60.0, 60.0],
]  # areas 400, 1e4, 3600
LABELS = [1, 2, 0]
RANGES = ((-1.0, 64.0), (64.0, 128.0))
# point, level
POINTS = [
    ((10.0, 10.0), 0),  # p0: A (max 10), B (90 > 64), C (50): A and C qualify, A is smaller
    ((10.0, 10.0), 1),  # p1: only B's 90 lies in [64, 128]
    ((50.0, 50.0), 0),  # p2: B (50) and C (50, 50, 10, 10) qualify, C is smaller
    ((100.0, 10.0), 0),  # p3: on B's right side (r = 0): not strictly inside, background
    ((15.0, 15.0), 0),  # p4: A (15, 15, 5, 5) and C qualify, A is smaller
    ((36.0, 50.0), 1),  # p5: B's max distance is exactly 64, the inclusive lower bound
]


def _run(norm_on_bbox=False, radius=None, points=POINTS, ranges=RANGES, strides=(8.0, 16.0)):
    pts = torch.tensor([p for p, _ in points])
    level = [lv for _, lv in points]
    gts = torch.zeros(2, 3, 4)
    gts[0] = torch.tensor(GTS)
    labels = torch.tensor([LABELS, [-1, -1, -1]])
    mask = torch.tensor([[True] * 3, [False] * 3])  # image 1 has no gt
    return fcos_targets(
        pts,
        torch.tensor([strides[lv] for lv in level]),
        torch.tensor([ranges[lv] for lv in level]),
        gts,
        labels,
        mask,
        num_classes=3,
        center_sample_radius=radius,
        norm_on_bbox=norm_on_bbox,
    )


def test_regress_ranges_inside_rule_and_smallest_area():
    t = _run()
    assert t.assigned[0].tolist() == [1, 2, 3, 0, 1, 2]
    assert t.labels[0].tolist() == [1, 2, 0, 3, 1, 2]
    expected = [
        [10, 10, 10, 10],
        [10, 10, 90, 90],
        [50, 50, 10, 10],
        [0, 0, 0, 0],
        [15, 15, 5, 5],
        [36, 50, 64, 50],
    ]
    torch.testing.assert_close(t.distances[0], torch.tensor(expected, dtype=torch.float32))
    assert t.labels[1].tolist() == [3] * 6 and t.assigned[1].tolist() == [0] * 6
    assert bool((t.distances[1] == 0).all())


def test_norm_on_bbox_divides_by_the_stride():
    t = _run(norm_on_bbox=True)
    torch.testing.assert_close(t.distances[0, 1], torch.tensor([10.0, 10.0, 90.0, 90.0]) / 16)
    torch.testing.assert_close(t.distances[0, 0], torch.tensor([10.0, 10.0, 10.0, 10.0]) / 8)


def test_center_sampling_region_is_clipped_to_the_box():
    # One gt [0, 0, 100, 100], centre (50, 50). Stride 8, radius 1.5: region (38, 62) both axes.
    # Stride 32: region (2, 98). A second gt [0, 0, 10, 10]: stride 32 region (-43, 53) is
    # clipped to the box itself.
    points = [
        ((40.0, 40.0), 0),  # inside (38, 62): positive
        ((30.0, 50.0), 0),  # x 30 < 38: negative although inside the box
        ((62.0, 50.0), 0),  # on the region's border: not strictly inside
        ((30.0, 50.0), 1),  # stride 32: region (2, 98), positive
        ((9.0, 9.0), 1),  # small gt, region clipped to (0, 10): positive, smallest area
        ((11.0, 5.0), 1),  # outside the small gt, and (11, 5) is in the big gt's region: big gt
    ]
    pts = torch.tensor([p for p, _ in points])
    strides = torch.tensor([(8.0, 32.0)[lv] for _, lv in points])
    gts = torch.tensor([[[0.0, 0.0, 100.0, 100.0], [0.0, 0.0, 10.0, 10.0]]])

    def run(radius):
        ranges = torch.tensor([[-1.0, INF]] * 6)
        labels, mask = torch.tensor([[0, 1]]), torch.ones(1, 2, dtype=torch.bool)
        return fcos_targets(
            pts, strides, ranges, gts, labels, mask, num_classes=2, center_sample_radius=radius
        )

    assert run(1.5).assigned[0].tolist() == [1, 0, 0, 1, 2, 1]
    plain = run(None)
    assert plain.assigned[0].tolist() == [1, 1, 1, 1, 2, 1]  # without sampling: inside the box


def test_centerness_targets():
    d = torch.tensor([[10.0, 10.0, 90.0, 90.0], [20.0, 5.0, 20.0, 15.0], [3.0, 3.0, 3.0, 3.0]])
    torch.testing.assert_close(centerness_targets(d), torch.tensor([1 / 9, math.sqrt(1 / 3), 1.0]))


def test_per_point_repeats_level_values():
    out = per_point(((-1.0, 64.0), (64.0, 128.0)), [2, 1])
    assert out.tolist() == [[-1.0, 64.0], [-1.0, 64.0], [64.0, 128.0]]
    assert per_point((8, 16), [1, 2]).tolist() == [8.0, 16.0, 16.0]


def test_no_gt_at_all():
    t = fcos_targets(
        torch.zeros(3, 2),
        torch.full((3,), 8.0),
        torch.tensor([[-1.0, 64.0]] * 3),
        torch.zeros(2, 0, 4),
        torch.zeros(2, 0, dtype=torch.long),
        torch.zeros(2, 0, dtype=torch.bool),
        num_classes=5,
    )
    assert t.labels.tolist() == [[5] * 3] * 2 and t.distances.shape == (2, 3, 4)


def test_centerness_of_a_point_outside_its_box_is_zero_not_nan():
    # A MaxIoU-assigned anchor's centre may lie outside its gt: l = -2 is clamped to 0.
    d = torch.tensor([[-2.0, 5.0, 12.0, 5.0], [0.0, 0.0, 0.0, 0.0]])
    assert centerness_targets(d).tolist() == [0.0, 0.0]
