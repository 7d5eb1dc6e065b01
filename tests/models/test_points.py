"""Point priors: mmdetection's offset-0.5 points, torchvision's offset-0 points, strides and
valid flags, by hand."""

from __future__ import annotations

import pytest
import torch

from detfn.models.points import (
    PointGeneratorConfig,
    grid_points,
    point_strides,
    point_valid_flags,
)
from detfn.registry import build


def test_points_with_half_stride_offset_are_cell_centres():
    cfg = PointGeneratorConfig(strides=(8, 16), offset=0.5)
    level0, level1 = grid_points(cfg, [(2, 3), (1, 1)])
    expected = [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]  # x fastest
    assert level0.tolist() == expected
    assert level1.tolist() == [[8, 8]]


def test_torchvision_offset_zero_points_are_cell_corners():
    gen = build(PointGeneratorConfig(strides=(8,), offset=0.0))
    (points,) = gen.grid_points([(2, 2)])
    assert points.tolist() == [[0, 0], [8, 0], [0, 8], [8, 8]]
    (strides,) = gen.point_strides([(2, 2)])
    assert strides.tolist() == [8.0] * 4


def test_strides_and_valid_flags():
    cfg = PointGeneratorConfig(strides=(8, 16))
    s0, s1 = point_strides(cfg, [(3, 4), (2, 2)])
    assert s0.shape == (12,) and s1.tolist() == [16.0] * 4
    # Image padded to 10 x 20: ceil(10 / 8) = 2 rows, ceil(20 / 8) = 3 columns of level 0.
    (f0, f1) = point_valid_flags(cfg, [(3, 4), (2, 2)], torch.tensor([[10.0, 20.0], [24, 32]]))
    assert f0[0].view(3, 4).tolist() == [[True] * 3 + [False]] * 2 + [[False] * 4]
    assert f1[0].tolist() == [True, True, False, False]  # ceil(10 / 16) = 1, ceil(20 / 16) = 2
    assert bool(f0[1].all()) and bool(f1[1].all())


def test_bad_config_and_level_count():
    with pytest.raises(ValueError, match="PointGeneratorConfig.offset"):
        PointGeneratorConfig(offset=1.0)
    with pytest.raises(ValueError, match="num_outs"):
        grid_points(PointGeneratorConfig(), [(2, 2)])


def test_prior_generator_interface_gives_zero_size_boxes():
    gen = build(PointGeneratorConfig(strides=(8, 16)))
    assert (gen.num_base_priors, gen.num_levels, gen.strides) == (1, 2, (8, 16))
    boxes, _ = gen.grid_priors([(1, 2), (1, 1)])
    assert boxes.tolist() == [[4, 4, 4, 4], [12, 4, 12, 4]]
