"""Train / test / inference APIs: plain functions over an :class:`ExperimentConfig`."""

from detfn.apis.evaluate import collect_detections, evaluate_dataset
from detfn.apis.experiment import (
    FASTER_RCNN_R50_FPN_1X_COCO,
    DataConfig,
    ExperimentConfig,
    bccd_cpu_preset,
    coco_preset,
)
from detfn.apis.inference import Detector, inference_detector, load_detector, save_drawing
from detfn.apis.train import build_experiment, resolve_device, train_detector
from detfn.apis.tta import TestTimeAugConfig  # registered: a pipeline may name it

__all__ = [
    "FASTER_RCNN_R50_FPN_1X_COCO",
    "DataConfig",
    "Detector",
    "TestTimeAugConfig",
    "ExperimentConfig",
    "bccd_cpu_preset",
    "build_experiment",
    "coco_preset",
    "collect_detections",
    "evaluate_dataset",
    "inference_detector",
    "load_detector",
    "resolve_device",
    "save_drawing",
    "train_detector",
]
