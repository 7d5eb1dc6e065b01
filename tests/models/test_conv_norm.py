"""``conv_norm``: a convolution followed by a fixed affine norm (FrozenBN, eval-mode BN) is
computed with the norm folded into the convolution's weight and bias; the function and its
gradients are those of ``norm(conv(x))``. Norms that compute statistics are left alone.

The reference is the unfolded pair in float64 (torchvision's ``FrozenBatchNorm2d`` and torch's
``BatchNorm2d`` themselves), so the comparison is free of float32 round-off.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detfn.models.backbones.norm import conv_norm, fixed_affine


def random_norm(kind: str, channels: int, g: torch.Generator) -> nn.Module:
    """A norm with non-trivial scale, shift and running statistics."""
    norm = FrozenBatchNorm2d(channels) if kind == "FrozenBN" else nn.BatchNorm2d(channels)
    norm.weight.data = torch.rand(channels, generator=g) + 0.5
    norm.bias.data = torch.randn(channels, generator=g)
    norm.running_mean = torch.randn(channels, generator=g)
    norm.running_var = torch.rand(channels, generator=g) + 0.1
    return norm.double()


@pytest.mark.parametrize("kind", ["FrozenBN", "BN"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_folded_norm_is_the_norm_of_the_conv(kind, bias, layout):
    g = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=bias).double()
    norm = random_norm(kind, 8, g).eval()
    x = torch.randn(2, 6, 9, 11, generator=g, dtype=torch.float64).contiguous(memory_format=layout)
    x.requires_grad_()
    folded = conv_norm(conv, norm, x)
    assert folded.is_contiguous(memory_format=layout)
    reference = norm(conv(x))
    torch.testing.assert_close(folded, reference, rtol=1e-12, atol=1e-12)

    grad_out = torch.randn(reference.shape, generator=g, dtype=torch.float64)
    params = [x, *conv.parameters(), *(p for p in norm.parameters() if p.requires_grad)]
    grads = torch.autograd.grad(folded, params, grad_out)
    expected = torch.autograd.grad(reference, params, grad_out)
    assert len(grads) == (4 if kind == "BN" else 2) + bias  # BN's affine parameters train
    for ours, ref in zip(grads, expected):
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)


def test_fixed_affine_hand_computed():
    """scale = w / sqrt(var + eps), shift = b - mean * scale (eps = 1e-5 for both norms)."""
    norm = FrozenBatchNorm2d(1)
    norm.weight.fill_(2.0), norm.bias.fill_(1.0), norm.running_mean.fill_(3.0)
    norm.running_var.fill_(4.0 - 1e-5)
    scale, shift = fixed_affine(norm)
    assert scale.item() == pytest.approx(1.0) and shift.item() == pytest.approx(-2.0)


@pytest.mark.parametrize("kind", ["BN-train", "GN", "BN-batch-stats"])
def test_norms_with_statistics_are_not_folded(kind):
    """Training-mode BN (which also updates its running statistics), GN and BN without running
    statistics normalize by their input: conv_norm calls them, bit for bit."""
    g = torch.Generator().manual_seed(1)
    conv = nn.Conv2d(4, 32, 1)
    if kind == "GN":
        norm = nn.GroupNorm(8, 32)
    elif kind == "BN-train":
        norm = nn.BatchNorm2d(32).train()
    else:
        norm = nn.BatchNorm2d(32, track_running_stats=False).eval()
    assert fixed_affine(norm) is None
    x = torch.randn(2, 4, 5, 5, generator=g)
    running_mean = getattr(norm, "running_mean", None)
    before = None if running_mean is None else running_mean.clone()
    out = conv_norm(conv, norm, x)
    if kind == "BN-train":
        assert not torch.equal(norm.running_mean, before)  # the module ran and updated them
        norm.running_mean.copy_(before)
    assert torch.equal(out, norm(conv(x)))
