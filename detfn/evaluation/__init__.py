"""Dataset metrics: COCO bbox mAP through pycocotools."""

from detfn.evaluation.coco import (
    METRIC_NAMES,
    coco_evaluate,
    detections_to_coco_results,
    format_classwise_table,
    load_coco,
    write_results_json,
)

__all__ = [
    "METRIC_NAMES",
    "coco_evaluate",
    "detections_to_coco_results",
    "format_classwise_table",
    "load_coco",
    "write_results_json",
]
