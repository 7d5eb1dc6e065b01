"""Detectors: backbone + neck + heads assembled from one config."""

from detfn.models.detectors.faster_rcnn import FasterRCNN, FasterRCNNConfig, build_faster_rcnn

__all__ = ["FasterRCNN", "FasterRCNNConfig", "build_faster_rcnn"]
