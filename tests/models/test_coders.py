"""DeltaXYWHBBoxCoder: hand-computed values, round trip, clamps, batching."""

import math

import pytest
import torch

from detfn.models.coders import (
    DeltaXYWHBBoxCoderConfig,
    build_delta_xywh_coder,
    decode_deltas,
    encode_deltas,
)
from detfn.registry import build


def test_encode_hand_computed():
    anchor = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), size (10, 20)
    gt = torch.tensor([[2.0, 4.0, 22.0, 24.0]])  # centre (12, 14), size (20, 20)
    deltas = encode_deltas(anchor, gt)
    expected = torch.tensor([[0.7, 0.2, math.log(2.0), 0.0]])
    torch.testing.assert_close(deltas, expected)
    stds = (0.1, 0.1, 0.2, 0.2)
    torch.testing.assert_close(encode_deltas(anchor, gt, stds=stds), expected / torch.tensor(stds))


def test_decode_hand_computed_with_clip():
    anchor = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    deltas = torch.tensor([[0.7, 0.2, math.log(2.0), 0.0]])
    torch.testing.assert_close(
        decode_deltas(anchor, deltas), torch.tensor([[2.0, 4.0, 22.0, 24.0]])
    )
    clipped = decode_deltas(anchor, deltas, max_shape=(15, 18))
    torch.testing.assert_close(clipped, torch.tensor([[2.0, 4.0, 18.0, 15.0]]))
    unclipped = decode_deltas(anchor, deltas, max_shape=(15, 18), clip_border=False)
    torch.testing.assert_close(unclipped, torch.tensor([[2.0, 4.0, 22.0, 24.0]]))


def test_wh_ratio_clip_bounds_growth():
    anchor = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    huge = torch.tensor([[0.0, 0.0, 100.0, -100.0]])
    out = decode_deltas(anchor, huge)
    width, height = out[0, 2] - out[0, 0], out[0, 3] - out[0, 1]
    torch.testing.assert_close(width, torch.tensor(1000.0))  # 16 * 1000/16
    torch.testing.assert_close(height, torch.tensor(16.0 * 16 / 1000))


def test_encode_then_decode_is_identity_batched():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(2, 5, 2, generator=g) * 100
    anchors = torch.cat((xy, xy + torch.rand(2, 5, 2, generator=g) * 50 + 4), -1)
    xy = torch.rand(2, 5, 2, generator=g) * 100
    gts = torch.cat((xy, xy + torch.rand(2, 5, 2, generator=g) * 50 + 4), -1)
    cfg = DeltaXYWHBBoxCoderConfig(
        target_means=(0.1, -0.1, 0.0, 0.05), target_stds=(0.1, 0.1, 0.2, 0.2)
    )
    coder = build(cfg)
    deltas = coder.encode(anchors, gts)
    assert deltas.shape == (2, 5, 4)
    torch.testing.assert_close(coder.decode(anchors, deltas), gts, rtol=1e-5, atol=1e-4)
    # per-image max_shape [B, 2] clips each image separately
    shapes = torch.tensor([[60, 70], [200, 200]])
    decoded = coder.decode(anchors, deltas, max_shape=shapes)
    assert decoded[0, :, 0::2].max() <= 70 and decoded[0, :, 1::2].max() <= 60
    torch.testing.assert_close(decoded[1], gts[1].clamp(0, 200), rtol=1e-5, atol=1e-4)


def test_zero_boxes():
    coder = build_delta_xywh_coder(DeltaXYWHBBoxCoderConfig())
    empty = torch.zeros(3, 0, 4)
    assert coder.encode(empty, empty).shape == (3, 0, 4)
    assert coder.decode(empty, empty, max_shape=torch.tensor([[5, 5]] * 3)).shape == (3, 0, 4)


def test_config_validation_and_shape_errors():
    with pytest.raises(ValueError, match="DeltaXYWHBBoxCoderConfig.target_stds"):
        DeltaXYWHBBoxCoderConfig(target_stds=(1.0, 1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="DeltaXYWHBBoxCoderConfig.target_means"):
        DeltaXYWHBBoxCoderConfig(target_means=(0.0, 0.0))
    with pytest.raises(ValueError, match="same shape"):
        encode_deltas(torch.zeros(2, 4), torch.zeros(3, 4))
