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

Which kernels run depends on the device: on the CPU, :mod:`detfn.ops.roi_align_sparse` (sparse
matrix products, several times faster than torchvision's single-threaded CPU kernels, equal to
float round-off); elsewhere (CUDA) torchvision's kernels through the Functions below.
``backend`` forces one of the two for a call; :func:`auto_backend` sets what ``"auto"`` means
within a block (``torch.export`` takes torchvision's kernels: the sparse matrix has
data-dependent sizes, and ``torchvision::roi_align`` has an ONNX form).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
import torchvision  # noqa: F401  (registers torch.ops.torchvision.*)
from torch import Tensor

from detfn.ops.roi_align_sparse import sparse_roi_align
from detfn.ops.switch import switched

__all__ = [
    "Backend",
    "auto_backend",
    "RoIAlignBackwardFunction",
    "RoIAlignFunction",
    "multi_level_roi_align",
    "roi_align",
    "uses_sparse",
]

Backend = Literal["auto", "sparse", "torchvision"]


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


_AUTO: list[Backend] = ["auto"]  # what backend="auto" resolves to; set by auto_backend()


@contextlib.contextmanager
def auto_backend(backend: Backend) -> Iterator[None]:
    """Within the block, RoIAlign calls that leave ``backend="auto"`` use ``backend``."""
    _check_backend(backend)
    with switched(_AUTO, backend):
        yield


def uses_sparse(device: torch.device, backend: Backend = "auto") -> bool:
    """Whether RoIAlign on ``device`` runs the sparse-matrix kernels (the CPU's default)."""
    _check_backend(backend)
    if backend == "auto":
        backend = _AUTO[0]
    return backend == "sparse" or (backend == "auto" and device.type == "cpu")


def _check_backend(backend: str) -> None:
    if backend not in ("auto", "sparse", "torchvision"):
        raise ValueError(f"roi_align: backend must be auto, sparse or torchvision, got {backend!r}")


def _output_hw(output_size: int | Sequence[int]) -> tuple[int, int]:
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if len(size) != 2:
        raise ValueError(f"roi_align: output_size must be an int or (h, w), got {output_size!r}")
    return int(size[0]), int(size[1])


def _check_rois(rois: Tensor) -> None:
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f"roi_align: rois must be [K, 5], got shape {tuple(rois.shape)}")


def roi_align(
    input: Tensor,
    rois: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
    backend: Backend = "auto",
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
        backend: ``"auto"`` (sparse on the CPU, torchvision elsewhere) or one forced.

    Returns:
        Tensor[K, C, output_h, output_w]
    """
    output_hw = _output_hw(output_size)
    if input.dim() != 4:
        raise ValueError(f"roi_align: input must be [N, C, H, W], got shape {tuple(input.shape)}")
    _check_rois(rois)
    if uses_sparse(input.device, backend):
        levels = torch.zeros(rois.shape[0], dtype=torch.int64, device=rois.device)
        scales = [float(spatial_scale)]
        return sparse_roi_align(
            [input], rois, levels, scales, output_hw, int(sampling_ratio), bool(aligned)
        )
    args = (float(spatial_scale), output_hw, int(sampling_ratio), bool(aligned))
    return RoIAlignFunction.apply(input, rois, *args)


def multi_level_roi_align(
    feats: Sequence[Tensor],
    rois: Tensor,
    levels: Tensor,
    spatial_scales: Sequence[float],
    output_size: int | tuple[int, int],
    sampling_ratio: int = -1,
    aligned: bool = False,
    backend: Backend = "auto",
) -> Tensor:
    """Pool each RoI from its own pyramid level, in the order of ``rois``.

    On the CPU this is a single sparse product over all levels; elsewhere one torchvision call
    per level (never one per RoI) and a scatter back into RoI order.

    Args:
        feats: levels ``Tensor[B, C, H_l, W_l]``, finest first.
        rois (Tensor[K, 5]): ``(batch_index, x1, y1, x2, y2)`` in input-image pixels.
        levels (Tensor[K]): int64 level of each RoI, in ``[0, len(feats))``.
        spatial_scales: ``1 / stride`` of each level.

    Returns:
        Tensor[K, C, output_h, output_w]
    """
    output_hw = _output_hw(output_size)
    _check_rois(rois)
    if len(spatial_scales) != len(feats):
        raise ValueError(
            f"roi_align: {len(feats)} feature maps but {len(spatial_scales)} spatial_scales"
        )
    if uses_sparse(feats[0].device, backend):
        scales = [float(s) for s in spatial_scales]
        return sparse_roi_align(
            feats, rois, levels, scales, output_hw, int(sampling_ratio), bool(aligned)
        )
    pieces, order = [], []
    for level, (feat, scale) in enumerate(zip(feats, spatial_scales)):
        index = torch.nonzero(levels == level).squeeze(1)
        args = (float(scale), output_hw, int(sampling_ratio), bool(aligned))
        pieces.append(RoIAlignFunction.apply(feat, rois[index], *args))
        order.append(index)
    # Undo the grouping by level: position i of the result is RoI i.
    inverse = torch.argsort(torch.cat(order))
    return torch.cat(pieces)[inverse]
