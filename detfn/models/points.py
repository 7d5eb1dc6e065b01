"""Point priors for anchor-free heads (mmdetection 2.x ``MlvlPointGenerator``).

An anchor-free head such as FCOS predicts, at every cell ``(y, x)`` of a level with stride
``s``, the distances from one point to the four sides of a box. The point of that cell is::

    ((x + offset) * s, (y + offset) * s)

``offset = 0.5`` (the default, mmdetection 2.x FCOS) puts the point at the centre of the image
patch the cell covers; ``offset = 0.0`` puts it at the patch's top-left corner, which is where
torchvision's FCOS places its one stride-sized anchor per location (its centre is
``(x * s, y * s)``). Switch between the two with ``PointGeneratorConfig(offset=...)``.

Points are ordered like the anchors of :mod:`detfn.models.anchors`: location-major, x fastest,
so point ``y * W + x`` sits at cell ``(y, x)`` and lines up with head outputs ``[B, C, H, W]``
permuted to ``[B, H, W, C]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from detfn.config import check
from detfn.models.anchors import AnchorGeneratorConfig, PriorGeneratorConfig
from detfn.models.anchors import valid_flags as anchor_valid_flags
from detfn.registry import register

__all__ = [
    "PointGenerator",
    "PointGeneratorConfig",
    "build_point_generator",
    "grid_points",
    "point_strides",
    "point_valid_flags",
]


@dataclass(frozen=True)
class PointGeneratorConfig(PriorGeneratorConfig):
    """One point per feature cell and level; FCOS's P3-P7 strides and centre offset by default."""

    strides: tuple[int, ...] = (8, 16, 32, 64, 128)
    offset: float = 0.5

    def __post_init__(self) -> None:
        check(self, "strides", len(self.strides) > 0, "must not be empty")
        check(self, "strides", all(s > 0 for s in self.strides), f"must be > 0: {self.strides}")
        check(self, "offset", 0.0 <= self.offset < 1.0, f"must be in [0, 1), got {self.offset}")


def _check_sizes(cfg: PointGeneratorConfig, featmap_sizes: Sequence[Sequence[int]]) -> None:
    if len(featmap_sizes) != len(cfg.strides):
        raise ValueError(
            f"points: got {len(featmap_sizes)} feature maps for {len(cfg.strides)} strides "
            f"{cfg.strides}; the neck's num_outs must match PointGeneratorConfig.strides"
        )


def grid_points(
    cfg: PointGeneratorConfig,
    featmap_sizes: Sequence[Sequence[int]],
    device: torch.device | str | None = None,
) -> list[Tensor]:
    """The point of every cell of every level.

    Args:
        featmap_sizes: ``(H, W)`` of each level, finest first, one per stride.

    Returns:
        One Tensor[H * W, 2] (``x, y`` in input-image pixels, float32) per level.
    """
    _check_sizes(cfg, featmap_sizes)
    out = []
    for stride, (height, width) in zip(cfg.strides, featmap_sizes):
        xs = (torch.arange(int(width), dtype=torch.float32, device=device) + cfg.offset) * stride
        ys = (torch.arange(int(height), dtype=torch.float32, device=device) + cfg.offset) * stride
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")  # [H, W] each, x fastest
        out.append(torch.stack((xx, yy), dim=-1).reshape(-1, 2))
    return out


def point_strides(
    cfg: PointGeneratorConfig,
    featmap_sizes: Sequence[Sequence[int]],
    device: torch.device | str | None = None,
) -> list[Tensor]:
    """The stride of each point: one Tensor[H * W] (float32) per level, for ``grid_points``."""
    _check_sizes(cfg, featmap_sizes)
    return [
        torch.full((int(h) * int(w),), float(stride), device=device)
        for stride, (h, w) in zip(cfg.strides, featmap_sizes)
    ]


def point_valid_flags(
    cfg: PointGeneratorConfig, featmap_sizes: Sequence[Sequence[int]], pad_shapes: Tensor
) -> list[Tensor]:
    """Which points lie on cells covered by each image's own padded extent.

    Cells past ``ceil(pad_h / stride)`` rows or ``ceil(pad_w / stride)`` columns only see the
    batch's padding (mmdetection's ``MlvlPointGenerator.valid_flags``).

    Args:
        pad_shapes (Tensor[B, 2]): ``(h, w)`` of each image after its own padding.

    Returns:
        One bool Tensor[B, H * W] per level.
    """
    # One anchor per location is valid exactly where its cell's point is.
    one_per_cell = AnchorGeneratorConfig(strides=cfg.strides, ratios=(1.0,), scales=(1.0,))
    return anchor_valid_flags(one_per_cell, featmap_sizes, pad_shapes)


@dataclass(frozen=True)
class PointGenerator:
    """A configured generator; the methods are the module functions with ``cfg`` bound."""

    cfg: PointGeneratorConfig

    @property
    def num_levels(self) -> int:
        return len(self.cfg.strides)

    @property
    def num_base_priors(self) -> int:
        """One point per location (the prior-generator interface shared with anchors)."""
        return 1

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(self.cfg.strides)

    def grid_points(self, featmap_sizes, device=None) -> list[Tensor]:
        return grid_points(self.cfg, featmap_sizes, device)

    def grid_priors(self, featmap_sizes, device=None) -> list[Tensor]:
        """The prior-generator interface: each point as a zero-size xyxy box, Tensor[H * W, 4]
        per level, so code written for anchors (centres, ``[..., 4]`` priors) takes points."""
        return [p.repeat(1, 2) for p in grid_points(self.cfg, featmap_sizes, device)]

    def point_strides(self, featmap_sizes, device=None) -> list[Tensor]:
        return point_strides(self.cfg, featmap_sizes, device)

    def valid_flags(self, featmap_sizes, pad_shapes: Tensor) -> list[Tensor]:
        return point_valid_flags(self.cfg, featmap_sizes, pad_shapes)


@register(PointGeneratorConfig)
def build_point_generator(cfg: PointGeneratorConfig, **context) -> PointGenerator:
    """Build a :class:`PointGenerator`; ``context`` is unused."""
    del context
    return PointGenerator(cfg)
