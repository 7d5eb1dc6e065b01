"""Named detectors: values of the assemblies, as mmdetection's model ``_base_`` files.

* :data:`FASTER_RCNN_R50_FPN`: ``faster_rcnn_r50_fpn`` (section 2.1 of mmdet-facts), the
  two-stage assembly with its defaults;
* :data:`RETINANET_R50_FPN`: ``retinanet_r50_fpn`` (section 2.2), the single-stage assembly
  with its defaults.

Variants are ``detfn.config.override(FASTER_RCNN_R50_FPN, "backbone.depth", 101)``.
"""

from __future__ import annotations

from detfn.models.detectors.single_stage import SingleStageDetectorConfig
from detfn.models.detectors.two_stage import TwoStageDetectorConfig

__all__ = ["DetectorConfigs", "FASTER_RCNN_R50_FPN", "RETINANET_R50_FPN"]

FASTER_RCNN_R50_FPN = TwoStageDetectorConfig()
RETINANET_R50_FPN = SingleStageDetectorConfig()

# Every detector config type, for a field that takes any detector (``ExperimentConfig.model``).
DetectorConfigs = TwoStageDetectorConfig | SingleStageDetectorConfig
