"""The sparse-matrix RoIAlign (the CPU's default) equals torchvision's ``roi_align``.

Forward and input gradient, adaptive and fixed sampling, ``aligned`` True and False, with boxes
inside, across every border, fully outside, thinner than one bin, of zero size, inverted, and
large enough for an adaptive grid of 10 samples per side. Only the summation order differs from
torchvision, so float32 agrees to round-off and float64 to 1e-12.
"""

import pytest
import torch
import torchvision

from detfn.ops import auto_backend, multi_level_roi_align, roi_align
from detfn.ops.roi_align import uses_sparse
from detfn.ops.roi_align_matrix import roi_align_matrix

SCALE = 0.5  # feature map 13 x 17 covers an image of 26 x 34 px


def hard_rois(num_random: int = 40, seed: int = 0) -> torch.Tensor:
    """``(batch, x1, y1, x2, y2)`` in image pixels: random boxes plus the edge cases."""
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(num_random, 2, generator=gen) * torch.tensor([44.0, 36.0]) - 6
    wh = torch.rand(num_random, 2, generator=gen) * 30
    random = torch.cat([xy, xy + wh], dim=1)
    special = torch.tensor(
        [
            [0.0, 0.0, 34.0, 26.0],  # the whole image
            [-3.0, -3.0, 5.0, 4.0],  # across the top-left corner
            [28.0, 20.0, 40.0, 31.0],  # across the bottom-right corner
            [-8.0, 2.0, -2.5, 9.0],  # fully left of the image (samples below -1)
            [40.0, 30.0, 48.0, 39.0],  # fully beyond the bottom-right
            [10.0, 10.0, 10.4, 10.3],  # far smaller than one bin
            [5.2, 7.9, 5.7, 20.0],  # thinner than one bin in x only
            [12.0, 12.0, 12.0, 12.0],  # zero size
            [20.0, 15.0, 14.0, 9.0],  # inverted (x2 < x1): a zero adaptive grid when aligned
            [33.5, 0.0, 34.0, 25.9],  # a sliver at the right edge
            [-40.0, -40.0, 80.0, 70.0],  # far larger than the map: adaptive grid > 7
        ]
    )
    boxes = torch.cat([random, special])
    batch = torch.randint(0, 2, (boxes.shape[0], 1), generator=gen).to(boxes.dtype)
    return torch.cat([batch, boxes], dim=1)


def features(dtype=torch.float32, seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 4, 13, 17, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def forward_backward(fn, feats, rois, grad_seed: int = 2):
    x = feats.clone().requires_grad_(True)
    out = fn(x, rois)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed))
    out.backward(grad.to(out.dtype))
    return out.detach(), x.grad


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 1, 2, 3])
@pytest.mark.parametrize("output_size", [7, (3, 5)])
def test_sparse_equals_torchvision_forward_and_backward(aligned, sampling_ratio, output_size):
    feats, rois = features(), hard_rois()
    args = (output_size, SCALE, sampling_ratio, aligned)
    ours, our_grad = forward_backward(
        lambda x, r: roi_align(x, r, *args, backend="sparse"), feats, rois
    )
    ref, ref_grad = forward_backward(
        lambda x, r: torchvision.ops.roi_align(x, r, *args), feats, rois
    )
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(our_grad, ref_grad, rtol=1e-5, atol=2e-6)
    assert ref.abs().sum() > 0 and ref_grad.abs().sum() > 0


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_sparse_equals_torchvision_in_float64(aligned, sampling_ratio):
    feats, rois = features(torch.float64), hard_rois(seed=3).double()
    args = (7, SCALE, sampling_ratio, aligned)
    ours, our_grad = forward_backward(
        lambda x, r: roi_align(x, r, *args, backend="sparse"), feats, rois
    )
    ref, ref_grad = forward_backward(
        lambda x, r: torchvision.ops.roi_align(x, r, *args), feats, rois
    )
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(our_grad, ref_grad, rtol=1e-12, atol=1e-12)


def test_edge_case_values_by_hand():
    # a 1x1 output over a 2x2 box of a map holding 1 + x + 10 y, not aligned, 1 sample: the centre
    feats = (1 + torch.arange(4.0)[None, :] + 10 * torch.arange(3.0)[:, None])[None, None]
    rois = torch.tensor([[0.0, 0.0, 0.0, 2.0, 2.0], [0.0, -4.0, -4.0, -2.0, -2.0]])
    out = roi_align(feats, rois, 1, 1.0, 1, False, backend="sparse")
    assert out[0].item() == pytest.approx(1.0 + 1.0 + 10.0)  # sample at (1, 1)
    assert out[1].item() == 0.0  # sample at (-3, -3): beyond -1, contributes nothing
    # a sample in [-1, 0] is clamped onto the border pixel
    rois = torch.tensor([[0.0, -1.5, -1.5, -0.5, -0.5]])
    assert roi_align(feats, rois, 1, 1.0, 1, False, backend="sparse").item() == 1.0
    # a sample past the last row / column (but within size) is clamped onto the last pixel
    rois = torch.tensor([[0.0, 3.5, 2.5, 4.5, 3.5]])  # sample at (4.0, 3.0) on a 3 x 4 map
    assert roi_align(feats, rois, 1, 1.0, 1, False, backend="sparse").item() == 1 + 3 + 20


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_multi_level_equals_torchvision_per_level(sampling_ratio):
    gen = torch.Generator().manual_seed(5)
    feats = [torch.randn(2, 3, 16 // s, 20 // s, generator=gen) for s in (1, 2, 4)]
    rois = hard_rois(60, seed=6)
    levels = torch.randint(0, 3, (rois.shape[0],), generator=gen)
    scales = [SCALE, SCALE / 2, SCALE / 4]
    leaves = [f.clone().requires_grad_(True) for f in feats]
    ours = multi_level_roi_align(leaves, rois, levels, scales, 7, sampling_ratio, True, "sparse")
    grad = torch.randn(ours.shape, generator=gen)
    our_grads = torch.autograd.grad(ours, leaves, grad)
    ref_leaves = [f.clone().requires_grad_(True) for f in feats]
    ref = torch.zeros_like(ours)
    for level, (feat, scale) in enumerate(zip(ref_leaves, scales)):
        pick = levels == level
        ref[pick] = torchvision.ops.roi_align(feat, rois[pick], 7, scale, sampling_ratio, True)
    ref_grads = torch.autograd.grad(ref, ref_leaves, grad)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=2e-6)
    for mine, theirs in zip(our_grads, ref_grads):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=2e-6)
    # the torchvision backend of the same function agrees too
    tv = multi_level_roi_align(feats, rois, levels, scales, 7, sampling_ratio, True, "torchvision")
    torch.testing.assert_close(tv, ref, rtol=0, atol=0)


def test_bfloat16_features_pool_in_float32_and_return_bfloat16():
    feats, rois = features().bfloat16(), hard_rois()
    out = roi_align(feats, rois, 7, SCALE, 0, True, backend="sparse")
    ref = torchvision.ops.roi_align(feats.float(), rois, 7, SCALE, 0, True)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.bfloat16().float())


def test_adaptive_windows_keep_the_matrix_small():
    # adaptive grid 4 x 4 per bin: 64 (pixel, weight) pairs per bin before summing, at most
    # (4 + 1) ** 2 = 25 after; a 28 px box on a stride-1 map has bins of 4 px.
    rois = torch.tensor([[0.0, 0.3, 0.6, 28.3, 28.6]])
    matrix = roi_align_matrix(
        rois,
        torch.zeros(1, dtype=torch.int64),
        [(1, 40, 40)],
        [1.0],
        (7, 7),
        0,
        True,
        torch.float32,
    )
    per_bin = matrix.crow.diff()
    assert per_bin.max() <= 25
    # every row's weights sum to 1 (an interior box), as an average of bilinear samples must
    sums = torch.zeros(49).index_add_(
        0, torch.repeat_interleave(torch.arange(49), per_bin), matrix.val
    )
    torch.testing.assert_close(sums, torch.ones(49))


def test_a_huge_box_does_not_widen_the_rows_of_the_others():
    # adaptive: the 3 px box has 1x1 samples per bin (2x2 pixels at most), the 280 px one 40x40;
    # each RoI keeps its own window, whatever the other RoIs of the call need
    rois = torch.tensor([[0.0, 1.3, 1.6, 4.3, 4.6], [0.0, 0.0, 0.0, 280.0, 280.0]])
    matrix = roi_align_matrix(
        rois,
        torch.zeros(2, dtype=torch.int64),
        [(1, 300, 300)],
        [1.0],
        (7, 7),
        0,
        True,
        torch.float32,
    )
    per_bin = matrix.crow.diff().view(2, 49)
    assert per_bin[0].max() <= 4
    assert per_bin[1].max() <= 41 * 41


def test_auto_backend_sets_what_auto_means_within_a_block():
    cpu = torch.device("cpu")
    assert uses_sparse(cpu)
    with auto_backend("torchvision"):
        assert not uses_sparse(cpu) and uses_sparse(cpu, "sparse")
    assert uses_sparse(cpu)
    with pytest.raises(ValueError, match="backend must be"), auto_backend("fast"):
        pass
