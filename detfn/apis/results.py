"""Detections to analyse: a COCO results file, or a checkpoint run over a config's dataset.

Both end as COCO result dicts (``bbox`` xywh in original pixels, the dataset's category ids) next
to the dataset they describe, which is the form every analysis in this package reads.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from detfn.apis import collect_detections, load_detector
from detfn.data import build_loader
from detfn.evaluation.coco import detections_to_coco_results
from detfn.models.functional import detector_predict_fn
from detfn.registry import build

__all__ = ["Evaluated", "dataset_of", "load_results", "predict_results", "results_of"]

Split = Literal["test", "val"]


@dataclass(frozen=True)
class Evaluated:
    """A dataset (with ``coco``, ``class_names``, ``label_to_cat_id``, ``image_ids``) and COCO
    result dicts of detections on it."""

    dataset: Any
    results: list[dict[str, Any]]


def dataset_of(cfg: Any, split: Split = "val") -> Any:
    """The built test (or val) dataset of an experiment config; the other split when one is
    missing."""
    data = cfg.data
    chosen = (data.test or data.val) if split == "test" else (data.val or data.test)
    if chosen is None:
        raise ValueError("the config names no data.val or data.test dataset to analyse")
    return build(chosen, seed=cfg.seed)


def load_results(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """A COCO results json (a list of ``{image_id, bbox, score, category_id}``)."""
    path = Path(path)
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read a COCO results json: {error}") from None
    if not isinstance(results, list):
        raise ValueError(f"{path}: a COCO results json is a list, got {type(results).__name__}")
    for i, result in enumerate(results):
        missing = {"image_id", "bbox", "score", "category_id"} - set(result)
        if missing:
            raise ValueError(f"{path}: result {i} lacks keys {sorted(missing)}")
    return results


def predict_results(
    config: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str],
    split: Split = "val",
    device: str = "auto",
    batch_size: int = 2,
) -> Evaluated:
    """Run a checkpoint over its config's dataset; COCO results in the dataset's category ids."""
    detector = load_detector(config, checkpoint, device)
    dataset = dataset_of(detector.cfg, split)
    loader_cfg = dataclasses.replace(
        detector.cfg.data.test_loader, batch_size=batch_size, num_workers=0
    )
    detections, image_ids = collect_detections(
        detector_predict_fn(detector.model),
        detector.params,
        detector.buffers,
        build_loader(dataset, loader_cfg),
        detector.device,
    )
    return Evaluated(
        dataset, detections_to_coco_results(detections, image_ids, dataset.label_to_cat_id)
    )


def results_of(
    config: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str] | None = None,
    results: str | os.PathLike[str] | None = None,
    split: Split = "val",
    device: str = "auto",
) -> Evaluated:
    """Detections from ``results`` (a json file) when given, else from running ``checkpoint``."""
    if (checkpoint is None) == (results is None):
        raise ValueError("give exactly one of a checkpoint and a results file")
    if results is not None:
        from detfn.apis.experiment import ExperimentConfig
        from detfn.config import load

        return Evaluated(dataset_of(load(config, ExperimentConfig), split), load_results(results))
    return predict_results(config, checkpoint, split, device)
