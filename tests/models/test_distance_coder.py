"""Distance-to-point coder: hand-computed encode, decode, round trip, clipping and max_dis."""

from __future__ import annotations

import pytest
import torch

from detfn.models.distance_coder import DistancePointBBoxCoderConfig, boxes_to_distances
from detfn.registry import build


def test_hand_computed_encode_and_round_trip():
    coder = build(DistancePointBBoxCoderConfig())
    points = torch.tensor([[10.0, 20.0], [0.0, 0.0]])
    boxes = torch.tensor([[4.0, 5.0, 30.0, 50.0], [-2.0, -3.0, 4.0, 5.0]])
    dist = coder.encode(points, boxes)
    assert dist.tolist() == [[6.0, 15.0, 20.0, 30.0], [2.0, 3.0, 4.0, 5.0]]
    torch.testing.assert_close(coder.decode(points, dist), boxes)


def test_round_trip_batched_random():
    gen = torch.Generator().manual_seed(0)
    points = torch.rand(2, 7, 2, generator=gen) * 50
    xy = torch.rand(2, 7, 2, generator=gen) * 50
    boxes = torch.cat((xy, xy + torch.rand(2, 7, 2, generator=gen) * 30 + 1), -1)
    coder = build(DistancePointBBoxCoderConfig())
    torch.testing.assert_close(coder.decode(points, coder.encode(points, boxes)), boxes)


def test_decode_clips_to_each_image_unless_disabled():
    points = torch.tensor([[[10.0, 20.0]], [[10.0, 20.0]]])
    dist = torch.tensor([[[20.0, 30.0, 100.0, 100.0]], [[20.0, 30.0, 100.0, 100.0]]])
    shapes = torch.tensor([[60.0, 80.0], [200.0, 50.0]])  # (h, w)
    clipped = build(DistancePointBBoxCoderConfig()).decode(points, dist, max_shape=shapes)
    assert clipped.tolist() == [[[0.0, 0.0, 80.0, 60.0]], [[0.0, 0.0, 50.0, 120.0]]]
    raw = build(DistancePointBBoxCoderConfig(clip_border=False)).decode(points, dist, shapes)
    assert raw.tolist() == [[[-10.0, -10.0, 110.0, 120.0]]] * 2


def test_max_dis_clamps_and_bad_shapes_fail():
    d = boxes_to_distances(torch.tensor([[10.0, 10.0]]), torch.tensor([[12.0, 0.0, 40.0, 11.0]]))
    assert d.tolist() == [[-2.0, 10.0, 30.0, 1.0]]  # outside on the left: negative
    clamped = boxes_to_distances(
        torch.tensor([[10.0, 10.0]]), torch.tensor([[12.0, 0.0, 40.0, 11.0]]), max_dis=16
    )
    torch.testing.assert_close(clamped, torch.tensor([[0.0, 10.0, 15.9, 1.0]]))
    with pytest.raises(ValueError, match="points must be"):
        boxes_to_distances(torch.zeros(3, 2), torch.zeros(2, 4))


def test_prior_boxes_code_from_their_centres():
    coder = build(DistancePointBBoxCoderConfig())
    points = torch.tensor([[10.0, 20.0]])
    as_boxes = torch.tensor([[10.0, 20.0, 10.0, 20.0]])  # a point as a zero-size box
    anchors = torch.tensor([[6.0, 16.0, 14.0, 24.0]])  # centre (10, 20)
    boxes = torch.tensor([[4.0, 5.0, 30.0, 50.0]])
    for priors in (as_boxes, anchors):
        assert torch.equal(coder.encode(priors, boxes), coder.encode(points, boxes))
        assert torch.equal(coder.decode(priors, coder.encode(points, boxes)), boxes)
