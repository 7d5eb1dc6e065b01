"""The contract every dense head keeps, so that a single-stage detector takes any of them.

A dense head predicts, at every location of every feature level, class scores and a box (plus
whatever else it needs, such as FCOS's centerness). The single-stage assembly calls exactly
three methods and nothing else:

* ``forward(feats) -> outputs``: the raw per-level maps (a NamedTuple of per-level lists);
* ``loss(feats, batch, *, generator) -> dict[str, Tensor]``: the named losses of a
  :class:`~detfn.structures.Batch`; every key containing ``loss`` is summed into the total;
  ``generator`` is the only source of randomness a head may draw from (samplers);
* ``predict(feats, img_shapes) -> Detections``: padded detections in the resized-image frame,
  ``img_shapes`` (Tensor[B, 2]) being each image's unpadded ``(h, w)``.

A head config subclasses :class:`DenseHeadConfig`. Its builder receives, as build context,
``in_channels`` (the neck's ``out_channels``, given once in the neck config) and
``num_classes`` (the detector's), so neither is repeated in the head config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from detfn.config import Config
from detfn.structures import Batch, Detections

__all__ = ["DenseHead", "DenseHeadConfig"]


@dataclass(frozen=True)
class DenseHeadConfig(Config):
    """Base of every dense head config (RetinaNet, FCOS, ATSS, and a user's own)."""


class DenseHead(nn.Module):
    """Base class of dense heads: the three methods a single-stage detector calls."""

    def loss(
        self, feats: Sequence[Tensor], batch: Batch, *, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must define loss()")

    def predict(self, feats: Sequence[Tensor], img_shapes: Tensor) -> Detections:
        raise NotImplementedError(f"{type(self).__name__} must define predict()")
