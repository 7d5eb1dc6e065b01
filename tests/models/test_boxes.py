"""detfn.boxes against torchvision and hand-computed values."""

import pytest
import torch
from torchvision import ops

from detfn import boxes as B


def _random_boxes(generator: torch.Generator, *shape: int) -> torch.Tensor:
    xy = torch.rand(*shape, 2, generator=generator) * 50
    wh = torch.rand(*shape, 2, generator=generator) * 30 + 1
    return torch.cat((xy, xy + wh), dim=-1)


def test_box_iou_matches_torchvision_and_hand_value():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 5.0, 15.0, 15.0], [20.0, 20.0, 30.0, 30.0]])
    # intersection 25, union 175
    assert torch.allclose(B.box_iou(a, b), torch.tensor([[25 / 175, 0.0]]))


def test_batched_iou_equals_torchvision_per_row():
    g = torch.Generator().manual_seed(0)
    a, b = _random_boxes(g, 3, 7), _random_boxes(g, 3, 5)
    got = B.batched_box_iou(a, b)
    assert got.shape == (3, 7, 5)
    for i in range(3):
        torch.testing.assert_close(got[i], ops.box_iou(a[i], b[i]))


def test_batched_iof_hand_value_and_padding_rows():
    a = torch.tensor([[[2.0, 2.0, 4.0, 4.0], [0.0, 0.0, 10.0, 10.0]]])
    region = torch.tensor([[[0.0, 0.0, 5.0, 5.0], [0.0, 0.0, 0.0, 0.0]]])
    iof = B.batched_box_iof(a, region)
    # box 0 lies inside the region: IoF 1; box 1 is covered by 25 of 100.
    torch.testing.assert_close(iof, torch.tensor([[[1.0, 0.0], [0.25, 0.0]]]))
    iou = B.batched_box_iou(a, region)
    assert torch.isfinite(iou).all() and iou[0, :, 1].eq(0).all()


def test_zero_boxes_everywhere():
    empty = torch.zeros(2, 0, 4)
    some = torch.ones(2, 3, 4)
    assert B.batched_box_iou(empty, some).shape == (2, 0, 3)
    assert B.batched_box_iof(some, empty).shape == (2, 3, 0)
    assert B.box_iou(torch.zeros(0, 4), torch.zeros(4, 4)).shape == (0, 4)
    assert B.box_area(empty).shape == (2, 0)
    assert B.clip_boxes(empty, (5, 5)).shape == (2, 0, 4)
    assert B.clip_boxes(empty, torch.tensor([[5, 5], [6, 6]])).shape == (2, 0, 4)
    for src in B.FORMATS:
        for dst in B.FORMATS:
            assert B.convert(torch.zeros(0, 4), src, dst).shape == (0, 4)


def test_area_matches_torchvision():
    g = torch.Generator().manual_seed(1)
    boxes = _random_boxes(g, 9)
    torch.testing.assert_close(B.box_area(boxes), ops.box_area(boxes))


def test_clip_with_tuple_and_per_image_shapes():
    boxes = torch.tensor([[[-5.0, -1.0, 50.0, 30.0]], [[-5.0, -1.0, 50.0, 30.0]]])
    torch.testing.assert_close(
        B.clip_boxes(boxes, (20, 40)), torch.tensor([[[0.0, 0.0, 40.0, 20.0]]] * 2)
    )
    shapes = torch.tensor([[20, 40], [25, 10]])  # (H, W) per image
    expected = torch.tensor([[[0.0, 0.0, 40.0, 20.0]], [[0.0, 0.0, 10.0, 25.0]]])
    torch.testing.assert_close(B.clip_boxes(boxes, shapes), expected)
    assert boxes[0, 0, 0] == -5.0  # input untouched


def test_converters_agree_with_torchvision_and_round_trip():
    g = torch.Generator().manual_seed(2)
    boxes = _random_boxes(g, 4, 6)
    for fmt in ("cxcywh", "xywh"):
        converted = B.convert(boxes, "xyxy", fmt)
        torch.testing.assert_close(
            converted.view(-1, 4), ops.box_convert(boxes.view(-1, 4), "xyxy", fmt)
        )
        torch.testing.assert_close(B.convert(converted, fmt, "xyxy"), boxes)
    torch.testing.assert_close(
        B.convert(torch.tensor([1.0, 2.0, 3.0, 4.0]), "xywh", "cxcywh"),
        torch.tensor([2.5, 4.0, 3.0, 4.0]),
    )


def test_bad_inputs_raise_one_line_errors():
    with pytest.raises(ValueError, match="src format 'xyxz'"):
        B.convert(torch.zeros(1, 4), "xyxz", "xyxy")
    with pytest.raises(ValueError, match=r"shape \[\.\.\., 4\]"):
        B.box_area(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="same B"):
        B.batched_box_iou(torch.zeros(2, 3, 4), torch.zeros(3, 3, 4))
    with pytest.raises(ValueError, match="batched_box_iou"):
        B.box_iou(torch.zeros(1, 2, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="prefix"):
        B.clip_boxes(torch.zeros(2, 3, 4), torch.zeros(3, 2))
