"""A convolution followed by a per-channel affine map, computed as one convolution.

``conv2d_affine(x, w, s, b) = conv2d(x, w) * s + b = conv2d(x, w * s) + b`` (``s``, ``b`` per
output channel). This is how a backbone applies a norm that does not depend on its input
(FrozenBN, eval-mode BN; see :func:`detfn.models.backbones.norm.conv_norm`): folded into the
convolution, the product and the shift are no longer two passes over the activations in the
forward and one in the backward, but one product over the weights.

Written with autograd alone, the folded weight ``w * s`` would be kept for the backward: one
copy of every trainable convolution weight (90 MiB for ResNet-50) on top of what the unfolded
pair keeps. :class:`_ConvAffine` keeps ``w`` and ``s`` instead and recomputes the product in
the backward, so the fold costs no memory. The backward is torch's own convolution backward
(``aten.convolution_backward``) of the folded weight, with the chain rule through ``w * s``
written out; it works under ``torch.func`` transforms (``setup_context``). A 3x3 kernel at
stride 1 that :func:`detfn.ops.winograd.uses_winograd` takes (ResNet stage 3 on the CPU)
runs Winograd's tiles instead, with the same fold and the same recomputation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from detfn.ops.winograd import uses_winograd, winograd_conv3x3

__all__ = ["conv2d_affine"]


def conv2d_affine(
    x: Tensor,
    weight: Tensor,
    scale: Tensor,
    bias: Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> Tensor:
    """``conv2d(x, weight) * scale + bias`` per output channel, as one convolution.

    Args:
        x (Tensor[B, C_in, H, W]): NCHW or channels-last; the output keeps the layout.
        weight (Tensor[C_out, C_in / groups, kh, kw]): the convolution's weight.
        scale (Tensor[C_out]): per-channel factor (a norm's ``weight / sqrt(var + eps)``).
        bias (Tensor[C_out]): per-channel shift added after the product.
        stride, padding, dilation, groups: as in :func:`torch.nn.functional.conv2d`
            (numeric padding only).

    Returns:
        Tensor[B, C_out, H', W'], in the autocast dtype under autocast (as ``F.conv2d``).
    """
    if _winograd_shape(weight, stride, padding, dilation, groups) and uses_winograd(
        x, weight.shape[0]
    ):
        return winograd_conv3x3(x, weight, bias, scale)
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):  # the dtype F.conv2d would compute in
        x = x.to(torch.get_autocast_dtype(device_type))
    with torch.autocast(device_type, enabled=False):  # the backward runs outside autocast too
        return _ConvAffine.apply(x, weight, scale, bias, stride, padding, dilation, groups)


class _ConvAffine(torch.autograd.Function):
    """Forward ``conv2d(x, w * s, b)`` in ``x``'s dtype (``w * s`` formed in the weight's, then
    cast); the backward recomputes ``w * s`` (see the module)."""

    @staticmethod
    def forward(x, weight, scale, bias, stride, padding, dilation, groups):
        folded = _folded(weight, scale, x.dtype)
        return F.conv2d(x, folded, bias.to(x.dtype), stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, scale, bias, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(x, weight, scale)
        ctx.conv = (stride, padding, dilation, groups)
        ctx.bias_dtype = bias.dtype

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, scale = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        need_x, need_w, need_s, need_b = ctx.needs_input_grad[:4]
        folded = _folded(weight, scale, x.dtype)
        grad_x, grad_folded, grad_b = torch.ops.aten.convolution_backward(
            grad_out,
            x,
            folded,
            [folded.shape[0]],
            list(stride),
            list(padding),
            list(dilation),
            False,
            [0, 0],
            groups,
            [need_x, need_w or need_s, need_b],
        )
        if grad_folded is not None:
            grad_folded = grad_folded.to(weight.dtype)
        grad_w = grad_folded * scale.view(-1, 1, 1, 1) if need_w else None
        grad_s = (grad_folded * weight).sum((1, 2, 3)) if need_s else None
        grad_b = grad_b.to(ctx.bias_dtype) if need_b else None
        return grad_x, grad_w, grad_s, grad_b, None, None, None, None


def _winograd_shape(
    weight: Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> bool:
    """A 3x3 kernel at stride 1 with "same" padding: what :mod:`detfn.ops.winograd` computes."""
    same = tuple(stride) == (1, 1) and tuple(padding) == (1, 1) and tuple(dilation) == (1, 1)
    return weight.shape[2:] == (3, 3) and same and groups == 1


def _folded(weight: Tensor, scale: Tensor, dtype: torch.dtype) -> Tensor:
    """``weight * scale`` per output channel, in ``dtype`` (Tensor[C_out, C_in / g, kh, kw])."""
    return (weight * scale.view(-1, 1, 1, 1)).to(dtype)
