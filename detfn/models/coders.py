"""Box coding: boxes as normalized deltas from reference boxes (anchors or proposals).

``DeltaXYWHBBoxCoder`` of mmdetection 2.x. With a reference box ``p`` (centre ``px, py``, size
``pw = x2 - x1``, ``ph = y2 - y1``, no ``+ 1``) and a target ``g``::

    dx = (gx - px) / pw      dy = (gy - py) / ph
    dw = log(gw / pw)        dh = log(gh / ph)
    delta = (d - means) / stds

and decoding inverts it, clamping ``dw, dh`` to ``±|log(wh_ratio_clip)|`` so one box never grows
more than ``1000 / 16`` times its reference (an exp overflow guard, as in mmdetection). Both
directions work on any leading dims, so a whole batch [B, N, 4] is coded in one call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from detfn.boxes import check_boxes, clip_boxes
from detfn.config import Config, check, check_positive
from detfn.registry import register

__all__ = [
    "DEFAULT_WH_RATIO_CLIP",
    "BBoxCoderConfig",
    "DeltaXYWHBBoxCoder",
    "DeltaXYWHBBoxCoderConfig",
    "build_delta_xywh_coder",
    "decode_deltas",
    "encode_deltas",
]

# A decoded box may be at most 1000/16 times larger (or smaller) than its reference box:
# mmdetection's default, so log-size deltas are clamped at log(1000 / 16) ~= 4.135.
DEFAULT_WH_RATIO_CLIP = 16 / 1000

Vector4 = tuple[float, float, float, float]


def _as_tensor(values: Vector4 | Tensor, like: Tensor) -> Tensor:
    return torch.as_tensor(values, dtype=like.dtype, device=like.device)


def _check_pair(boxes: Tensor, other: Tensor, other_name: str) -> None:
    check_boxes(boxes, "boxes")
    check_boxes(other, other_name)
    if boxes.shape != other.shape:
        raise ValueError(
            f"boxes and {other_name} must have the same shape, got {tuple(boxes.shape)} and "
            f"{tuple(other.shape)}"
        )


def encode_deltas(
    boxes: Tensor,
    gt: Tensor,
    means: Vector4 = (0.0, 0.0, 0.0, 0.0),
    stds: Vector4 = (1.0, 1.0, 1.0, 1.0),
) -> Tensor:
    """Deltas that turn ``boxes`` into ``gt``.

    Args:
        boxes (Tensor[..., 4]): xyxy reference boxes with positive width and height.
        gt (Tensor[..., 4]): xyxy targets, same shape.
        means, stds: normalization of the 4 delta channels.

    Returns:
        Tensor[..., 4]: ``(dx, dy, dw, dh)``, normalized.
    """
    _check_pair(boxes, gt, "gt")
    pw = boxes[..., 2] - boxes[..., 0]
    ph = boxes[..., 3] - boxes[..., 1]
    px = (boxes[..., 0] + boxes[..., 2]) * 0.5
    py = (boxes[..., 1] + boxes[..., 3]) * 0.5
    gw = gt[..., 2] - gt[..., 0]
    gh = gt[..., 3] - gt[..., 1]
    gx = (gt[..., 0] + gt[..., 2]) * 0.5
    gy = (gt[..., 1] + gt[..., 3]) * 0.5
    deltas = torch.stack(
        ((gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)), dim=-1
    )
    return (deltas - _as_tensor(means, deltas)) / _as_tensor(stds, deltas)


def decode_deltas(
    boxes: Tensor,
    deltas: Tensor,
    means: Vector4 = (0.0, 0.0, 0.0, 0.0),
    stds: Vector4 = (1.0, 1.0, 1.0, 1.0),
    max_shape: tuple[int, int] | Tensor | None = None,
    wh_ratio_clip: float = DEFAULT_WH_RATIO_CLIP,
    clip_border: bool = True,
) -> Tensor:
    """Apply normalized deltas to reference boxes.

    Args:
        boxes (Tensor[..., 4]): xyxy reference boxes.
        deltas (Tensor[..., 4]): normalized ``(dx, dy, dw, dh)``, same shape.
        means, stds: the normalization used by :func:`encode_deltas`.
        max_shape: ``(H, W)``, or Tensor[*P, 2] per image (P a prefix of the leading dims, e.g.
            [B, 2] for [B, N, 4]); with ``clip_border`` the result is clipped to it.
        wh_ratio_clip: ``dw, dh`` are clamped to ``±|log(wh_ratio_clip)|``.
        clip_border: clip to ``max_shape`` when it is given.

    Returns:
        Tensor[..., 4]: decoded xyxy boxes.
    """
    _check_pair(boxes, deltas, "deltas")
    denorm = deltas * _as_tensor(stds, deltas) + _as_tensor(means, deltas)
    max_ratio = abs(math.log(wh_ratio_clip))
    dx, dy = denorm[..., 0], denorm[..., 1]
    dw = denorm[..., 2].clamp(min=-max_ratio, max=max_ratio)
    dh = denorm[..., 3].clamp(min=-max_ratio, max=max_ratio)
    pw = boxes[..., 2] - boxes[..., 0]
    ph = boxes[..., 3] - boxes[..., 1]
    px = (boxes[..., 0] + boxes[..., 2]) * 0.5
    py = (boxes[..., 1] + boxes[..., 3]) * 0.5
    gw = pw * dw.exp()
    gh = ph * dh.exp()
    gx = px + pw * dx
    gy = py + ph * dy
    decoded = torch.stack((gx - 0.5 * gw, gy - 0.5 * gh, gx + 0.5 * gw, gy + 0.5 * gh), dim=-1)
    if clip_border and max_shape is not None:
        decoded = clip_boxes(decoded, max_shape)
    return decoded


@dataclass(frozen=True)
class BBoxCoderConfig(Config):
    """Base of every box coder config. Its builder returns an object with
    ``encode(priors [..., 4], gt [..., 4]) -> targets`` and
    ``decode(priors, preds, max_shape=None) -> boxes [..., 4]``."""


@dataclass(frozen=True)
class DeltaXYWHBBoxCoderConfig(BBoxCoderConfig):
    """mmdetection's ``DeltaXYWHBBoxCoder``.

    RPN uses stds 1, the R-CNN head (0.1, 0.1, 0.2, 0.2).
    """

    target_means: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)
    target_stds: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    clip_border: bool = True
    wh_ratio_clip: float = DEFAULT_WH_RATIO_CLIP

    def __post_init__(self) -> None:
        for name in ("target_means", "target_stds"):
            value = getattr(self, name)
            check(self, name, len(value) == 4, f"must have 4 values, got {value!r}")
        check(
            self,
            "target_stds",
            all(s > 0 for s in self.target_stds),
            f"must be > 0, got {self.target_stds!r}",
        )
        check_positive(self, "wh_ratio_clip")


@dataclass(frozen=True)
class DeltaXYWHBBoxCoder:
    """A configured coder: :func:`encode_deltas` / :func:`decode_deltas` with fixed settings."""

    cfg: DeltaXYWHBBoxCoderConfig

    def encode(self, boxes: Tensor, gt: Tensor) -> Tensor:
        """Deltas [..., 4] from reference ``boxes`` [..., 4] to ``gt`` [..., 4] (xyxy)."""
        return encode_deltas(boxes, gt, self.cfg.target_means, self.cfg.target_stds)

    def decode(
        self, boxes: Tensor, deltas: Tensor, max_shape: tuple[int, int] | Tensor | None = None
    ) -> Tensor:
        """Boxes [..., 4] (xyxy) from ``boxes`` and ``deltas``, clipped to ``max_shape``."""
        return decode_deltas(
            boxes,
            deltas,
            self.cfg.target_means,
            self.cfg.target_stds,
            max_shape=max_shape,
            wh_ratio_clip=self.cfg.wh_ratio_clip,
            clip_border=self.cfg.clip_border,
        )


@register(DeltaXYWHBBoxCoderConfig)
def build_delta_xywh_coder(cfg: DeltaXYWHBBoxCoderConfig, **context) -> DeltaXYWHBBoxCoder:
    """Build a :class:`DeltaXYWHBBoxCoder`; ``context`` is unused."""
    del context
    return DeltaXYWHBBoxCoder(cfg)
