"""SingleRoIExtractor: level mapping by hand and pooling equal to a direct torchvision roi_align."""

import math

import pytest
import torch
import torchvision

from detfn import registry
from detfn.models.roi_heads.roi_extractor import SingleRoIExtractorConfig, map_roi_levels


def _roi(side: float, batch: int = 0, x: float = 0.0, y: float = 0.0) -> list[float]:
    return [batch, x, y, x + side, y + side]


def test_level_mapping_by_hand():
    # side s -> floor(log2(s / 56)), clamped to [0, 3]
    sides = [10.0, 111.0, 112.0, 223.0, 224.0, 447.0, 448.0, 900.0, 2000.0]
    expected = [0, 0, 1, 1, 2, 2, 3, 3, 3]
    rois = torch.tensor([_roi(s) for s in sides])
    assert map_roi_levels(rois, 4, 56).tolist() == expected


def test_level_mapping_non_square_and_degenerate():
    # 56 x 224 -> sqrt = 112 -> level 1; zero area -> level 0 (log2 of 1e-6, clamped)
    rois = torch.tensor([[0, 0, 0, 56, 224], [0, 5, 5, 5, 40], [0, 0, 0, 300, 1000]])
    expected = [1, 0, min(3, math.floor(math.log2(math.sqrt(300 * 1000) / 56)))]
    assert map_roi_levels(rois, 4, 56).tolist() == expected


def _pyramid(batch: int = 2, channels: int = 3, size: int = 256):
    gen = torch.Generator().manual_seed(0)
    strides = (4, 8, 16, 32)
    return [torch.randn(batch, channels, size // s, size // s, generator=gen) for s in strides]


def test_output_equals_direct_roi_align_on_the_mapped_level():
    feats = _pyramid()
    rois = torch.tensor(
        [
            _roi(60.0, 1, 10, 20),  # level 0
            _roi(150.0, 0, 30, 5),  # level 1
            _roi(20.0, 0, 100, 100),  # level 0
            _roi(300.0, 1, 0, 0),  # level 2
            _roi(500.0, 0, 3, 7),  # level 3
            _roi(120.0, 1, 50, 60),  # level 1
        ]
    )
    levels = [0, 1, 0, 2, 3, 1]
    extractor = registry.build(SingleRoIExtractorConfig())
    out = extractor(feats + [torch.zeros(2, 3, 4, 4)], rois)  # a 5th (P6) level is ignored
    assert out.shape == (6, 3, 7, 7)
    for i, level in enumerate(levels):
        stride = (4, 8, 16, 32)[level]
        ref = torchvision.ops.roi_align(feats[level], rois[i : i + 1], 7, 1 / stride, 0, True)
        # the CPU's sparse RoIAlign sums in another order than torchvision: round-off only
        torch.testing.assert_close(out[i : i + 1], ref, rtol=1e-5, atol=1e-6)


def test_gradient_reaches_each_used_level_only():
    feats = [f.requires_grad_(True) for f in _pyramid()]
    rois = torch.tensor([_roi(40.0, 0, 8, 8), _roi(260.0, 1, 0, 0)])  # levels 0 and 2
    out = registry.build(SingleRoIExtractorConfig())(feats, rois)
    out.sum().backward()
    used = [f.grad is not None and f.grad.abs().sum().item() > 0 for f in feats]
    assert used == [True, False, True, False]


def test_empty_rois_and_errors():
    feats = _pyramid()
    extractor = registry.build(SingleRoIExtractorConfig())
    assert extractor(feats, torch.zeros(0, 5)).shape == (0, 3, 7, 7)
    with pytest.raises(ValueError, match="got 2 feature maps"):
        extractor(feats[:2], torch.zeros(0, 5))
    with pytest.raises(ValueError, match="SingleRoIExtractorConfig.sampling_ratio must be >= 0"):
        SingleRoIExtractorConfig(sampling_ratio=-1)
