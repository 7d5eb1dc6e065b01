"""Precision-recall curves and per-class / per-size AP tables from pycocotools' ``COCOeval``.

``COCOeval.eval["precision"]`` has shape ``[T, R, K, A, M]``: IoU thresholds ``.50:.05:.95``
(T=10), 101 recall points, categories, areas (all, small, medium, large) and ``maxDets``; -1 marks
"no ground truth". A curve is ``precision[t, :, k, 0, -1]`` against ``recThrs``; its mean is the
category's AP at that IoU. ``eval["recall"]`` ``[T, K, A, M]`` is the recall reached.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.cocoeval import COCOeval

from detfn.analysis.plotting import new_figure, save_figure
from detfn.evaluation.coco import load_coco

__all__ = [
    "ClassRow",
    "class_table",
    "format_class_table",
    "format_size_table",
    "plot_pr_curves",
    "pr_curve",
    "run_cocoeval",
]

IOUS = (0.5, 0.75)
AREAS = ("all", "small", "medium", "large")


def run_cocoeval(
    coco_gt: Any,
    results: Sequence[Mapping[str, Any]],
    cat_ids: Sequence[int] | None = None,
    image_ids: Sequence[int] | None = None,
    max_dets: tuple[int, int, int] = (100, 300, 1000),
) -> COCOeval:
    """An evaluated and accumulated bbox ``COCOeval`` (mmdetection's maxDets by default)."""
    gt = load_coco(coco_gt)
    if not results:
        raise ValueError("no detections at all: there is no precision-recall curve to draw")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        dt = gt.loadRes([dict(r) for r in results])
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.params.catIds = list(cat_ids) if cat_ids is not None else gt.getCatIds()
        if image_ids is not None:
            evaluator.params.imgIds = [int(i) for i in image_ids]
        evaluator.params.maxDets = list(max_dets)
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator


def _iou_index(evaluator: COCOeval, iou: float) -> int:
    thresholds = np.asarray(evaluator.params.iouThrs)
    index = int(np.argmin(np.abs(thresholds - iou)))
    if abs(thresholds[index] - iou) > 1e-6:
        raise ValueError(f"IoU {iou} is not one of COCOeval's thresholds {thresholds.tolist()}")
    return index


def pr_curve(evaluator: COCOeval, category: int, iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """``(recall points [R], precision [R])`` of category index ``category`` (all areas, the
    largest maxDets); precision -1 (no ground truth) is returned as NaN."""
    precision = evaluator.eval["precision"][_iou_index(evaluator, iou), :, category, 0, -1]
    curve = np.where(precision > -1, precision, np.nan)
    return np.asarray(evaluator.params.recThrs), curve


def plot_pr_curves(
    evaluator: COCOeval,
    class_names: Sequence[str],
    out: str | os.PathLike[str],
    ious: Sequence[float] = IOUS,
) -> Path:
    """One panel per IoU threshold, one curve per class with its AP in the legend."""
    figure = new_figure(4.2 * len(ious), 4.0)
    axes = figure.subplots(1, len(ious), squeeze=False)[0]
    for ax, iou in zip(axes, ious):
        for k, name in enumerate(class_names):
            recall, precision = pr_curve(evaluator, k, iou)
            ap = float(np.nanmean(precision)) if np.isfinite(precision).any() else float("nan")
            ax.plot(recall, precision, color=f"C{k % 10}", label=f"{name} (AP {ap:.3f})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(f"IoU = {iou:.2f}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="lower left")
    return save_figure(figure, out)


@dataclass(frozen=True)
class ClassRow:
    """One category's numbers (NaN where it has no ground truth of that kind).

    Attributes:
        gts / dets: ground-truth boxes (non-crowd) and detections of the category.
        recall: recall at IoU .50 with the largest maxDets.
        ap, ap50, ap75: AP over IoU .50:.95, at .50, at .75 (all areas).
        ap_small, ap_medium, ap_large: AP over IoU .50:.95 per object size.
    """

    name: str
    gts: int
    dets: int
    recall: float
    ap: float
    ap50: float
    ap75: float
    ap_small: float
    ap_medium: float
    ap_large: float


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else float("nan")


def class_table(evaluator: COCOeval, class_names: Sequence[str]) -> list[ClassRow]:
    """Per-category rows, in ``evaluator.params.catIds`` order."""
    precision, recall = evaluator.eval["precision"], evaluator.eval["recall"]
    gt, dt = evaluator.cocoGt, evaluator.cocoDt
    image_ids = evaluator.params.imgIds
    i50, i75 = _iou_index(evaluator, 0.5), _iou_index(evaluator, 0.75)
    rows = []
    for k, (cat_id, name) in enumerate(zip(evaluator.params.catIds, class_names)):
        anns = gt.loadAnns(gt.getAnnIds(imgIds=image_ids, catIds=[cat_id], iscrowd=False))
        dets = len(dt.getAnnIds(imgIds=image_ids, catIds=[cat_id]))
        per_size = [_mean_valid(precision[:, :, k, a, -1]) for a in range(1, 4)]
        rows.append(
            ClassRow(
                name,
                len(anns),
                dets,
                _mean_valid(recall[i50, k, 0, -1:]),
                _mean_valid(precision[:, :, k, 0, -1]),
                _mean_valid(precision[i50, :, k, 0, -1]),
                _mean_valid(precision[i75, :, k, 0, -1]),
                *per_size,
            )
        )
    return rows


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def fmt(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line, fmt(header), line, *(fmt(r) for r in rows), line])


def _f(value: float) -> str:
    return "nan" if np.isnan(value) else f"{value:.3f}"


def format_class_table(rows: Sequence[ClassRow]) -> str:
    """mmdetection's ``eval_map`` summary: class, gts, dets, recall, AP (+ AP50 / AP75)."""
    body = [
        [r.name, str(r.gts), str(r.dets), _f(r.recall), _f(r.ap), _f(r.ap50), _f(r.ap75)]
        for r in rows
    ]
    aps = [r.ap for r in rows if not np.isnan(r.ap)]
    body.append(["mAP", "", "", "", _f(float(np.mean(aps))) if aps else "nan", "", ""])
    return _table(["class", "gts", "dets", "recall@.5", "AP", "AP50", "AP75"], body)


def format_size_table(rows: Sequence[ClassRow]) -> str:
    """AP over IoU .50:.95 per class and object size (small < 32², medium < 96², large)."""
    body = [[r.name, _f(r.ap_small), _f(r.ap_medium), _f(r.ap_large), _f(r.ap)] for r in rows]
    return _table(["class", "AP_small", "AP_medium", "AP_large", "AP_all"], body)
