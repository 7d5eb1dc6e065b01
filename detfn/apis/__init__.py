"""Train / test / inference APIs: plain functions over an :class:`ExperimentConfig`."""

from detfn.apis.evaluate import collect_detections, evaluate_dataset
from detfn.apis.experiment import DataConfig, ExperimentConfig
from detfn.apis.inference import Detector, inference_detector, load_detector, save_drawing
from detfn.apis.instance_presets import (
    INSTANCE_PRESETS,
    cascade_coco_preset,
    cascade_nuclei_preset,
    mask_rcnn_coco_preset,
    mask_rcnn_nuclei_preset,
)
from detfn.apis.presets import (
    ATSS_R50_FPN_1X_COCO,
    FASTER_RCNN_R50_FPN_1X_COCO,
    FCOS_R50_CAFFE_FPN_GN_HEAD_1X_COCO,
    RETINANET_R50_FPN_1X_COCO,
    atss_bccd_preset,
    atss_coco_preset,
    bccd_cpu_preset,
    coco_preset,
    fcos_bccd_preset,
    fcos_coco_preset,
    retinanet_bccd_preset,
    retinanet_coco_preset,
)
from detfn.apis.presets import PRESETS as BOX_PRESETS
from detfn.apis.train import build_experiment, resolve_device, train_detector
from detfn.apis.tta import TestTimeAugConfig  # registered: a pipeline may name it

# Every detector's presets by name (experiments' shared CLI); the first preset is the default.
PRESETS = {**BOX_PRESETS, **INSTANCE_PRESETS}

__all__ = [
    "ATSS_R50_FPN_1X_COCO",
    "FASTER_RCNN_R50_FPN_1X_COCO",
    "FCOS_R50_CAFFE_FPN_GN_HEAD_1X_COCO",
    "PRESETS",
    "RETINANET_R50_FPN_1X_COCO",
    "DataConfig",
    "atss_bccd_preset",
    "atss_coco_preset",
    "fcos_bccd_preset",
    "fcos_coco_preset",
    "Detector",
    "TestTimeAugConfig",
    "ExperimentConfig",
    "bccd_cpu_preset",
    "build_experiment",
    "cascade_coco_preset",
    "cascade_nuclei_preset",
    "mask_rcnn_coco_preset",
    "mask_rcnn_nuclei_preset",
    "coco_preset",
    "collect_detections",
    "evaluate_dataset",
    "inference_detector",
    "load_detector",
    "resolve_device",
    "retinanet_bccd_preset",
    "retinanet_coco_preset",
    "save_drawing",
    "train_detector",
]
