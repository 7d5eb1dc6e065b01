"""Detectors: the interface, the single- and two-stage assemblies and the named presets."""

from detfn.models.detectors.base import Detector, DetectorConfig, sum_losses
from detfn.models.detectors.presets import (
    ATSS_R50_FPN,
    CASCADE_MASK_RCNN_R50_FPN,
    CASCADE_RCNN_R50_FPN,
    FASTER_RCNN_R50_FPN,
    FCOS_R50_CAFFE_FPN_GN_HEAD,
    MASK_RCNN_R50_FPN,
    RETINANET_R50_FPN,
    DetectorConfigs,
)
from detfn.models.detectors.single_stage import SingleStageDetector, SingleStageDetectorConfig
from detfn.models.detectors.two_stage import TwoStageDetector, TwoStageDetectorConfig

__all__ = [
    "ATSS_R50_FPN",
    "CASCADE_MASK_RCNN_R50_FPN",
    "CASCADE_RCNN_R50_FPN",
    "FASTER_RCNN_R50_FPN",
    "FCOS_R50_CAFFE_FPN_GN_HEAD",
    "MASK_RCNN_R50_FPN",
    "RETINANET_R50_FPN",
    "Detector",
    "DetectorConfig",
    "DetectorConfigs",
    "SingleStageDetector",
    "SingleStageDetectorConfig",
    "TwoStageDetector",
    "TwoStageDetectorConfig",
    "sum_losses",
]
