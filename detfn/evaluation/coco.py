"""COCO bbox evaluation through pycocotools, with mmdetection's metric names.

``detections_to_coco_results`` turns per-image detections into COCO result dicts (``xywh`` boxes,
the dataset's original category ids); ``coco_evaluate`` runs ``COCOeval`` and returns
``bbox_mAP``, ``bbox_mAP_50``, ``bbox_mAP_75``, ``bbox_mAP_s``, ``bbox_mAP_m``, ``bbox_mAP_l`` as
mmdetection 2.x names them. As there, ``maxDets`` defaults to ``(100, 300, 1000)``: the AP numbers
use the last one, which equals pycocotools' default (100) when a detector keeps at most 100 boxes
per image.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import pathlib
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = [
    "METRIC_NAMES",
    "category_ids_by_name",
    "coco_evaluate",
    "detections_to_coco_results",
    "format_classwise_table",
    "load_coco",
    "write_results_json",
]

# COCOeval.stats index of each metric (AP over IoU .50:.95, .50, .75, small, medium, large).
METRIC_NAMES = ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")


def detections_to_coco_results(
    detections: Sequence[Any],
    image_ids: Sequence[int],
    label_to_cat_id: Sequence[int] | Mapping[int, int],
) -> list[dict[str, Any]]:
    """COCO result dicts for per-image detections in original image coordinates.

    Args:
        detections: one ``(boxes, scores, labels)`` per image (e.g.
            :class:`detfn.models.postprocess.ImageDetections`): boxes (Tensor[N, 4]) xyxy pixels,
            scores (Tensor[N]), labels (Tensor[N]) contiguous class indices.
        image_ids: the COCO ``image_id`` of each image.
        label_to_cat_id: contiguous label -> original COCO category id (a sequence indexed by
            label, or a mapping).

    Returns:
        ``[{"image_id": int, "bbox": [x, y, w, h], "score": float, "category_id": int}, ...]``.
    """
    if len(detections) != len(image_ids):
        raise ValueError(
            f"detections_to_coco_results: {len(detections)} detections for "
            f"{len(image_ids)} image ids"
        )
    results = []
    for det, image_id in zip(detections, image_ids):
        boxes, scores, labels = det[:3]
        boxes = torch.as_tensor(boxes).detach().to("cpu", torch.float64).reshape(-1, 4)
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        scores = torch.as_tensor(scores).detach().cpu().reshape(-1).tolist()
        labels = torch.as_tensor(labels).detach().cpu().reshape(-1).tolist()
        for box, score, label in zip(xywh, scores, labels):
            results.append(
                {
                    "image_id": int(image_id),
                    "bbox": [float(v) for v in box],
                    "score": float(score),
                    "category_id": _category_of(int(label), label_to_cat_id),
                }
            )
    return results


def _category_of(label: int, label_to_cat_id: Sequence[int] | Mapping[int, int]) -> int:
    if isinstance(label_to_cat_id, Mapping):
        if label not in label_to_cat_id:
            raise ValueError(f"label {label} has no category id in label_to_cat_id")
        return int(label_to_cat_id[label])
    if not 0 <= label < len(label_to_cat_id):
        raise ValueError(f"label {label} is out of range for {len(label_to_cat_id)} categories")
    return int(label_to_cat_id[label])


def category_ids_by_name(gt: COCO, class_names: Sequence[str], source: str = "") -> list[int]:
    """The ground truth's category id of each class name, in label order.

    A model's label ``k`` means the class ``class_names[k]``; mapping by name (not by category-id
    order) keeps the evaluation right when a json has other, extra or reordered categories.

    Raises:
        ValueError: one line naming the model's classes that the ground truth lacks (and the
            ground truth's names), or a name the ground truth holds twice.
    """
    where = f"{source}: " if source else ""
    ids_of: dict[str, list[int]] = {}
    for cat in gt.loadCats(gt.getCatIds()):
        ids_of.setdefault(str(cat["name"]), []).append(int(cat["id"]))
    missing = [name for name in class_names if name not in ids_of]
    if missing:
        extra = sorted(set(ids_of) - set(class_names))
        raise ValueError(
            f"{where}the model's classes {missing} are not categories of the ground truth "
            f"(its categories not in the model: {extra[:10]}{' ...' if len(extra) > 10 else ''}"
            f"); evaluate on a dataset with the model's classes {list(class_names)}"
        )
    twice = [name for name in class_names if len(ids_of[name]) > 1]
    if twice:
        raise ValueError(f"{where}categories {twice} appear more than once in the ground truth")
    return [ids_of[name][0] for name in class_names]


def write_results_json(
    results: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]
) -> pathlib.Path:
    """Write COCO results (e.g. for a test-dev submission) as a JSON list; returns the path."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(results)))
    return path


def load_coco(coco_gt: COCO | str | os.PathLike[str] | Mapping[str, Any]) -> COCO:
    """A pycocotools ``COCO`` from a ``COCO``, an annotation-file path or a dataset dict."""
    if isinstance(coco_gt, COCO):
        return coco_gt
    coco = COCO()
    if isinstance(coco_gt, (str, os.PathLike)):
        path = pathlib.Path(coco_gt)
        try:
            dataset = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: cannot read COCO annotations: {error}") from None
    elif isinstance(coco_gt, Mapping):
        dataset = copy.deepcopy(dict(coco_gt))
    else:
        raise TypeError(f"coco_gt must be a COCO, a path or a dict, got {type(coco_gt).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in dataset:
            raise ValueError(f"COCO annotations have no {key!r} key (keys: {sorted(dataset)})")
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "creating index..."
        coco.createIndex()
    return coco


def coco_evaluate(
    coco_gt: COCO | str | os.PathLike[str] | Mapping[str, Any],
    results: Sequence[Mapping[str, Any]],
    classwise: bool = False,
    iou_type: str = "bbox",
    max_dets: tuple[int, int, int] = (100, 300, 1000),
    img_ids: Sequence[int] | None = None,
    cat_ids: Sequence[int] | None = None,
) -> dict[str, Any]:
    """COCO metrics of ``results`` against ``coco_gt``.

    Args:
        coco_gt: ground truth: a pycocotools ``COCO``, an annotation-file path or a dataset dict.
        results: COCO result dicts (see :func:`detections_to_coco_results`).
        classwise: also return a per-category AP table.
        iou_type: ``"bbox"``, or ``"segm"`` for mask results (see :mod:`detfn.evaluation.segm`).
        max_dets: COCOeval ``maxDets``; AP uses the last value (mmdetection's setting).
        img_ids: images to evaluate; default all images of ``coco_gt``.
        cat_ids: categories scored (the model's); default all categories of ``coco_gt``.
            Ground truth of other categories is left out rather than counted as missed.

    Returns:
        ``{iou_type}_mAP``, ``_mAP_50``, ``_mAP_75``, ``_mAP_s``, ``_mAP_m``, ``_mAP_l`` (floats in
        [0, 1]; pycocotools' -1 for "no ground truth of this size" is kept), ``_mAP_copypaste``
        (the six values as one string), ``_summary`` (pycocotools' printed table), and with
        ``classwise`` ``_classwise`` (a text table). Empty ``results`` give zeros and a warning.
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"coco_evaluate: iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    gt = load_coco(coco_gt)
    img_ids = list(gt.getImgIds()) if img_ids is None else [int(i) for i in img_ids]
    cat_ids = list(gt.getCatIds()) if cat_ids is None else [int(c) for c in cat_ids]
    if len(results) == 0:
        warnings.warn("coco_evaluate: no detections at all; every metric is 0", stacklevel=2)
        no_precision = np.zeros((1, 1, len(cat_ids), 1, 1))
        table = format_classwise_table(gt, no_precision, cat_ids=cat_ids) if classwise else None
        summary = "no detections: every metric is 0\n"
        return _metrics_dict(iou_type, np.zeros(len(METRIC_NAMES)), summary, table)
    _check_results(gt, results, iou_type)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "Loading results..."
        dt = gt.loadRes([dict(r) for r in results])  # loadRes adds keys to the dicts it gets
    evaluator = COCOeval(gt, dt, iou_type)
    evaluator.params.catIds = cat_ids
    evaluator.params.imgIds = img_ids
    evaluator.params.maxDets = list(max_dets)
    with contextlib.redirect_stdout(io.StringIO()):  # progress lines of evaluate/accumulate
        evaluator.evaluate()
        evaluator.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        evaluator.summarize()
    precision = evaluator.eval["precision"]
    table = format_classwise_table(gt, precision, cat_ids=cat_ids) if classwise else None
    return _metrics_dict(iou_type, np.asarray(evaluator.stats[:6]), summary.getvalue(), table)


def _check_results(gt: COCO, results: Sequence[Mapping[str, Any]], iou_type: str = "bbox") -> None:
    """Clear errors for results pycocotools would reject with an assert or silently ignore."""
    known_imgs, known_cats = set(gt.getImgIds()), set(gt.getCatIds())
    geometry = "segmentation" if iou_type == "segm" else "bbox"
    for i, result in enumerate(results):
        missing = {"image_id", geometry, "score", "category_id"} - set(result)
        if missing:
            raise ValueError(f"COCO result {i} lacks keys {sorted(missing)}")
        if result["image_id"] not in known_imgs:
            raise ValueError(
                f"COCO result {i}: image_id {result['image_id']} is not in the ground truth"
            )
        if result["category_id"] not in known_cats:
            raise ValueError(
                f"COCO result {i}: category_id {result['category_id']} is not in the ground "
                f"truth categories {sorted(known_cats)}"
            )


def _metrics_dict(
    iou_type: str, stats: np.ndarray, summary: str, classwise_table: str | None
) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        f"{iou_type}_{name}": float(value) for name, value in zip(METRIC_NAMES, stats)
    }
    metrics[f"{iou_type}_mAP_copypaste"] = " ".join(f"{v:.3f}" for v in stats)
    metrics[f"{iou_type}_summary"] = summary
    if classwise_table is not None:
        metrics[f"{iou_type}_classwise"] = classwise_table
    return metrics


def format_classwise_table(
    gt: COCO, precision: np.ndarray, columns: int = 3, cat_ids: Sequence[int] | None = None
) -> str:
    """Per-category AP (IoU .50:.95, all areas, largest maxDets) as a text table.

    Args:
        gt: the ground truth, for category names (in ``getCatIds()`` order).
        precision: ``COCOeval.eval["precision"]`` of shape [T, R, K, A, M].
        columns: (category, AP) pairs per row.
        cat_ids: the evaluated categories, in ``precision``'s order (default all of ``gt``).
    """
    rows = []
    # COCOeval sorts its catIds, so precision's class axis is in increasing id order
    for k, cat_id in enumerate(sorted(gt.getCatIds() if cat_ids is None else cat_ids)):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        ap = float(np.mean(p)) if p.size else float("nan")
        rows.append((gt.loadCats(cat_id)[0]["name"], f"{ap:.3f}"))
    width = max([len("category")] + [len(name) for name, _ in rows])
    header = " | ".join([f"{'category':<{width}} | AP   "] * min(columns, max(len(rows), 1)))
    lines = [header, "-" * len(header)]
    for start in range(0, len(rows), columns):
        chunk = rows[start : start + columns]
        lines.append(" | ".join(f"{name:<{width}} | {ap:<5}" for name, ap in chunk))
    return "\n".join(lines)
