"""Evaluate a detector on a dataset: predictions -> COCO results json -> pycocotools metrics."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from detfn.evaluation.coco import coco_evaluate, detections_to_coco_results, write_results_json
from detfn.structures import Batch, ImageDetections

__all__ = ["collect_detections", "evaluate_dataset"]

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
    """Run ``predict`` over a loader; per image, detections on the CPU and the image id."""
    detections: list[ImageDetections] = []
    image_ids: list[int] = []
    for batch in loader:
        images = batch.images.to(device, non_blocking=True)
        predictions = predict(params, buffers, images, batch.metas)
        dets = [d.to("cpu") for d in predictions]
        if on_batch is not None:
            on_batch(batch, dets)
        detections.extend(dets)
        image_ids.extend(m.image_id for m in batch.metas)
    return detections, image_ids


def evaluate_dataset(
    predict: PredictFn,
    params: Mapping[str, torch.Tensor],
    buffers: Mapping[str, torch.Tensor],
    dataset: Any,
    loader: Iterable[Batch],
    *,
    device: torch.device | str = "cpu",
    classwise: bool = False,
    results_json: str | os.PathLike[str] | None = None,
    on_batch: Callable[[Batch, list[ImageDetections]], None] | None = None,
) -> dict[str, Any]:
    """COCO bbox metrics of ``predict`` on ``dataset`` (the dataset ``loader`` reads).

    Results are written with the dataset's original category ids to ``results_json`` when given.
    """
    detections, image_ids = collect_detections(predict, params, buffers, loader, device, on_batch)
    results = detections_to_coco_results(detections, image_ids, dataset.label_to_cat_id)
    if results_json is not None:
        write_results_json(results, Path(results_json))
    return coco_evaluate(dataset.coco, results, classwise=classwise, img_ids=dataset.image_ids)
