"""RoIAlign on the CPU as sparse matrix products, torch.func-safe, over one or several levels.

:func:`detfn.ops.roi_align_matrix.roi_align_matrix` turns the boxes into a sparse ``A``; the
pooling is ``A @ F`` with the feature pixels of every level stacked channels-last in ``F``, and
the input gradient is ``A.T @ grad``. Pooling several pyramid levels is then one product, with
each RoI's output row already in place (no per-level gather, concatenation and un-permutation).

Both directions are ``autograd.Function`` s with ``setup_context`` (so ``torch.func.grad`` and
``grad_and_value`` run through them); each one's gradient is the other, so double backward
works too. The matrix is built outside the Functions from detached boxes (no gradient flows to
the boxes, as in torchvision) and passed in as plain tensors.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from detfn.ops.roi_align_matrix import RoIAlignMatrix, roi_align_matrix, transpose_csr

__all__ = ["SparsePoolFunction", "SparseUnpoolFunction", "sparse_roi_align"]


def _spmm(crow: Tensor, col: Tensor, val: Tensor, num_cols: int, dense: Tensor) -> Tensor:
    """``CSR(crow, col, val)[M, num_cols] @ dense[num_cols, C]`` -> Tensor[M, C]."""
    rows = crow.numel() - 1
    if col.numel() == 0 or dense.shape[1] == 0:
        return dense.new_zeros(rows, dense.shape[1])
    # autocast off: it would cast the product to bf16 / fp16, which the CSR kernels lack
    with warnings.catch_warnings(), torch.autocast(dense.device.type, enabled=False):
        # "Sparse CSR tensor support is in beta state": the product used here is long stable.
        warnings.simplefilter("ignore", UserWarning)
        matrix = torch.sparse_csr_tensor(crow, col, val, (rows, num_cols), check_invariants=False)
        return torch.sparse.mm(matrix, dense)


def _channels_last_rows(feats: Sequence[Tensor], dtype: torch.dtype) -> Tensor:
    """All pixels of all levels as rows: Tensor[sum(B * H * W), C], one copy."""
    channels = feats[0].shape[1]
    total = sum(f.shape[0] * f.shape[2] * f.shape[3] for f in feats)
    rows = torch.empty(total, channels, dtype=dtype, device=feats[0].device)
    start = 0
    for feat in feats:
        b, c, h, w = feat.shape
        rows[start : start + b * h * w].view(b, h, w, c).copy_(feat.permute(0, 2, 3, 1))
        start += b * h * w
    return rows


def _memory_format(feat: Tensor) -> torch.memory_format:
    """The layout a level's gradient is given in: its own (channels-last levels get their
    gradient without a copy, the rows of ``A.T @ grad`` already are channels-last)."""
    if feat.is_contiguous() or not feat.is_contiguous(memory_format=torch.channels_last):
        return torch.contiguous_format
    return torch.channels_last


class SparsePoolFunction(torch.autograd.Function):
    """``out[K, C, PH, PW] = A @ F``; inputs ``(crow, col, val, output_size, *feats)``."""

    @staticmethod
    def forward(
        crow: Tensor, col: Tensor, val: Tensor, output_size: tuple[int, int], *feats: Tensor
    ) -> Tensor:
        pooled_h, pooled_w = output_size
        rows = _channels_last_rows(feats, val.dtype)
        out = _spmm(crow, col, val, rows.shape[0], rows)  # [K * PH * PW, C]
        num_rois = (crow.numel() - 1) // (pooled_h * pooled_w)
        out = out.view(num_rois, pooled_h, pooled_w, rows.shape[1]).permute(0, 3, 1, 2)
        return out.to(feats[0].dtype, memory_format=torch.contiguous_format)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        crow, col, val, output_size, *feats = inputs
        ctx.save_for_backward(crow, col, val)
        ctx.output_size = output_size
        ctx.shapes = tuple(tuple(f.shape) for f in feats)
        ctx.formats = tuple((f.dtype, _memory_format(f)) for f in feats)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        crow, col, val = ctx.saved_tensors
        grads = SparseUnpoolFunction.apply(grad_output, crow, col, val, ctx.shapes, ctx.formats)
        return (None, None, None, None, *grads)


class SparseUnpoolFunction(torch.autograd.Function):
    """``grad_F = A.T @ grad_out``, split back into one ``Tensor[B, C, H, W]`` per level."""

    @staticmethod
    def forward(
        grad_output: Tensor,
        crow: Tensor,
        col: Tensor,
        val: Tensor,
        shapes: tuple[tuple[int, int, int, int], ...],
        formats: tuple[tuple[torch.dtype, torch.memory_format], ...],
    ) -> tuple[Tensor, ...]:
        num_pixels = sum(b * h * w for b, _, h, w in shapes)
        channels = shapes[0][1]
        crow_t, col_t, val_t = transpose_csr(RoIAlignMatrix(crow, col, val, num_pixels))
        grad_rows = grad_output.to(val.dtype).permute(0, 2, 3, 1).reshape(-1, channels)
        # One product per level (the level's rows of A.T): each level's gradient is its own
        # buffer, freed as the backward consumes it; slices of one [num_pixels, C] product would
        # keep all of it alive until the last level is done (+13 MiB at the peak of a Faster
        # R-CNN step in channels-last).
        out, start = [], 0
        for (b, c, h, w), (dtype, memory_format) in zip(shapes, formats):
            stop = start + b * h * w
            first, last = int(crow_t[start]), int(crow_t[stop])
            level_crow = crow_t[start : stop + 1] - first
            cols, vals = col_t[first:last], val_t[first:last]
            rows = _spmm(level_crow, cols, vals, grad_rows.shape[0], grad_rows)  # [B H W, C]
            level = rows.view(b, h, w, c).permute(0, 3, 1, 2)  # [B, C, H, W] over NHWC rows
            out.append(level.to(dtype, memory_format=memory_format))
            start = stop
        return tuple(out)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
        grad_output, crow, col, val = inputs[:4]
        ctx.save_for_backward(crow, col, val)
        ctx.output_size = tuple(grad_output.shape[2:])
        ctx.grad_dtype = grad_output.dtype

    @staticmethod
    def backward(ctx: Any, *grad_grads: Tensor) -> tuple[Tensor | None, ...]:
        crow, col, val = ctx.saved_tensors
        grad_grads = tuple(torch.zeros_like(g) if g is None else g for g in grad_grads)
        out = SparsePoolFunction.apply(crow, col, val, ctx.output_size, *grad_grads)
        return out.to(ctx.grad_dtype), None, None, None, None, None


def work_dtype(feat_dtype: torch.dtype, rois_dtype: torch.dtype) -> torch.dtype:
    """float64 if either input is, else float32 (the sparse kernels have no bf16 / fp16)."""
    return torch.float64 if torch.float64 in (feat_dtype, rois_dtype) else torch.float32


def sparse_roi_align(
    feats: Sequence[Tensor],
    rois: Tensor,
    levels: Tensor,
    spatial_scales: Sequence[float],
    output_size: tuple[int, int],
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    """RoIAlign of each RoI from its level, as ``torchvision.ops.roi_align`` would pool it.

    Args:
        feats: levels ``Tensor[B, C, H_l, W_l]`` (same B, C and dtype).
        rois (Tensor[K, 5]): ``(batch_index, x1, y1, x2, y2)`` in image pixels.
        levels (Tensor[K]): int64 index into ``feats`` of each RoI.
        spatial_scales: ``1 / stride`` of each level.

    Returns:
        Tensor[K, C, PH, PW] in ``feats``' dtype, row ``k`` pooled from ``feats[levels[k]]``.
    """
    dtype = work_dtype(feats[0].dtype, rois.dtype)
    with torch.no_grad():
        shapes = [(f.shape[0], f.shape[2], f.shape[3]) for f in feats]
        matrix = roi_align_matrix(
            rois, levels, shapes, spatial_scales, output_size, sampling_ratio, aligned, dtype
        )
    return SparsePoolFunction.apply(matrix.crow, matrix.col, matrix.val, output_size, *feats)
