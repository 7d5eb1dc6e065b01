"""3x3 convolution (stride 1, padding 1) by Winograd's minimal filtering F(4x4, 3x3).

Why: the dense heads of RetinaNet, FCOS and ATSS are towers of 3x3, 256-channel convolutions
run over every FPN level; on the CPU they are most of a training step, and torch's direct
(oneDNN) kernel already runs near the machine's peak FLOP rate. Winograd's algorithm computes
each 4x4 output tile from a 6x6 input tile with 36 products per channel pair instead of 144
(Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016), so the work left
is one batched matrix product a quarter the size of the direct convolution's:

    V = Bt d B    (input tiles,  [36, T, C_in]: one 6x6 tile per 4x4 output tile, stride 4)
    U = G g Gt    (weights,      [36, C_in, C_out])
    M = V @ U     (36 independent products, [36, T, C_out])
    Y = At M A    (output tiles, [16, T, C_out])

with ``T = ceil(H / 4) * ceil(W / 4)`` per image. The transforms are products with the
Kronecker matrices ``kron(Bt, Bt)`` (36x36) and ``kron(At, At)`` (16x36), one gather of the
tiles before and one scatter into the output's layout after. Everything runs on one band of at
most :data:`BAND_TILES` tiles of one image at a time, into buffers reused by every band
(:class:`_Workspace`): on the CPU both keep the memory-bound steps from doubling in time per
tile. Channels-last activations keep the channels innermost (``[36, T, C]``), NCHW ones the
tiles (``[36, C, T]``), so each gather reads its layout's contiguous runs. This is the
algorithm cuDNN and oneDNN choose for such layers themselves; torch does not reach oneDNN's on
the CPU.

The backward is written out (:class:`_Winograd3x3`, first order only), so that only ``x``
and the weight are kept, not the 2.25x larger tiles: the input gradient is the same
convolution of the output gradient with the flipped, transposed kernel; the weight gradient is
the adjoint of the forward in ``U``. Every step is linear, so the results equal the direct
convolution's in exact arithmetic (1e-15 in float64); in float32 a 256-channel layer is off by
1.7e-6 of the norm (the direct kernel by 2e-7), far below the 1e-3 by which float32 training
gradients already differ from float64 ones (tests/models/test_winograd_accuracy.py).

:func:`conv3x3` dispatches: Winograd for float32 on the CPU outside autocast, on inputs large
and wide enough to pay for the transforms; torch's convolution otherwise (GPU, reduced
precision, small FPN levels, narrow outputs). :func:`conv_backend` forces one for a block;
export traces torch's (:func:`detfn.ops.reference_kernels`).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detfn.ops.switch import switched

__all__ = ["Conv3x3", "ConvBackend", "conv3x3", "conv_backend", "uses_winograd", "winograd_conv3x3"]

ConvBackend = Literal["auto", "winograd", "direct"]

TILE = 4  # output tile side: F(4x4, 3x3)
# The dispatch rule, measured on a 2-core AVX-512 Xeon (forward + backward, README
# "Performance"): fewer output tiles (2 images of 16x20 have 40) and the direct kernel wins;
# with 128 channels in or out (ResNet stage 2, the bccd presets) the transforms cost more than
# they save (1.12-1.28x), with 256 they pay (0.78-0.89x).
MIN_TILES = 128
MIN_CHANNELS = 256
_AUTO: list[ConvBackend] = ["auto"]  # what backend="auto" resolves to; set by conv_backend()


# Toom-Cook interpolation points of F(4x4, 3x3), the sixth is ∞. Lavin & Gray used 0, ±1, ±2;
# 1/2 in place of 2 shrinks the float32 error of a 256-channel layer from 1.1e-5 to 3.7e-6 of
# its largest output (2.7e-6 to 1.7e-6 in norm; Barabasz et al., "Error analysis and improving
# the accuracy of Winograd convolution", 2020). Point 1 must stay second: see BIAS_ROW.
POINTS = (0.0, 1.0, -1.0, 0.5, -2.0)


def _toom_cook(points: tuple[float, ...]) -> tuple[Tensor, Tensor, Tensor]:
    """(Bt [6, 6], G [6, 3], At [4, 6]) of F(4, 3) in float64, from Vandermonde matrices.

    The correlation ``y = sum_k d[i + k] g[k]`` is the transpose of the polynomial product
    ``d = L_g u`` (``u`` of degree 3, ``g`` of degree 2), and Toom-Cook computes that product
    by evaluating both factors at the points, multiplying, and interpolating:
    ``L_g = V6^-1 diag(V3 g) V4``, so ``y = V4ᵀ diag(V3 g) V6^-ᵀ d``: ``At = V4ᵀ``,
    ``G = V3``, ``Bt = V6^-ᵀ``. ``Vk`` evaluates a polynomial of ``k`` coefficients at the
    points; its row for ∞ takes the leading coefficient. Each row of ``Bt`` is divided by its
    smallest non-zero entry and the row of ``G`` multiplied by it (the product is unchanged).
    """
    size = len(points) + 1
    finite = torch.tensor(points, dtype=torch.float64)

    def vandermonde(k: int) -> Tensor:
        v = torch.zeros(size, k, dtype=torch.float64)
        v[:-1] = finite[:, None] ** torch.arange(k, dtype=torch.float64)
        v[-1, -1] = 1.0
        return v

    bt = torch.linalg.inv(vandermonde(size)).T
    scale = torch.stack([row[row.abs() > 1e-12].abs().min() for row in bt])
    return bt / scale[:, None], vandermonde(3) * scale[:, None], vandermonde(TILE).T


@functools.cache
def _transforms(dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """(Kin [36, 36], Kw [36, 9], Kout [16, 36]): ``kron`` of :func:`_toom_cook`'s matrices,
    built in float64 and cast once. Row-major flattening of a tile:
    ``vec(Bt d B) = kron(Bt, Bt) vec(d)``."""
    return tuple(  # type: ignore[return-value]
        torch.kron(m, m).to(dtype=dtype, device=device) for m in _toom_cook(POINTS)
    )


def _grid(height: int, width: int) -> tuple[int, int]:
    """Output tiles along H and W (the last ones may overhang the output)."""
    return -(-height // TILE), -(-width // TILE)


# kron(At, At)[:, 7] is all ones (At's column 1 is): a bias added to M[7] reaches every output.
BIAS_ROW = 7
# Tiles per chunk: every step works on one band of tile rows of one image at a time. On the
# 2-core Xeon the transforms' time per tile doubled beyond about 320 tiles of 256 channels
# (64x80 has 320; 75x100, 475), and the products ran faster in blocks of 128-256 tiles.
BAND_TILES = 256


def _bands(rows: int, cols: int) -> list[tuple[int, int]]:
    """Tile-row ranges ``[i0, i1)`` of at most :data:`BAND_TILES` tiles (at least one row)."""
    step = max(1, BAND_TILES // cols)
    return [(i, min(i + step, rows)) for i in range(0, rows, step)]


class _Workspace:
    """Flat buffers reused by every band of one call, carved into contiguous views of the
    band's shape. Why: on the CPU a fresh multi-MiB tensor is cold memory (the allocator hands
    large blocks back to the system), and writing one cost 3-4x the arithmetic done into it:
    a band's transform into a fresh tensor took 5.1 ms, into a reused one 1.3 ms."""

    def __init__(self, like: Tensor) -> None:
        self.like = like
        self.buffers: dict[str, Tensor] = {}

    def take(self, name: str, *shape: int) -> Tensor:
        size = math.prod(shape)
        buffer = self.buffers.get(name)
        if buffer is None or buffer.numel() < size:
            buffer = self.buffers[name] = self.like.new_empty(size)
        return buffer[:size].view(shape)


def _gather(tiles: Tensor, inner: bool, out: Tensor) -> Tensor:
    """Tensor[C, t_rows, cols, a, a] (a view of overlapping or adjacent tiles) -> ``out``,
    Tensor[a * a, t * C] (``inner``: channels last, as channels-last activations are read) or
    Tensor[a * a, C * t] (NCHW)."""
    order = (3, 4, 1, 2, 0) if inner else (3, 4, 0, 1, 2)
    side = tiles.shape[-1]
    out.view(side, side, *tiles.permute(order).shape[2:]).copy_(tiles.permute(order))
    return out


def _padded_input(x: Tensor, rows: int, cols: int) -> Tensor:
    """``x`` with one zero row / column before and enough after for ``rows x cols`` 6x6 tiles
    at stride 4 (the convolution's padding 1, and the overhang of the last tiles)."""
    height, width = x.shape[2:]
    return F.pad(x, (1, cols * TILE + 1 - width, 1, rows * TILE + 1 - height))


def _input_band(
    padded: Tensor, b: int, i0: int, i1: int, kin: Tensor, inner: bool, work: _Workspace
) -> Tensor:
    """V of tile rows ``[i0, i1)`` of image ``b``: Tensor[36, t, C] if ``inner`` (channels-last)
    else Tensor[36, C, t]. ``padded`` is the input with one zero row / column before and enough
    after to cover the tile grid; its 6x6 tiles (stride 4) are gathered, then transformed by
    one product with ``kron(Bt, Bt)``."""
    channels = padded.shape[1]
    band = padded[b, :, i0 * TILE : i1 * TILE + 2]  # [C, 4 t_rows + 2, W + 2]
    tiles = band.unfold(1, TILE + 2, TILE).unfold(2, TILE + 2, TILE)  # [C, t_rows, cols, 6, 6]
    count = tiles.shape[1] * tiles.shape[2]
    gathered = _gather(tiles, inner, work.take("gather", 36, count * channels))
    transformed = torch.mm(kin, gathered, out=work.take("input", 36, count * channels))
    return transformed.view(36, count, channels) if inner else transformed.view(36, channels, count)


def _output_band(
    grad: Tensor, b: int, i0: int, i1: int, kout: Tensor, inner: bool, work: _Workspace
) -> Tensor:
    """``kron(At, At)ᵀ dY`` of tile rows ``[i0, i1)`` of image ``b`` (``grad`` padded to the
    grid): Tensor[36, t, C_out] if ``inner`` else Tensor[36, C_out, t]. The 4x4 output tiles do
    not overlap."""
    channels = grad.shape[1]
    band = grad[b, :, i0 * TILE : i1 * TILE]
    tiles = band.unfold(1, TILE, TILE).unfold(2, TILE, TILE)  # [C_out, t_rows, cols, 4, 4]
    count = tiles.shape[1] * tiles.shape[2]
    gathered = _gather(tiles, inner, work.take("grad_gather", 16, count * channels))
    products = torch.mm(kout.T, gathered, out=work.take("grad_products", 36, count * channels))
    return products.view(36, count, channels) if inner else products.view(36, channels, count)


def _forward(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The convolution; the output has ``x``'s memory format."""
    kin, kw, kout = _transforms(x.dtype, x.device)
    batch, c_in, height, width = x.shape
    c_out = weight.shape[0]
    rows, cols = _grid(height, width)
    layout = _layout(x)
    inner = layout == torch.channels_last
    padded = _padded_input(x, rows, cols)
    if inner:  # U: [36, C_in, C_out]
        u = (kw @ weight.permute(2, 3, 1, 0).reshape(9, c_in * c_out)).view(36, c_in, c_out)
    else:  # Ut: [36, C_out, C_in]
        u = (kw @ weight.permute(2, 3, 0, 1).reshape(9, c_out * c_in)).view(36, c_out, c_in)
    full = torch.empty(
        (batch, c_out, rows * TILE, cols * TILE),
        dtype=x.dtype,
        device=x.device,
        memory_format=layout,
    )
    work = _Workspace(x)
    for b in range(batch):
        for i0, i1 in _bands(rows, cols):
            tiles = _input_band(padded, b, i0, i1, kin, inner, work)
            count = (i1 - i0) * cols
            if inner:  # [36, t, O]
                products = torch.bmm(tiles, u, out=work.take("products", 36, count, c_out))
                if bias is not None:
                    products[BIAS_ROW] += bias
            else:  # [36, O, t]
                products = torch.bmm(u, tiles, out=work.take("products", 36, c_out, count))
                if bias is not None:
                    products[BIAS_ROW] += bias[:, None]
            out = torch.mm(kout, products.view(36, -1), out=work.take("out", 16, count * c_out))
            target = full[b, :, i0 * TILE : i1 * TILE].unflatten(2, (cols, TILE))
            target = target.unflatten(1, (i1 - i0, TILE))  # [O, t_rows, 4, cols, 4]
            if inner:
                target.copy_(out.view(TILE, TILE, i1 - i0, cols, c_out).permute(4, 2, 0, 3, 1))
            else:
                target.copy_(out.view(TILE, TILE, c_out, i1 - i0, cols).permute(2, 3, 0, 4, 1))
    if (rows * TILE, cols * TILE) == (height, width):
        return full
    return full[:, :, :height, :width].contiguous(memory_format=layout)


def _weight_grad(x: Tensor, grad_out: Tensor) -> Tensor:
    """dL/dweight, Tensor[C_out, C_in, 3, 3]: the adjoint of :func:`_forward` in ``U``,
    ``dU = sum over bands of Vᵀ (kron(At, At)ᵀ dY)``, then ``Gᵀ``. ``grad_out`` has ``x``'s
    memory format."""
    kin, kw, kout = _transforms(x.dtype, x.device)
    batch, c_in, height, width = x.shape
    c_out = grad_out.shape[1]
    rows, cols = _grid(height, width)
    inner = _layout(x) == torch.channels_last
    padded = _padded_input(x, rows, cols)
    grad_out = F.pad(grad_out, (0, cols * TILE - width, 0, rows * TILE - height))
    shape = (36, c_in, c_out) if inner else (36, c_out, c_in)
    grad_u = torch.zeros(shape, dtype=x.dtype, device=x.device)
    work = _Workspace(x)
    for b in range(batch):
        for i0, i1 in _bands(rows, cols):
            tiles = _input_band(padded, b, i0, i1, kin, inner, work)
            grad_products = _output_band(grad_out, b, i0, i1, kout, inner, work)
            if inner:  # [36, C_in, t] @ [36, t, C_out]
                grad_u.baddbmm_(tiles.transpose(1, 2), grad_products)
            else:  # [36, C_out, t] @ [36, t, C_in]
                grad_u.baddbmm_(grad_products, tiles.transpose(1, 2))
    grad_w = (kw.T @ grad_u.view(36, -1)).view(3, 3, *shape[1:])
    return (grad_w.permute(3, 2, 0, 1) if inner else grad_w.permute(2, 3, 0, 1)).contiguous()


def _layout(x: Tensor) -> torch.memory_format:
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


class _Winograd3x3(torch.autograd.Function):
    """Forward :func:`_forward` of ``weight * scale`` (per output channel; ``scale`` may be
    None); the backward recomputes the input tiles and the scaled weight (see the module)."""

    # Both passes run under no_grad, also under torch.func.grad: the workspaces are written in
    # place (out=), which autograd refuses for tensors it tracks. First order only.
    @staticmethod
    @torch.no_grad()
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None, scale: Tensor | None) -> Tensor:
        return _forward(x, _scaled(weight, scale), bias)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        x, weight, _, scale = inputs
        ctx.save_for_backward(x, weight, scale)

    @staticmethod
    @torch.no_grad()
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, scale = ctx.saved_tensors
        need_x, need_w, need_b, need_s = ctx.needs_input_grad
        grad_out = grad_out.contiguous(memory_format=_layout(x))
        scaled = _scaled(weight, scale)
        grad_x = _forward(grad_out, scaled.flip(2, 3).transpose(0, 1), None) if need_x else None
        grad_b = grad_out.sum((0, 2, 3)) if need_b else None
        if not (need_w or need_s):
            return grad_x, None, grad_b, None
        grad_scaled = _weight_grad(x, grad_out)
        if scale is None:
            return grad_x, grad_scaled, grad_b, None
        grad_w = grad_scaled * scale.view(-1, 1, 1, 1) if need_w else None
        grad_s = (grad_scaled * weight).sum((1, 2, 3)) if need_s else None
        return grad_x, grad_w, grad_b, grad_s


def _scaled(weight: Tensor, scale: Tensor | None) -> Tensor:
    return weight if scale is None else weight * scale.view(-1, 1, 1, 1)


def winograd_conv3x3(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, scale: Tensor | None = None
) -> Tensor:
    """``F.conv2d(x, weight * scale, bias, padding=1)`` by Winograd F(4x4, 3x3).

    Args:
        x (Tensor[B, C_in, H, W]): float32 or float64, NCHW or channels-last (kept).
        weight (Tensor[C_out, C_in, 3, 3]): the kernel (stride 1, dilation 1, one group).
        bias (Tensor[C_out] | None): added to every output position.
        scale (Tensor[C_out] | None): a fixed norm folded into the kernel
            (:func:`detfn.ops.conv2d_affine`); the product is recomputed in the backward
            rather than kept.

    Returns:
        Tensor[B, C_out, H, W] in ``x``'s memory format.
    """
    if weight.shape[2:] != (3, 3) or weight.shape[1] != x.shape[1]:
        raise ValueError(
            f"winograd_conv3x3: needs a [C_out, {x.shape[1]}, 3, 3] weight for input "
            f"{tuple(x.shape)}, got {tuple(weight.shape)}"
        )
    return _Winograd3x3.apply(x, weight, bias, scale)


@contextlib.contextmanager
def conv_backend(backend: ConvBackend) -> Iterator[None]:
    """Within the block, :func:`conv3x3` calls use ``backend`` for "auto"."""
    _check_backend(backend)
    with switched(_AUTO, backend):
        yield


def uses_winograd(x: Tensor, out_channels: int, backend: ConvBackend = "auto") -> bool:
    """Whether :func:`conv3x3` computes ``x``'s convolution by Winograd: forced, or ("auto") on
    the CPU in float32 outside autocast with at least :data:`MIN_TILES` output tiles and
    :data:`MIN_CHANNELS` channels in and out (measured on a 2-core AVX-512 Xeon)."""
    _check_backend(backend)
    if backend == "auto":
        backend = _AUTO[0]
    if backend != "auto":
        return backend == "winograd"
    if x.device.type != "cpu" or x.dtype != torch.float32 or torch.is_autocast_enabled("cpu"):
        return False
    rows, cols = _grid(x.shape[2], x.shape[3])
    wide = min(x.shape[1], out_channels) >= MIN_CHANNELS
    return wide and x.shape[0] * rows * cols >= MIN_TILES


def conv3x3(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, backend: ConvBackend = "auto"
) -> Tensor:
    """``F.conv2d(x, weight, bias, padding=1)``, by Winograd where :func:`uses_winograd` says."""
    if uses_winograd(x, weight.shape[0], backend):
        return winograd_conv3x3(x, weight, bias)
    return F.conv2d(x, weight, bias, padding=1)


class Conv3x3(nn.Conv2d):
    """``nn.Conv2d(in, out, 3, padding=1)`` computed by :func:`conv3x3`.

    Same parameters, names and initialisation as the ``nn.Conv2d`` it replaces, so checkpoints
    and ``isinstance(m, nn.Conv2d)`` init code see no difference.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return conv3x3(x, self.weight, self.bias)


def _check_backend(backend: str) -> None:
    if backend not in ("auto", "winograd", "direct"):
        raise ValueError(f"conv3x3: backend must be auto, winograd or direct, got {backend!r}")
