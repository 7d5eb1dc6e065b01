"""Model parts: backbones, necks, heads, losses and the box logic they share.

Importing this package imports every sub-package so that each config type is registered with
:mod:`detfn.registry`.
"""

from detfn.models import (
    anchors,
    assigners,
    atss_assigner,
    backbones,
    coders,
    dense_heads,
    detectors,
    distance_coder,
    functional,
    losses,
    necks,
    points,
    postprocess,
    roi_heads,
    samplers,
)
from detfn.models.detectors import FasterRCNN, FasterRCNNConfig

__all__ = [
    "FasterRCNN",
    "FasterRCNNConfig",
    "anchors",
    "assigners",
    "atss_assigner",
    "backbones",
    "coders",
    "dense_heads",
    "detectors",
    "distance_coder",
    "functional",
    "losses",
    "necks",
    "points",
    "postprocess",
    "roi_heads",
    "samplers",
]
