"""Anchors against hand-computed mmdetection values."""

import math

import pytest
import torch

from detfn.models.anchors import (
    AnchorGeneratorConfig,
    anchor_scales,
    base_anchors,
    grid_anchors,
    inside_flags,
    num_base_anchors,
    valid_flags,
)
from detfn.registry import build


def test_base_anchors_stride16_hand_computed():
    cfg = AnchorGeneratorConfig(strides=(16,), scales=(8.0,), ratios=(0.5, 1.0, 2.0))
    s = 16 * 8 / math.sqrt(2) / 2  # half of the short side of the ratio 0.5 / 2 anchors: 45.2548
    expected = torch.tensor(
        [[-2 * s, -s, 2 * s, s], [-64.0, -64.0, 64.0, 64.0], [-s, -2 * s, s, 2 * s]]
    )
    torch.testing.assert_close(base_anchors(cfg)[0], expected)
    assert abs(2 * s - 90.5097) < 1e-4


def test_grid_order_location_major():
    cfg = AnchorGeneratorConfig(strides=(16,), scales=(8.0,), ratios=(0.5, 1.0, 2.0))
    anchors = grid_anchors(cfg, [(2, 3)])[0]
    assert anchors.shape == (2 * 3 * 3, 4)
    base = base_anchors(cfg)[0]
    for y in range(2):
        for x in range(3):
            shift = torch.tensor([x * 16.0, y * 16.0, x * 16.0, y * 16.0])
            idx = (y * 3 + x) * 3
            torch.testing.assert_close(anchors[idx : idx + 3], base + shift)


def test_ratio_major_scale_minor_and_centre_offset():
    cfg = AnchorGeneratorConfig(
        strides=(8,), scales=(1.0, 2.0), ratios=(1.0, 4.0), center_offset=0.5
    )
    got = base_anchors(cfg)[0]
    # centre 4; (ratio 1, scale 1): 8x8; (1, 2): 16x16; (4, 1): w 4, h 16; (4, 2): w 8, h 32
    expected = torch.tensor(
        [
            [0.0, 0.0, 8.0, 8.0],
            [-4.0, -4.0, 12.0, 12.0],
            [2.0, -4.0, 6.0, 12.0],
            [0.0, -12.0, 8.0, 20.0],
        ]
    )
    torch.testing.assert_close(got, expected)


def test_counts_per_level_faster_rcnn():
    gen = build(AnchorGeneratorConfig())
    sizes = [(200, 304), (100, 152), (50, 76), (25, 38), (13, 19)]
    anchors = gen.grid_anchors(sizes)
    assert gen.num_base_anchors == 3 and gen.num_levels == 5
    assert [a.shape[0] for a in anchors] == [h * w * 3 for h, w in sizes]
    # ratio-1 anchor side is 8 * stride at each level: 32 .. 512
    sides = [float(a[1, 2] - a[1, 0]) for a in anchors]
    assert sides == [32.0, 64.0, 128.0, 256.0, 512.0]


def test_retinanet_octave_scales():
    cfg = AnchorGeneratorConfig(
        strides=(8, 16, 32, 64, 128), scales=None, octave_base_scale=4, scales_per_octave=3
    )
    scales = anchor_scales(cfg)
    torch.testing.assert_close(
        torch.tensor(scales), torch.tensor([4.0, 4 * 2 ** (1 / 3), 4 * 2 ** (2 / 3)])
    )
    assert num_base_anchors(cfg) == 9
    base = base_anchors(cfg)[0]  # stride 8, ratio 0.5 first: w = 8 * sqrt(2) * 4
    torch.testing.assert_close(base[0, 2] - base[0, 0], torch.tensor(8 * math.sqrt(2) * 4))
    torch.testing.assert_close(
        base[1, 2] - base[1, 0], torch.tensor(8 * math.sqrt(2) * 4 * 2 ** (1 / 3))
    )


def test_valid_flags_per_image_pad_shape():
    cfg = AnchorGeneratorConfig(strides=(16,), scales=(8.0,), ratios=(1.0,))
    # batch padded to 64x64 -> 4x4 cells; image 1 padded only to 33x20 -> 3 rows, 2 cols
    flags = valid_flags(cfg, [(4, 4)], torch.tensor([[64, 64], [33, 20]]))[0]
    assert flags.shape == (2, 16)
    assert flags[0].all()
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[:3, :2] = True
    assert torch.equal(flags[1], expected.reshape(-1))
    # with 2 anchors per location each cell's flag is repeated
    cfg2 = AnchorGeneratorConfig(strides=(16,), scales=(8.0,), ratios=(1.0, 2.0))
    flags2 = valid_flags(cfg2, [(4, 4)], torch.tensor([[33, 20]]))[0]
    assert torch.equal(flags2[0], expected.reshape(-1).repeat_interleave(2))


def test_inside_flags_allowed_border():
    anchors = torch.tensor(
        [[-5.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 30.0, 10.0]]
    )
    flags = torch.ones(1, 3, dtype=torch.bool)
    shapes = torch.tensor([[20, 20]])
    assert inside_flags(anchors, flags, shapes, -1).tolist() == [[True, True, True]]
    assert inside_flags(anchors, flags, shapes, 0).tolist() == [[False, True, False]]
    assert inside_flags(anchors, flags, shapes, 10).tolist() == [[True, True, False]]


def test_zero_sized_level_and_errors():
    cfg = AnchorGeneratorConfig(strides=(16,))
    assert grid_anchors(cfg, [(0, 5)])[0].shape == (0, 4)
    with pytest.raises(ValueError, match="2 feature maps for 1 strides"):
        grid_anchors(cfg, [(2, 2), (1, 1)])
    with pytest.raises(ValueError, match="AnchorGeneratorConfig.scales"):
        AnchorGeneratorConfig(octave_base_scale=4, scales_per_octave=3)
    with pytest.raises(ValueError, match="AnchorGeneratorConfig.base_sizes"):
        AnchorGeneratorConfig(base_sizes=(4, 8))
    with pytest.raises(ValueError, match="AnchorGeneratorConfig.ratios"):
        AnchorGeneratorConfig(ratios=(0.0, 1.0))
