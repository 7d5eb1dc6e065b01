"""Anchor generation with mmdetection 2.x's ``AnchorGenerator`` semantics.

For a level with base size ``s`` (the stride unless given), ratio ``r = h / w`` and scale ``k``,
the base anchor is centred at ``(offset * s, offset * s)`` with::

    h_ratio = sqrt(r)      w_ratio = 1 / h_ratio
    w = s * w_ratio * k    h = s * h_ratio * k

so every ratio keeps the area ``(s * k) ** 2``. Anchors of one location are ordered ratio-major,
scale-minor (mmdetection's ``scale_major=True``); the grid shifts them by ``stride`` along x
(fastest) and y, location-major, so anchor ``(y * W + x) * A + a`` sits at feature cell
``(y, x)``; dense-head outputs ``[B, A, H, W]`` permuted to ``[B, H, W, A]`` line up with it.

RetinaNet-style scales come from ``octave_base_scale * 2 ** (i / scales_per_octave)``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from detfn.config import Config, check, check_positive
from detfn.registry import register

__all__ = [
    "AnchorGenerator",
    "AnchorGeneratorConfig",
    "PriorGeneratorConfig",
    "anchor_scales",
    "base_anchors",
    "build_anchor_generator",
    "grid_anchors",
    "inside_flags",
    "num_base_anchors",
    "valid_flags",
]


@dataclass(frozen=True)
class PriorGeneratorConfig(Config):
    """Base of every prior generator config (anchors, points). Its builder returns an object with
    ``num_base_priors``, ``num_levels``, ``strides``, ``grid_priors(featmap_sizes, device)`` (one
    Tensor[H * W * A, 4] of xyxy priors per level; points are zero-size boxes) and
    ``valid_flags(featmap_sizes, pad_shapes)``."""


@dataclass(frozen=True)
class AnchorGeneratorConfig(PriorGeneratorConfig):
    """Anchors per FPN level. Faster R-CNN's defaults: 3 anchors per location, 32-512 px sides.

    Give either ``scales`` or both ``octave_base_scale`` and ``scales_per_octave`` (then set
    ``scales=None``), as in mmdetection. ``base_sizes=None`` means the strides.
    """

    strides: tuple[int, ...] = (4, 8, 16, 32, 64)
    ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    scales: tuple[float, ...] | None = (8.0,)
    base_sizes: tuple[int, ...] | None = None
    center_offset: float = 0.0
    octave_base_scale: float | None = None
    scales_per_octave: int | None = None

    def __post_init__(self) -> None:
        check(self, "strides", len(self.strides) > 0, "must not be empty")
        check(self, "strides", all(s > 0 for s in self.strides), f"must be > 0: {self.strides}")
        check(self, "ratios", len(self.ratios) > 0, "must not be empty")
        check(self, "ratios", all(r > 0 for r in self.ratios), f"must be > 0: {self.ratios}")
        octave = (self.octave_base_scale, self.scales_per_octave)
        if self.scales is None:
            check(
                self,
                "scales",
                None not in octave,
                "is None, so octave_base_scale and scales_per_octave must both be set",
            )
            check_positive(self, "octave_base_scale", "scales_per_octave")
        else:
            check(
                self,
                "scales",
                octave == (None, None),
                "and octave_base_scale/scales_per_octave are exclusive; set scales=None",
            )
            check(self, "scales", len(self.scales) > 0, "must not be empty")
            check(self, "scales", all(k > 0 for k in self.scales), f"must be > 0: {self.scales}")
        if self.base_sizes is not None:
            check(
                self,
                "base_sizes",
                len(self.base_sizes) == len(self.strides),
                f"must have one value per stride ({len(self.strides)}), got {self.base_sizes}",
            )
        check(
            self,
            "center_offset",
            0.0 <= self.center_offset < 1.0,
            f"must be in [0, 1), got {self.center_offset}",
        )


def anchor_scales(cfg: AnchorGeneratorConfig) -> tuple[float, ...]:
    """The scales used at every level (explicit, or derived from the octave settings)."""
    if cfg.scales is not None:
        return tuple(float(k) for k in cfg.scales)
    per_octave = int(cfg.scales_per_octave)
    return tuple(float(cfg.octave_base_scale) * 2 ** (i / per_octave) for i in range(per_octave))


def num_base_anchors(cfg: AnchorGeneratorConfig) -> int:
    """Anchors per feature-map location (the same at every level): ``len(ratios) * len(scales)``."""
    return len(cfg.ratios) * len(anchor_scales(cfg))


def _base_sizes(cfg: AnchorGeneratorConfig) -> tuple[int, ...]:
    return cfg.strides if cfg.base_sizes is None else cfg.base_sizes


def base_anchors(
    cfg: AnchorGeneratorConfig, device: torch.device | str | None = None
) -> list[Tensor]:
    """Anchors of the location at the origin, one Tensor[A, 4] (xyxy) per level."""
    ratios = torch.tensor(cfg.ratios, dtype=torch.float32, device=device)
    scales = torch.tensor(anchor_scales(cfg), dtype=torch.float32, device=device)
    h_ratios = ratios.sqrt()
    w_ratios = 1.0 / h_ratios
    out = []
    for size in _base_sizes(cfg):
        centre = cfg.center_offset * size
        ws = (size * w_ratios[:, None] * scales[None, :]).reshape(-1)  # [R, S] -> [A]
        hs = (size * h_ratios[:, None] * scales[None, :]).reshape(-1)  # [R, S] -> [A]
        half_w, half_h = 0.5 * ws, 0.5 * hs
        corners = (centre - half_w, centre - half_h, centre + half_w, centre + half_h)
        out.append(torch.stack(corners, dim=1))  # [A, 4]
    return out


def _check_sizes(cfg: AnchorGeneratorConfig, featmap_sizes: Sequence[Sequence[int]]) -> None:
    if len(featmap_sizes) != len(cfg.strides):
        raise ValueError(
            f"anchors: got {len(featmap_sizes)} feature maps for {len(cfg.strides)} strides "
            f"{cfg.strides}; the neck's num_outs must match AnchorGeneratorConfig.strides"
        )


def grid_anchors(
    cfg: AnchorGeneratorConfig,
    featmap_sizes: Sequence[Sequence[int]],
    device: torch.device | str | None = None,
) -> list[Tensor]:
    """All anchors of each level, computed once per (config, feature shapes, device).

    Every step of a fixed-size batch needs the same anchors, so they come from a small cache
    keyed by what determines them; the tensors are shared: treat them as read-only.

    Args:
        featmap_sizes: ``(H, W)`` of each level, finest first, one per stride.

    Returns:
        One Tensor[H * W * A, 4] (xyxy, float32) per level, location-major.
    """
    _check_sizes(cfg, featmap_sizes)
    sizes = tuple((int(h), int(w)) for h, w in featmap_sizes)
    return list(_cached_grid_anchors(cfg, sizes, torch.device(device or "cpu")))


@functools.lru_cache(maxsize=32)
def _cached_grid_anchors(
    cfg: AnchorGeneratorConfig, featmap_sizes: tuple[tuple[int, int], ...], device: torch.device
) -> tuple[Tensor, ...]:
    # plain tensors even when first asked for under inference_mode (they outlive it)
    with torch.inference_mode(False):
        return tuple(_grid_anchors(cfg, featmap_sizes, device))


def _grid_anchors(
    cfg: AnchorGeneratorConfig, featmap_sizes: Sequence[Sequence[int]], device: torch.device
) -> list[Tensor]:
    out = []
    for base, stride, (height, width) in zip(base_anchors(cfg, device), cfg.strides, featmap_sizes):
        shift_x = torch.arange(int(width), dtype=torch.float32, device=device) * stride
        shift_y = torch.arange(int(height), dtype=torch.float32, device=device) * stride
        yy, xx = torch.meshgrid(shift_y, shift_x, indexing="ij")  # [H, W] each, x fastest
        shifts = torch.stack((xx, yy, xx, yy), dim=-1).reshape(-1, 1, 4)  # [H*W, 1, 4]
        out.append((shifts + base[None]).reshape(-1, 4))  # [H*W, A, 4] -> [H*W*A, 4]
    return out


def valid_flags(
    cfg: AnchorGeneratorConfig,
    featmap_sizes: Sequence[Sequence[int]],
    pad_shapes: Tensor,
) -> list[Tensor]:
    """Which anchors lie on feature cells covered by each image's own padded extent.

    A batch is padded to its largest image; cells beyond ``ceil(pad_h / stride)`` rows or
    ``ceil(pad_w / stride)`` columns of an image only see batch padding, so their anchors are
    invalid for that image (mmdetection computes this from each image's ``pad_shape``).

    Args:
        featmap_sizes: ``(H, W)`` per level.
        pad_shapes (Tensor[B, 2]): ``(h, w)`` of each image after its own padding.

    Returns:
        One bool Tensor[B, H * W * A] per level.
    """
    _check_sizes(cfg, featmap_sizes)
    if pad_shapes.dim() != 2 or pad_shapes.shape[1] != 2:
        raise ValueError(f"valid_flags: pad_shapes must be [B, 2], got {tuple(pad_shapes.shape)}")
    per_location = num_base_anchors(cfg)
    out = []
    for stride, (height, width) in zip(cfg.strides, featmap_sizes):
        valid_h = torch.ceil(pad_shapes[:, 0].double() / stride).clamp(max=height)  # [B]
        valid_w = torch.ceil(pad_shapes[:, 1].double() / stride).clamp(max=width)  # [B]
        rows = torch.arange(int(height), device=pad_shapes.device)
        cols = torch.arange(int(width), device=pad_shapes.device)
        ok = (rows[None, :, None] < valid_h[:, None, None]) & (
            cols[None, None, :] < valid_w[:, None, None]
        )  # [B, H, W]
        out.append(ok.repeat_interleave(per_location, dim=2).reshape(ok.shape[0], -1))
    return out


def inside_flags(
    anchors: Tensor, flags: Tensor, img_shapes: Tensor, allowed_border: float = -1.0
) -> Tensor:
    """Valid anchors that also lie inside the image up to ``allowed_border`` pixels.

    Args:
        anchors (Tensor[N, 4]): xyxy anchors shared by all images.
        flags (Tensor[B, N]): bool valid flags.
        img_shapes (Tensor[B, 2]): ``(h, w)`` of each image before padding.
        allowed_border: a negative value keeps every valid anchor (mmdetection's ``-1``).

    Returns:
        Tensor[B, N] bool.
    """
    if allowed_border < 0:
        return flags
    h = img_shapes[:, 0, None].to(anchors.dtype)  # [B, 1]
    w = img_shapes[:, 1, None].to(anchors.dtype)  # [B, 1]
    return (
        flags
        & (anchors[None, :, 0] >= -allowed_border)
        & (anchors[None, :, 1] >= -allowed_border)
        & (anchors[None, :, 2] < w + allowed_border)
        & (anchors[None, :, 3] < h + allowed_border)
    )


@dataclass(frozen=True)
class AnchorGenerator:
    """A configured generator; the methods are the module functions with ``cfg`` bound."""

    cfg: AnchorGeneratorConfig

    @property
    def num_base_anchors(self) -> int:
        return num_base_anchors(self.cfg)

    @property
    def num_base_priors(self) -> int:
        return num_base_anchors(self.cfg)

    @property
    def num_levels(self) -> int:
        return len(self.cfg.strides)

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(self.cfg.strides)

    def grid_anchors(self, featmap_sizes, device=None) -> list[Tensor]:
        return grid_anchors(self.cfg, featmap_sizes, device)

    def grid_priors(self, featmap_sizes, device=None) -> list[Tensor]:
        """The prior-generator interface: anchors of each level."""
        return grid_anchors(self.cfg, featmap_sizes, device)

    def valid_flags(self, featmap_sizes, pad_shapes: Tensor) -> list[Tensor]:
        return valid_flags(self.cfg, featmap_sizes, pad_shapes)


@register(AnchorGeneratorConfig)
def build_anchor_generator(cfg: AnchorGeneratorConfig, **context) -> AnchorGenerator:
    """Build an :class:`AnchorGenerator`; ``context`` is unused."""
    del context
    return AnchorGenerator(cfg)
