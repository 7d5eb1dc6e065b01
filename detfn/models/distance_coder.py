"""Boxes as distances from a point to their four sides (mmdetection's ``DistancePointBBoxCoder``).

FCOS regresses, at a point ``(px, py)``, the distances ``(l, t, r, b)`` to the left, top, right
and bottom sides of the box it belongs to::

    l = px - x1    t = py - y1    r = x2 - px    b = y2 - py

and decoding inverts it: ``(px - l, py - t, px + r, py + b)``, optionally clipped to the image.
A point inside its box has four positive distances. Both directions work on any leading dims,
so a whole batch ``[B, N, 4]`` is coded in one call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from detfn.boxes import check_boxes, clip_boxes
from detfn.models.coders import BBoxCoderConfig
from detfn.registry import register

__all__ = [
    "DistancePointBBoxCoder",
    "DistancePointBBoxCoderConfig",
    "boxes_to_distances",
    "build_distance_point_coder",
    "distances_to_boxes",
]


def _as_points(points: Tensor, other: Tensor, other_name: str) -> Tensor:
    """``points`` [..., 2] as given, or the centres of prior boxes [..., 4] (points given as
    zero-size boxes, as the prior-generator interface returns them)."""
    check_boxes(other, other_name)
    if points.shape[-1:] not in ((2,), (4,)) or points.shape[:-1] != other.shape[:-1]:
        raise ValueError(
            f"points must be [..., 2] (or prior boxes [..., 4]) with the leading dims of "
            f"{other_name} {tuple(other.shape[:-1])}, got {tuple(points.shape)}"
        )
    if points.shape[-1] == 4:
        return (points[..., :2] + points[..., 2:]) * 0.5
    return points


def boxes_to_distances(
    points: Tensor, boxes: Tensor, max_dis: float | None = None, eps: float = 0.1
) -> Tensor:
    """Distances from each point to the sides of its box.

    Args:
        points (Tensor[..., 2]): ``(x, y)``; or Tensor[..., 4] prior boxes, whose centres are
            used (points as zero-size boxes).
        boxes (Tensor[..., 4]): xyxy, same leading dims.
        max_dis: if given, distances are clamped to ``[0, max_dis - eps]`` (mmdetection's GFL
            option, so that an integral over ``max_dis`` bins can represent them).

    Returns:
        Tensor[..., 4]: ``(l, t, r, b)``; negative where the point lies outside the box.
    """
    points = _as_points(points, boxes, "boxes")
    px, py = points[..., 0], points[..., 1]
    dist = torch.stack(
        (px - boxes[..., 0], py - boxes[..., 1], boxes[..., 2] - px, boxes[..., 3] - py), dim=-1
    )
    if max_dis is not None:
        dist = dist.clamp(min=0, max=max_dis - eps)
    return dist


def distances_to_boxes(
    points: Tensor, distances: Tensor, max_shape: tuple[int, int] | Tensor | None = None
) -> Tensor:
    """Boxes whose sides lie at ``distances`` from ``points``.

    Args:
        points (Tensor[..., 2]): ``(x, y)``, or Tensor[..., 4] prior boxes (their centres).
        distances (Tensor[..., 4]): ``(l, t, r, b)``, same leading dims.
        max_shape: ``(H, W)`` or Tensor[*P, 2] per image (P a prefix of the leading dims); the
            boxes are clipped to it when given.

    Returns:
        Tensor[..., 4]: xyxy.
    """
    points = _as_points(points, distances, "distances")
    px, py = points[..., 0], points[..., 1]
    boxes = torch.stack(
        (
            px - distances[..., 0],
            py - distances[..., 1],
            px + distances[..., 2],
            py + distances[..., 3],
        ),
        dim=-1,
    )
    return boxes if max_shape is None else clip_boxes(boxes, max_shape)


@dataclass(frozen=True)
class DistancePointBBoxCoderConfig(BBoxCoderConfig):
    """mmdetection's ``DistancePointBBoxCoder``: decoded boxes are clipped to the image."""

    clip_border: bool = True


@dataclass(frozen=True)
class DistancePointBBoxCoder:
    """A configured coder: :func:`boxes_to_distances` / :func:`distances_to_boxes`."""

    cfg: DistancePointBBoxCoderConfig

    def encode(
        self, points: Tensor, boxes: Tensor, max_dis: float | None = None, eps: float = 0.1
    ) -> Tensor:
        """Distances [..., 4] from ``points`` [..., 2] to the sides of ``boxes`` [..., 4]."""
        return boxes_to_distances(points, boxes, max_dis, eps)

    def decode(
        self,
        points: Tensor,
        distances: Tensor,
        max_shape: tuple[int, int] | Tensor | None = None,
    ) -> Tensor:
        """Boxes [..., 4] from ``points`` and ``distances``, clipped to ``max_shape``."""
        clip_to = max_shape if self.cfg.clip_border else None
        return distances_to_boxes(points, distances, clip_to)


@register(DistancePointBBoxCoderConfig)
def build_distance_point_coder(
    cfg: DistancePointBBoxCoderConfig, **context
) -> DistancePointBBoxCoder:
    """Build a :class:`DistancePointBBoxCoder`; ``context`` is unused."""
    del context
    return DistancePointBBoxCoder(cfg)
