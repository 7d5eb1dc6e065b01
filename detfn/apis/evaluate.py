"""The one evaluation of detfn: predictions -> COCO results -> pycocotools metrics.

The evaluation hook during training, the metrics at the end of an experiment and
``experiments.test`` all call :func:`evaluate_dataset`. Labels are mapped to the dataset's
categories BY NAME, through the model's ``class_names``, and only the model's categories are
scored: a json with extra categories, or with its category ids in another order, gives the same
mAP, and a json that lacks one of the model's classes is an error naming it. Detections with
masks (Mask R-CNN, Cascade Mask R-CNN) are scored as ``segm`` beside ``bbox``, in one dict
(``segm_mAP`` can be monitored by ``save_best``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from detfn.evaluation.coco import (
    category_ids_by_name,
    coco_evaluate,
    detections_to_coco_results,
    write_results_json,
)
from detfn.evaluation.segm import (
    compact_masks,
    detections_to_segm_results,
    write_instance_results,
)
from detfn.structures import Batch, ImageDetections

__all__ = ["collect_detections", "evaluate_dataset", "label_to_category", "score_detections"]

logger = logging.getLogger("detfn.apis")

Tensors = Mapping[str, torch.Tensor]
PredictFn = Callable[[Tensors, Tensors, torch.Tensor, Any], list]


def collect_detections(
    predict: PredictFn,
    params: Mapping[str, torch.Tensor],
    buffers: Mapping[str, torch.Tensor],
    loader: Iterable[Batch],
    device: torch.device | str = "cpu",
    on_batch: Callable[[Batch, list[ImageDetections]], None] | None = None,
) -> tuple[list[ImageDetections], list[int]]:
    """Run ``predict`` over a loader; per image, detections on the CPU and the image id.

    ``on_batch`` sees each batch's detections as predicted; what is kept holds masks as COCO
    RLEs (:func:`detfn.evaluation.segm.compact_masks`), so a large val set fits in memory."""
    detections: list[ImageDetections] = []
    image_ids: list[int] = []
    for batch in loader:
        images = batch.images.to(device, non_blocking=True)
        predictions = predict(params, buffers, images, batch.metas)
        dets = [d.to("cpu") for d in predictions]
        if on_batch is not None:
            on_batch(batch, dets)
        detections.extend(compact_masks(d) for d in dets)
        image_ids.extend(m.image_id for m in batch.metas)
    return detections, image_ids


def label_to_category(dataset: Any, class_names: Sequence[str] | None) -> list[int]:
    """Category id of each model label in ``dataset``'s ground truth, matched by class name.

    ``class_names=None`` (a model saved without names) falls back to the dataset's own label
    order, with a warning: that is only right if the model was trained on the same classes.
    """
    if class_names is None:
        logger.warning(
            "the model config has no class_names: labels are mapped to %s's categories in its "
            "own label order %s",
            getattr(dataset, "source", "the dataset"),
            list(dataset.class_names),
        )
        return list(dataset.label_to_cat_id)
    source = str(getattr(dataset, "source", "") or getattr(dataset, "ann_file", ""))
    return category_ids_by_name(dataset.coco, class_names, source)


def evaluate_dataset(
    predict: PredictFn,
    params: Mapping[str, torch.Tensor],
    buffers: Mapping[str, torch.Tensor],
    dataset: Any,
    loader: Iterable[Batch],
    *,
    class_names: Sequence[str] | None,
    device: torch.device | str = "cpu",
    classwise: bool = False,
    results_json: str | os.PathLike[str] | None = None,
    on_batch: Callable[[Batch, list[ImageDetections]], None] | None = None,
) -> dict[str, Any]:
    """COCO bbox (and, for detections with masks, segm) metrics of ``predict`` on ``dataset``
    (the dataset ``loader`` reads).

    Args:
        class_names: the model's classes in label order (``DetectorConfig.class_names``).
        results_json: where to write the results, with the dataset's category ids; with masks,
            ``<stem>.bbox.json`` and ``<stem>.segm.json`` (RLE) beside it, as mmdetection names
            them.

    Raises:
        ValueError: before any prediction, naming the model classes the dataset lacks.
    """
    cat_ids = label_to_category(dataset, class_names)  # fail before predicting
    detections, image_ids = collect_detections(predict, params, buffers, loader, device, on_batch)
    return score_detections(
        dataset, detections, image_ids, cat_ids, classwise=classwise, results_json=results_json
    )


def score_detections(
    dataset: Any,
    detections: list[ImageDetections],
    image_ids: list[int],
    cat_ids: list[int],
    *,
    classwise: bool = False,
    results_json: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """COCO bbox (and, when every detection has masks, segm) metrics of the whole dataset's
    detections; ``cat_ids[label]`` is each model label's category (:func:`label_to_category`),
    and only those categories are scored. Shared by the single-process and the sharded
    evaluation, which calls it on rank 0 with the gathered detections."""
    with_masks = bool(detections) and all(d.masks is not None for d in detections)
    if not with_masks:
        results = detections_to_coco_results(detections, image_ids, cat_ids)
        if results_json is not None:
            write_results_json(results, Path(results_json))
        return coco_evaluate(
            dataset.coco, results, classwise=classwise, img_ids=dataset.image_ids, cat_ids=cat_ids
        )
    results = detections_to_segm_results(detections, image_ids, cat_ids)
    if results_json is not None:
        path = Path(results_json)
        write_instance_results(results, path.with_suffix(""))
    # Without their boxes, pycocotools gives the segm results mask areas (not box areas) for
    # the small / medium / large split, as mmdetection's evaluation does.
    masks_only = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    metrics: dict[str, Any] = {}
    for iou_type, scored in (("bbox", results), ("segm", masks_only)):
        metrics.update(
            coco_evaluate(
                dataset.coco,
                scored,
                classwise=classwise,
                iou_type=iou_type,
                img_ids=dataset.image_ids,
                cat_ids=cat_ids,
            )
        )
    return metrics
