"""RoIAlign written as one sparse matrix, so that forward and backward are sparse matrix products.

RoIAlign is linear in its input: every pooled value is a weighted sum of feature pixels, the
same sum for every channel. With the pixels of all levels laid out channels-last as rows of
``F[N_pixels, C]``, the whole pooling of ``K`` RoIs is ``out[K * PH * PW, C] = A @ F`` with a
sparse ``A`` that depends on the boxes only, and the input gradient is ``A.T @ grad_out``. On
the CPU this beats torchvision's kernels, whose backward recomputes the bilinear weights for
every channel and runs on one thread: ``A`` is built once per call from small per-axis tensors,
and the products run on MKL's (or ATen's) multi-threaded CSR kernels.

The weights follow torchvision's ``roi_align`` exactly (the same float32 operations in the same
order for the sample coordinates): a box ``(x1, y1, x2, y2)`` scaled by ``spatial_scale``
(shifted by -0.5 when ``aligned``; its sides clamped to >= 1 when not) is split into
``PH x PW`` bins; each bin averages ``gh x gw`` bilinear samples at ``(i + 0.5) / g`` of the bin
(``g = sampling_ratio``, or ``ceil(side / P)`` when adaptive); a sample beyond ``[-1, size]``
contributes zero, one in ``[-1, 0]`` is clamped to 0, one at or past the last pixel row is
clamped to it. Bilinear weights factor into a y part and an x part (the validity test too), so
each axis is computed separately on ``[K, P, g]`` tensors and the 2-D weights are their outer
product. Per axis, the ``2 g`` (index, weight) pairs of a bin are first summed into a window of
consecutive pixels where they are consecutive (``g + 1`` at most when adaptive, instead of
``2 g``), which keeps ``A`` small: at ``g = 4`` a bin has 25 entries instead of 64. Only the
summation order differs from torchvision, so results agree to float round-off.

Adaptive sampling gives each RoI its own ``(gh, gw)``. Each axis is computed for all RoIs at once
(on a sample grid padded to the largest count: ``[K, P, g_max]`` is small), and each RoI keeps
exactly its own window of ``used_y x used_x`` entries per bin, so one huge box costs only its own
entries. Only the 2-D products are grouped, by the windows' size class (1, 2, 4, 8, ...: a few
groups), to bound the padding of the temporaries; an earlier version grouped by the exact
``(gh, gw)`` pair, whose hundred-odd groups of small ops cost more than the products.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["RoIAlignMatrix", "roi_align_matrix", "transpose_csr"]


class RoIAlignMatrix(NamedTuple):
    """CSR parts of ``A[K * PH * PW, num_pixels]``; row ``(k * PH + ph) * PW + pw``, column the
    channels-last pixel index ``level_offset + (b * H + y) * W + x``."""

    crow: Tensor  # Tensor[K * PH * PW + 1] int64
    col: Tensor  # Tensor[nnz] int64
    val: Tensor  # Tensor[nnz] float
    num_pixels: int


class _Axis(NamedTuple):
    index: Tensor  # Tensor[n, P, T] int64: pixel along the axis (in [0, length))
    weight: Tensor  # Tensor[n, P, T]: its bilinear weight, summed over the bin's samples
    used: Tensor  # Tensor[n] int64: the first ``used[k]`` of the ``T`` slots serve RoI ``k``


def _axis_entries(
    start: Tensor, bin_size: Tensor, grid: Tensor, pooled: int, length: Tensor, fixed: bool
) -> _Axis:
    """Sample positions along one axis and their bilinear weights, for all RoIs at once.

    Each RoI has its own sample count ``grid[k]``; the samples are computed on a grid padded to
    the largest count (the padding samples sit on the RoI's first sample with weight 0, so they
    neither widen its window nor change its sums). When a bin's samples are at most one pixel
    apart (always so when adaptive), the pixels they touch are consecutive: their weights are
    summed into a window of at most ``grid + 1`` pixels starting at the lowest one, and ``used``
    is the widest window of the RoI's bins. Otherwise (fixed sampling of bins wider than the
    grid) the window would have gaps, and the ``2 * grid`` (pixel, weight) pairs are kept.

    Args:
        start (Tensor[n]): scaled RoI start on this axis.
        bin_size (Tensor[n]): bin side.
        grid (Tensor[n]): int64 samples per bin on this axis (> 0).
        pooled: bins on this axis.
        length (Tensor[n]): feature-map extent (H or W) of each RoI's level, as ``start.dtype``.
        fixed: every RoI has the same ``grid`` (``sampling_ratio > 0``).
    """
    dtype, device = start.dtype, start.device
    most = int(grid.max())
    bins = torch.arange(pooled, dtype=dtype, device=device)
    sample = torch.arange(most, device=device)
    size = bin_size[:, None, None]
    # torchvision's order: (start + p * bin) + ((i + 0.5) * bin) / grid, all in the work dtype.
    coord = (start[:, None, None] + bins[None, :, None] * size) + (
        (sample.to(dtype) + 0.5) * size
    ) / grid.to(dtype)[:, None, None]  # [n, P, most]
    real = sample < grid[:, None, None]
    coord = torch.where(real, coord, coord[:, :, :1])
    extent = length[:, None, None]
    valid = real & (coord >= -1.0) & (coord <= extent)
    coord = coord.clamp(min=0.0)
    low = coord.floor()
    last = extent - 1
    at_end = low >= last
    low = torch.where(at_end, last, low)
    coord = torch.where(at_end, low, coord)
    high = torch.where(at_end, low, low + 1)
    frac = coord - low
    zero = torch.zeros((), dtype=dtype, device=device)
    w_high = torch.where(valid, frac, zero)
    w_low = torch.where(valid, 1.0 - frac, zero)
    first = low.amin(dim=2, keepdim=True)  # [n, P, 1]
    off_low = (low - first).long()
    off_high = (high - first).long()
    used = off_high.flatten(1).amax(dim=1) + 1  # [n]
    width = int(used.max())
    if fixed and width >= 2 * most:
        pairs = torch.cat([low, high], dim=2).long()
        return _Axis(pairs, torch.cat([w_low, w_high], dim=2), torch.full_like(used, 2 * most))
    weight = torch.zeros(*first.shape[:2], width, dtype=dtype, device=device)
    weight.scatter_add_(2, off_low, w_low).scatter_add_(2, off_high, w_high)
    # slots past the map's edge carry weight 0; point them at the last pixel
    index = torch.minimum(first + torch.arange(width, device=device), last).long()
    return _Axis(index, weight, used)


def _group_entries(
    y: _Axis, x: _Axis, pixel0: Tensor, width: Tensor, count: Tensor
) -> tuple[Tensor, Tensor]:
    """Column indices and weights of one group's rows, ``[n, PH, PW, Ty * Tx]`` each, for RoIs
    that share their windows' widths ``Ty = used_y``, ``Tx = used_x``.

    ``pixel0`` (Tensor[n]) is the column of pixel (0, 0) of each RoI's image on its level;
    ``count`` (Tensor[n]) the samples per bin, ``gh * gw``.
    """
    ty, tx = int(y.used[0]), int(x.used[0])
    y_index, y_weight = y.index[:, :, :ty], y.weight[:, :, :ty]
    x_index, x_weight = x.index[:, :, :tx], x.weight[:, :, :tx]
    row_start = pixel0[:, None, None] + y_index * width[:, None, None]  # [n, PH, Ty]
    index = row_start[:, :, None, :, None] + x_index[:, None, :, None, :]
    value = y_weight[:, :, None, :, None] * x_weight[:, None, :, None, :]
    value = value / count.to(value.dtype)[:, None, None, None, None]
    n, ph, pw = index.shape[:3]
    return index.reshape(n, ph, pw, ty * tx), value.reshape(n, ph, pw, ty * tx)


def _axis_of(axis: _Axis, members: Tensor) -> _Axis:
    return _Axis(axis.index[members], axis.weight[members], axis.used[members])


def roi_align_matrix(
    rois: Tensor,
    levels: Tensor,
    level_shapes: Sequence[tuple[int, int, int]],
    spatial_scales: Sequence[float],
    output_size: tuple[int, int],
    sampling_ratio: int,
    aligned: bool,
    dtype: torch.dtype,
) -> RoIAlignMatrix:
    """The sparse RoIAlign operator of ``rois`` over a (multi-level) feature pyramid.

    Args:
        rois (Tensor[K, 5]): ``(batch_index, x1, y1, x2, y2)`` in image pixels.
        levels (Tensor[K]): int64 level of each RoI (all zeros for a single map).
        level_shapes: ``(B, H, W)`` of each level, in the column order of the pixels.
        spatial_scales: ``1 / stride`` of each level.
        output_size: ``(PH, PW)``.
        sampling_ratio: samples per bin side, ``<= 0`` for adaptive.
        aligned: shift boxes by -0.5 pixel (and do not clamp their sides to 1).
        dtype: the work dtype (float32 or float64) of the weights.

    Returns:
        RoIAlignMatrix of ``A[K * PH * PW, sum(B * H * W)]``.
    """
    device = rois.device
    pooled_h, pooled_w = output_size
    rois = rois.detach().to(dtype)
    shapes = torch.tensor(level_shapes, dtype=torch.int64, device=device)  # [L, 3]
    sizes = shapes.prod(dim=1)
    offsets = torch.cumsum(sizes, 0) - sizes
    scales = torch.tensor(spatial_scales, dtype=dtype, device=device)[levels]
    height, width = shapes[levels, 1], shapes[levels, 2]
    pixel0 = offsets[levels] + rois[:, 0].long() * height * width

    shift = 0.5 if aligned else 0.0
    x1, y1 = rois[:, 1] * scales - shift, rois[:, 2] * scales - shift
    roi_w, roi_h = rois[:, 3] * scales - shift - x1, rois[:, 4] * scales - shift - y1
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_w, bin_h = roi_w / pooled_w, roi_h / pooled_h
    if sampling_ratio > 0:
        grid_h = torch.full_like(levels, sampling_ratio)
        grid_w = grid_h
    else:  # a zero or negative side (aligned boxes) has no samples: its bins stay 0
        grid_h = torch.ceil(roi_h / pooled_h).long().clamp(min=0)
        grid_w = torch.ceil(roi_w / pooled_w).long().clamp(min=0)

    num_rois, bins = rois.shape[0], pooled_h * pooled_w
    row_len = torch.zeros(num_rois, dtype=torch.int64, device=device)
    sampled = torch.nonzero((grid_h > 0) & (grid_w > 0)).squeeze(1)
    groups = []
    if sampled.numel():
        fixed = sampling_ratio > 0
        ys = _axis_entries(
            y1[sampled], bin_h[sampled], grid_h[sampled], pooled_h, height[sampled].to(dtype), fixed
        )
        xs = _axis_entries(
            x1[sampled], bin_w[sampled], grid_w[sampled], pooled_w, width[sampled].to(dtype), fixed
        )
        row_len[sampled] = ys.used * xs.used
        # RoIs grouped by their windows' widths: each group's products have one shape
        key = ys.used * (int(xs.used.max()) + 1) + xs.used
        for value in torch.unique(key).tolist():
            local = torch.nonzero(key == value).squeeze(1)
            members = sampled[local]
            index, weight = _group_entries(
                _axis_of(ys, local),
                _axis_of(xs, local),
                pixel0[members],
                width[members],
                grid_h[members] * grid_w[members],
            )
            groups.append((members, index.reshape(-1), weight.reshape(-1)))

    crow = torch.zeros(num_rois * bins + 1, dtype=torch.int64, device=device)
    torch.cumsum(row_len.repeat_interleave(bins), 0, out=crow[1:])
    if not groups:
        return RoIAlignMatrix(crow, crow.new_zeros(0), rois.new_zeros(0), int(sizes.sum()))
    members = torch.cat([m for m, _, _ in groups])
    col = torch.cat([i for _, i, _ in groups])
    val = torch.cat([v for _, _, v in groups])
    if not torch.equal(members, sampled):
        # each RoI's entries are contiguous, in group order: move them to its span of the CSR
        # (RoIs without samples have empty spans)
        per_roi = row_len[members] * bins
        shift = crow[members * bins] - (torch.cumsum(per_roi, 0) - per_roi)
        slot = torch.repeat_interleave(shift, per_roi) + torch.arange(col.numel(), device=device)
        col = torch.empty_like(col).index_put_((slot,), col)
        val = torch.empty_like(val).index_put_((slot,), val)
    return RoIAlignMatrix(crow, col, val, int(sizes.sum()))


def transpose_csr(matrix: RoIAlignMatrix) -> tuple[Tensor, Tensor, Tensor]:
    """CSR parts ``(crow, col, val)`` of ``A.T[num_pixels, K * PH * PW]`` (for the backward)."""
    crow, col, val = matrix.crow, matrix.col, matrix.val
    rows = torch.repeat_interleave(torch.arange(crow.numel() - 1, device=col.device), crow.diff())
    # int32 keys sort about twice as fast; any order within a pixel's row is a valid CSR
    keys = col.int() if matrix.num_pixels < 2**31 else col
    order = torch.argsort(keys)
    crow_t = torch.zeros(matrix.num_pixels + 1, dtype=torch.int64, device=col.device)
    torch.cumsum(torch.bincount(col, minlength=matrix.num_pixels), 0, out=crow_t[1:])
    return crow_t, rows[order], val[order]
