"""RoIAlign that works under ``torch.func`` transforms.

torchvision 0.29 registers the backward of ``torchvision::roi_align`` through
``torch.library.register_autograd``; the ``autograd.Function`` torch generates from it has no
``setup_context``, so ``torch.func.grad`` / ``grad_and_value`` / ``torch.compile`` of a grad
transform fail on it (pytorch/pytorch#168393, #170834, #179652). torchvision 0.26 and older
register a C++ autograd node instead, which functorch refuses outright ("cannot use C++
torch::autograd::Function with functorch transforms"). :class:`RoIAlignFunction` calls the same
two torchvision kernels (forward and ``_roi_align_backward``) under ``no_grad`` inside Functions
that define ``setup_context``, so its forward and its input gradient are torchvision's (bit for
bit on CPU; the CUDA backward kernel sums with atomics, so there as in torchvision the last bits
vary from run to run).

No gradient flows to ``rois`` (torchvision does not compute one either). The backward is a
second Function whose own gradient is the forward (RoIAlign is linear in its input), so double
backward with respect to the features works too.
"""

from __future__ import annotations

from typing import Any

import torch
import torchvision  # noqa: F401  (registers torch.ops.torchvision.*)
from torch import Tensor

__all__ = ["RoIAlignBackwardFunction", "RoIAlignFunction", "roi_align"]


class RoIAlignFunction(torch.autograd.Function):
    """``torchvision::roi_align`` with a functorch-compatible autograd formula."""

    @staticmethod
    def forward(
        input: Tensor,
        rois: Tensor,
        spatial_scale: float,
        output_size: tuple[int, int],
        sampling_ratio: int,
        aligned: bool,
    ) -> Tensor:
        # The kernels need one dtype; like torchvision's autocast rule, compute in the wider one
        # (bf16 features with float32 rois pool in float32) and return the input's dtype.
        dtype = torch.promote_types(input.dtype, rois.dtype)
        # no_grad: the op must not record the torchvision-generated autograd node.
        with torch.no_grad():
            output = torch.ops.torchvision.roi_align(
                input.to(dtype),
                rois.to(dtype),
                spatial_scale,
                output_size[0],
                output_size[1],
                sampling_ratio,
                aligned,
            )
        return output.to(input.dtype)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        input, rois, spatial_scale, output_size, sampling_ratio, aligned = inputs
        ctx.save_for_backward(rois)
        ctx.args = (spatial_scale, output_size, sampling_ratio, aligned)
        ctx.input_shape = tuple(input.shape)
        ctx.input_dtype = input.dtype

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        (rois,) = ctx.saved_tensors
        # The backward is itself a Function (not a raw kernel call): under torch.func.grad a
        # Function's forward runs with the transform lowered, which is what lets torchvision
        # builds whose kernels carry a C++ autograd node (0.26 and older) run it at all.
        grad_input = RoIAlignBackwardFunction.apply(
            grad_output, rois, *ctx.args, ctx.input_shape, ctx.input_dtype
        )
        return grad_input, None, None, None, None, None


class RoIAlignBackwardFunction(torch.autograd.Function):
    """The input gradient of RoIAlign (``torchvision::_roi_align_backward``).

    RoIAlign is linear in its input, so the gradient of this backward is the forward again:
    double backward with respect to the features works.
    """

    @staticmethod
    def forward(
        grad_output: Tensor,
        rois: Tensor,
        spatial_scale: float,
        output_size: tuple[int, int],
        sampling_ratio: int,
        aligned: bool,
        input_shape: tuple[int, int, int, int],
        input_dtype: torch.dtype,
    ) -> Tensor:
        batch, channels, height, width = input_shape
        dtype = torch.promote_types(input_dtype, rois.dtype)
        with torch.no_grad():
            grad_input = torch.ops.torchvision._roi_align_backward(
                grad_output.to(dtype).contiguous(),
                rois.to(dtype),
                spatial_scale,
                output_size[0],
                output_size[1],
                batch,
                channels,
                height,
                width,
                sampling_ratio,
                aligned,
            )
        return grad_input.to(input_dtype)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        grad_output, rois, spatial_scale, output_size, sampling_ratio, aligned = inputs[:6]
        ctx.save_for_backward(rois)
        ctx.args = (spatial_scale, output_size, sampling_ratio, aligned)
        ctx.grad_dtype = grad_output.dtype

    @staticmethod
    def backward(ctx: Any, grad_grad_input: Tensor) -> tuple[Tensor | None, ...]:
        (rois,) = ctx.saved_tensors
        grad_grad_output = RoIAlignFunction.apply(grad_grad_input, rois, *ctx.args)
        return grad_grad_output.to(ctx.grad_dtype), None, None, None, None, None, None, None


def roi_align(
    input: Tensor,
    rois: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """Pool each RoI of ``rois`` from ``input`` into a fixed ``output_size`` grid.

    Same semantics as ``torchvision.ops.roi_align`` (argument order included), usable under
    ``torch.func.grad``.

    Args:
        input (Tensor[N, C, H, W]): feature maps of a batch.
        rois (Tensor[K, 5]): ``(batch_index, x1, y1, x2, y2)`` in input-image pixels, xyxy.
        output_size: pooled ``(h, w)`` or one int for a square grid.
        spatial_scale: feature-map size / image size (1 / stride).
        sampling_ratio: samples per bin side; <= 0 means adaptive ``ceil(roi_size / bin)``.
        aligned: shift the box by -0.5 pixel (the pixel-centre convention mmcv uses by default).

    Returns:
        Tensor[K, C, output_h, output_w]
    """
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if len(size) != 2:
        raise ValueError(f"roi_align: output_size must be an int or (h, w), got {output_size!r}")
    if input.dim() != 4:
        raise ValueError(f"roi_align: input must be [N, C, H, W], got shape {tuple(input.shape)}")
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f"roi_align: rois must be [K, 5], got shape {tuple(rois.shape)}")
    output_hw = (int(size[0]), int(size[1]))
    args = (float(spatial_scale), output_hw, int(sampling_ratio), bool(aligned))
    return RoIAlignFunction.apply(input, rois, *args)
