"""COCO evaluation split over the ranks of a data-parallel job (mmdetection's
``multi_gpu_test`` + ``collect_results``): each rank predicts its shard of the loader, rank 0
scores the whole dataset once, every rank receives the metrics."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from detfn.apis.evaluate import (
    PredictFn,
    collect_detections,
    evaluate_dataset,
    label_to_category,
    score_detections,
)
from detfn.dist import evaluate_on_ranks, is_distributed
from detfn.structures import Batch, ImageDetections

__all__ = ["evaluate_dataset_on_ranks"]


def evaluate_dataset_on_ranks(
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
    """:func:`~detfn.apis.evaluate.evaluate_dataset` where ``loader`` is this rank's shard
    (``build_loader(..., rank=, world_size=)``, dataset order ``indices[rank::world]``).

    Detections travel to rank 0 as CPU tensors (``all_gather_object``), which puts them back in
    dataset order; the results json is written there only; one process is plain
    ``evaluate_dataset``.
    """
    if not is_distributed():
        return evaluate_dataset(
            predict,
            params,
            buffers,
            dataset,
            loader,
            class_names=class_names,
            device=device,
            classwise=classwise,
            results_json=results_json,
            on_batch=on_batch,
        )

    cat_ids = label_to_category(dataset, class_names)  # fail before predicting

    def predict_shard() -> list[tuple[ImageDetections, int]]:
        dets, ids = collect_detections(predict, params, buffers, loader, device, on_batch)
        return list(zip(dets, ids))

    def score(pairs: list[tuple[ImageDetections, int]]) -> dict[str, Any]:
        dets = [d for d, _ in pairs]
        ids = [i for _, i in pairs]
        return score_detections(
            dataset, dets, ids, cat_ids, classwise=classwise, results_json=results_json
        )

    return evaluate_on_ranks(predict_shard, score, len(dataset))
