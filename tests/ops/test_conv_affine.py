"""``conv2d_affine``: ``conv2d(x, w) * s + b`` as one convolution, with a hand-written backward
that recomputes ``w * s`` instead of keeping it. Checked against the unfolded expression in
float64 (values, ``gradcheck``, ``torch.func.grad``) and by what its backward keeps alive."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from detfn.ops import conv2d_affine

CONV = {"stride": (2, 1), "padding": (1, 2), "dilation": (1, 2), "groups": 2}


def inputs(layout=torch.contiguous_format, requires_grad=True):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 7, 9, generator=g, dtype=torch.float64)
    tensors = (
        x.contiguous(memory_format=layout),
        torch.randn(6, 2, 3, 3, generator=g, dtype=torch.float64),
        torch.rand(6, generator=g, dtype=torch.float64) + 0.5,
        torch.randn(6, generator=g, dtype=torch.float64),
    )
    return tuple(t.requires_grad_(requires_grad) for t in tensors)


def unfolded(x, weight, scale, bias):
    out = F.conv2d(x, weight, None, CONV["stride"], CONV["padding"], CONV["dilation"], 2)
    return out * scale.view(-1, 1, 1) + bias.view(-1, 1, 1)


def folded(x, weight, scale, bias):
    return conv2d_affine(x, weight, scale, bias, **CONV)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_values_and_gradients_equal_the_unfolded_expression(layout):
    args = inputs(layout)
    out = folded(*args)
    assert out.is_contiguous(memory_format=layout)
    torch.testing.assert_close(out, unfolded(*args), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(folded, args)
    grad_out = torch.randn_like(out)
    ours = torch.autograd.grad(out, args, grad_out)
    expected = torch.autograd.grad(unfolded(*args), args, grad_out)
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_only_the_needed_gradients_are_computed():
    """A frozen weight and scale (FrozenBN under a trainable input) get no gradient."""
    x, weight, scale, bias = inputs(requires_grad=False)
    x.requires_grad_()
    (grad_x,) = torch.autograd.grad(folded(x, weight, scale, bias).sum(), [x])
    (expected,) = torch.autograd.grad(unfolded(x, weight, scale, bias).sum(), [x])
    torch.testing.assert_close(grad_x, expected, rtol=1e-12, atol=1e-12)


def test_torch_func_grad():
    args = inputs(requires_grad=False)
    loss = lambda w, s: folded(args[0], w, s, args[3]).square().sum()  # noqa: E731
    reference = lambda w, s: unfolded(args[0], w, s, args[3]).square().sum()  # noqa: E731
    ours = torch.func.grad(loss, argnums=(0, 1))(args[1], args[2])
    expected = torch.func.grad(reference, argnums=(0, 1))(args[1], args[2])
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def saved_bytes(fn, args) -> int:
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args)
    return total


def test_the_backward_keeps_no_folded_weight():
    """Saved for the backward: the input, the weight and the scale. That is what the unfolded
    pair keeps under a FrozenBN scale (a folded ``w * s`` kept alive would be one more weight
    per convolution); with a trainable scale the unfolded pair keeps the convolution's output
    as well."""
    args = inputs()
    x, weight, scale, bias = args
    expected = sum(t.numel() * t.element_size() for t in (x, weight, scale))
    assert saved_bytes(folded, args) == expected
    frozen = (x, weight, scale.detach(), bias.detach())
    assert saved_bytes(unfolded, frozen) == expected
    assert saved_bytes(unfolded, args) > expected


def test_under_autocast_it_computes_in_the_autocast_dtype():
    """As ``F.conv2d`` does under autocast: bfloat16 output, float32 gradients of float32
    inputs, values those of the float32 computation to bfloat16 precision."""
    x, weight, scale, bias = (t.detach().float().requires_grad_() for t in inputs())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = folded(x, weight, scale, bias)
    assert out.dtype == torch.bfloat16
    grads = torch.autograd.grad(out.float().square().sum(), [x, weight, scale, bias])
    assert all(g.dtype == torch.float32 for g in grads)
    reference = unfolded(x, weight, scale, bias)
    expected = torch.autograd.grad(reference.square().sum(), [x, weight, scale, bias])
    torch.testing.assert_close(out.float(), reference, rtol=2e-2, atol=5e-2)
    for ours, ref in zip(grads, expected):
        scale_ = ref.abs().max()
        torch.testing.assert_close(ours / scale_, ref / scale_, rtol=0, atol=3e-2)
