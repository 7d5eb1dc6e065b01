"""Winograd F(4x4, 3x3) convolution against torch's direct kernel (float64: the same
mathematics; float32: round-off of the order the module states), and its dispatch rule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detfn.ops import Conv3x3, conv3x3, conv_backend, uses_winograd, winograd_conv3x3
from detfn.ops.winograd import BIAS_ROW, _toom_cook, _transforms


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


def forward_backward(conv, x, weight, bias, grad):
    x, weight = x.clone().requires_grad_(), weight.clone().requires_grad_()
    bias = None if bias is None else bias.clone().requires_grad_()
    out = conv(x, weight, bias)
    out.backward(grad)
    return out, x.grad, weight.grad, None if bias is None else bias.grad


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize(
    "shape",  # (B, C_in, C_out, H, W): whole tiles, ragged edges, a single pixel, bands
    [
        (2, 5, 7, 8, 12),
        (2, 5, 7, 9, 11),
        (1, 3, 4, 1, 1),
        (2, 16, 8, 38, 50),
        (2, 3, 4, 80, 101),  # 20 x 26 tiles: bands of 9 tile rows
        (1, 2, 3, 9, 1030),  # 258 tiles per row: bands of one row
    ],
)
@pytest.mark.parametrize("with_bias", [True, False])
def test_float64_equals_the_direct_convolution_forward_and_backward(layout, shape, with_bias):
    batch, c_in, c_out, height, width = shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, c_in, height, width, generator=g, dtype=torch.float64)
    x = x.contiguous(memory_format=layout)
    weight = torch.randn(c_out, c_in, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(c_out, generator=g, dtype=torch.float64) if with_bias else None
    grad = torch.randn(batch, c_out, height, width, generator=g, dtype=torch.float64)
    grad = grad.contiguous(memory_format=layout)

    ours = forward_backward(winograd_conv3x3, x, weight, bias, grad)
    direct = forward_backward(lambda a, w, b: F.conv2d(a, w, b, padding=1), x, weight, bias, grad)
    assert ours[0].is_contiguous(memory_format=layout)
    for got, expected in zip(ours, direct):
        if expected is not None:
            torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_float32_error_is_a_few_units_of_round_off():
    """A head layer: 256 channels, ReLU input. The direct kernel's error (against float64) is
    about 2e-7 of the norm; Winograd's measured 1.7e-6 (points 0, ±1, 1/2, -2); Lavin's
    points 0, ±1, ±2 gave 2.7e-6."""
    g = torch.Generator().manual_seed(0)
    x = (
        torch.randn(2, 256, 32, 40, generator=g)
        .relu()
        .contiguous(memory_format=torch.channels_last)
    )
    weight = torch.randn(256, 256, 3, 3, generator=g) * 0.02
    grad = torch.randn(2, 256, 32, 40, generator=g).contiguous(memory_format=torch.channels_last)
    exact = forward_backward(
        lambda a, w, b: F.conv2d(a, w, b, padding=1),
        x.double(),
        weight.double(),
        None,
        grad.double(),
    )
    ours = forward_backward(winograd_conv3x3, x, weight, None, grad)
    for got, expected in zip(ours[:3], exact[:3]):
        assert relative(got, expected) < 4e-6


def test_toom_cook_matrices_compute_the_one_dimensional_correlation():
    """``At ((G g) * (Bt d)) = correlate(d, g)`` for Lavin & Gray's points and detfn's, and the
    bias row of ``kron(At, At)`` is all ones."""
    g = torch.Generator().manual_seed(1)
    d = torch.randn(6, dtype=torch.float64, generator=g)
    kernel = torch.randn(3, dtype=torch.float64, generator=g)
    expected = torch.stack([d[i : i + 3] @ kernel for i in range(4)])
    for points in [(0.0, 1.0, -1.0, 2.0, -2.0), (0.0, 1.0, -1.0, 0.5, -2.0)]:
        bt, gm, at = _toom_cook(points)
        torch.testing.assert_close(
            at @ ((gm @ kernel) * (bt @ d)), expected, rtol=1e-12, atol=1e-12
        )
    kout = _transforms(torch.float64, torch.device("cpu"))[2]
    assert torch.equal(kout[:, BIAS_ROW], torch.ones(16, dtype=torch.float64))


def test_gradients_under_torch_func_equal_autograd_of_the_direct_convolution():
    torch.manual_seed(0)
    module = Conv3x3(8, 6)
    x = torch.randn(2, 8, 12, 16)
    params = {k: v.detach() for k, v in module.named_parameters()}

    def loss(p):
        with conv_backend("winograd"):
            return torch.func.functional_call(module, p, (x,)).square().sum()

    grads = torch.func.grad(loss)(params)
    weight = module.weight.detach().requires_grad_()
    bias = module.bias.detach().requires_grad_()
    F.conv2d(x, weight, bias, padding=1).square().sum().backward()
    assert relative(grads["weight"], weight.grad) < 1e-5
    assert relative(grads["bias"], bias.grad) < 1e-5


def test_auto_uses_winograd_only_where_it_pays():
    head_level = torch.zeros(2, 256, 64, 80)  # 640 tiles, 256 channels
    assert uses_winograd(head_level, 256)
    assert not uses_winograd(torch.zeros(2, 256, 16, 20), 256)  # 40 tiles
    assert not uses_winograd(head_level, 36)  # a box-regression output: 36 channels
    assert not uses_winograd(torch.zeros(2, 128, 64, 80), 128)  # a ResNet stage-2 width
    assert not uses_winograd(head_level.double(), 256)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not uses_winograd(head_level, 256)
    with conv_backend("direct"):
        assert not uses_winograd(head_level, 256)
    with conv_backend("winograd"):
        assert uses_winograd(torch.zeros(1, 3, 4, 4), 2)
    assert uses_winograd(head_level, 256)  # the block restored "auto"


def test_conv3x3_under_bf16_autocast_runs_torch_convolution():
    x = torch.randn(2, 256, 32, 40)
    weight = torch.randn(256, 256, 3, 3) * 0.02
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv3x3(x, weight)
    assert out.dtype == torch.bfloat16


def test_conv3x3_module_is_a_drop_in_conv2d():
    torch.manual_seed(0)
    ours, theirs = Conv3x3(4, 5), nn.Conv2d(4, 5, 3, padding=1)
    assert isinstance(ours, nn.Conv2d)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert Conv3x3(4, 5, bias=False).bias is None


def test_bad_arguments_name_the_value():
    with pytest.raises(
        ValueError, match=r"needs a \[C_out, 4, 3, 3\] weight .* got \(5, 4, 1, 1\)"
    ):
        winograd_conv3x3(torch.zeros(1, 4, 8, 8), torch.zeros(5, 4, 1, 1))
    with pytest.raises(ValueError, match="backend must be auto, winograd or direct, got 'fast'"):
        conv3x3(torch.zeros(1, 4, 8, 8), torch.zeros(5, 4, 3, 3), backend="fast")  # type: ignore[arg-type]


def test_a_folded_norm_runs_winograd_with_the_gradients_of_the_unfolded_pair():
    """``conv2d_affine`` (FrozenBN folded into a ResNet 3x3 conv) on a Winograd-sized input:
    the output and the gradients of x, weight, scale and shift equal float64's
    ``conv2d(x, w) * s + b``."""
    from detfn.ops import conv2d_affine

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 256, 32, 40, generator=g).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(256, 256, 3, 3, generator=g) * 0.03
    scale, shift = torch.rand(256, generator=g) + 0.5, torch.randn(256, generator=g)
    grad = torch.randn(2, 256, 32, 40, generator=g)
    assert uses_winograd(x, 256)

    def run(fn, *tensors):
        leaves = [t.clone().requires_grad_() for t in tensors]
        out = fn(*leaves)
        out.backward(grad.to(out.dtype))
        return [out] + [t.grad for t in leaves]

    ours = run(
        lambda a, w, s, b: conv2d_affine(a, w, s, b, (1, 1), (1, 1), (1, 1), 1),
        x,
        weight,
        scale,
        shift,
    )
    exact = run(
        lambda a, w, s, b: F.conv2d(a, w, padding=1) * s.view(-1, 1, 1) + b.view(-1, 1, 1),
        x.double(),
        weight.double(),
        scale.double(),
        shift.double(),
    )
    for got, expected in zip(ours, exact):
        assert relative(got, expected) < 4e-6
