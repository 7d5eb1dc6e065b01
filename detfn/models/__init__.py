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
from detfn.models.detectors import (
    FASTER_RCNN_R50_FPN,
    RETINANET_R50_FPN,
    DetectorConfig,
    SingleStageDetectorConfig,
    TwoStageDetectorConfig,
)

__all__ = [
    "FASTER_RCNN_R50_FPN",
    "RETINANET_R50_FPN",
    "DetectorConfig",
    "SingleStageDetectorConfig",
    "TwoStageDetectorConfig",
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
