"""A detection confusion matrix with a background row and column (mmdetection's
``tools/analysis_tools/confusion_matrix.py`` rules).

Rows are ground-truth classes, columns predicted classes; the last row and column stand for the
background. Per image, a detection with ``score >= score_thr`` is counted once in cell
``[gt, det]`` for every ground-truth box it overlaps with ``IoU >= iou_thr``; a detection that
overlaps no ground truth is a false positive in ``[background, det]``; a ground-truth box that no
detection of its own class overlaps is a miss in ``[gt, background]``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

from detfn.analysis.plotting import new_figure, save_figure

__all__ = ["confusion_matrix", "image_confusion", "normalize_rows", "plot_confusion_matrix"]


def image_confusion(
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    det_boxes: torch.Tensor,
    det_scores: torch.Tensor,
    det_labels: torch.Tensor,
    num_classes: int,
    score_thr: float = 0.3,
    iou_thr: float = 0.5,
) -> torch.Tensor:
    """Counts of one image, ``Tensor[C + 1, C + 1]`` int64.

    Args:
        gt_boxes (Tensor[G, 4]), det_boxes (Tensor[D, 4]): xyxy, the same frame.
        gt_labels (Tensor[G]), det_labels (Tensor[D]): contiguous labels in ``0..C-1``.
        det_scores (Tensor[D]): detections below ``score_thr`` are ignored.
    """
    counts = torch.zeros(num_classes + 1, num_classes + 1, dtype=torch.int64)
    keep = det_scores >= score_thr
    det_boxes, det_labels = det_boxes[keep].double(), det_labels[keep].long()
    gt_labels = gt_labels.long()
    match = box_iou(det_boxes, gt_boxes.double()) >= iou_thr  # [D, G]
    det_index, gt_index = match.nonzero(as_tuple=True)
    pairs = (gt_labels[gt_index], det_labels[det_index])
    ones = torch.ones_like(det_index)
    counts.index_put_(pairs, ones, accumulate=True)
    unmatched = det_labels[~match.any(1)]  # background false positives
    counts.index_put_(
        (torch.full_like(unmatched, num_classes), unmatched),
        torch.ones_like(unmatched),
        accumulate=True,
    )
    found = (match & (det_labels[:, None] == gt_labels[None, :])).any(0)  # [G]
    missed = gt_labels[~found]
    counts.index_put_(
        (missed, torch.full_like(missed, num_classes)), torch.ones_like(missed), accumulate=True
    )
    return counts


def _coco_boxes(anns: Sequence[Mapping[str, Any]]) -> torch.Tensor:
    xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float64).reshape(-1, 4)
    return torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)


def confusion_matrix(
    coco_gt: Any,
    results: Sequence[Mapping[str, Any]],
    cat_ids: Sequence[int],
    image_ids: Sequence[int] | None = None,
    score_thr: float = 0.3,
    iou_thr: float = 0.5,
) -> np.ndarray:
    """Counts ``[C + 1, C + 1]`` over a dataset: rows ground truth, columns detections.

    Args:
        coco_gt: pycocotools ``COCO`` of the ground truth (crowd boxes are left out).
        results: COCO result dicts (xywh boxes, original category ids).
        cat_ids: label ``k`` is category id ``cat_ids[k]`` (the dataset's ``label_to_cat_id``).
        image_ids: images to count; default every image of ``coco_gt``.
    """
    label_of = {int(c): k for k, c in enumerate(cat_ids)}
    ids = list(coco_gt.getImgIds()) if image_ids is None else [int(i) for i in image_ids]
    by_image: dict[int, list[Mapping[str, Any]]] = {i: [] for i in ids}
    for i, result in enumerate(results):
        if result["category_id"] not in label_of:
            raise ValueError(
                f"result {i}: category_id {result['category_id']} is not one of {list(cat_ids)}"
            )
        if result["image_id"] in by_image:
            by_image[result["image_id"]].append(result)
    total = torch.zeros(len(cat_ids) + 1, len(cat_ids) + 1, dtype=torch.int64)
    for image_id in ids:
        anns = [
            a
            for a in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=[image_id]))
            if not a.get("iscrowd", 0) and a["category_id"] in label_of
        ]
        dets = by_image[image_id]
        total += image_confusion(
            _coco_boxes(anns),
            torch.tensor([label_of[a["category_id"]] for a in anns], dtype=torch.int64),
            _coco_boxes(dets),
            torch.tensor([d["score"] for d in dets], dtype=torch.float64),
            torch.tensor([label_of[d["category_id"]] for d in dets], dtype=torch.int64),
            len(cat_ids),
            score_thr,
            iou_thr,
        )
    return total.numpy()


def normalize_rows(counts: np.ndarray) -> np.ndarray:
    """Each row as a fraction of its total (rows without any count stay zero)."""
    sums = counts.sum(axis=1, keepdims=True).astype(np.float64)
    return np.divide(counts, sums, out=np.zeros(counts.shape, dtype=np.float64), where=sums > 0)


def plot_confusion_matrix(
    counts: np.ndarray,
    class_names: Sequence[str],
    out: str | os.PathLike[str],
    title: str = "Normalized confusion matrix",
) -> Path:
    """Row-normalized percentages as a heat map, with the counts' background row and column."""
    names = [*class_names, "background"]
    if counts.shape != (len(names), len(names)):
        raise ValueError(f"a {counts.shape} matrix for {len(class_names)} classes + background")
    percent = normalize_rows(counts) * 100
    size = max(4.0, 0.6 * len(names) + 2)
    figure = new_figure(size + 1, size)
    ax = figure.add_subplot()
    image = ax.imshow(percent, cmap="Blues", vmin=0, vmax=100)
    figure.colorbar(image, ax=ax, label="% of the row")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(title)
    if len(names) <= 30:
        for (row, col), value in np.ndenumerate(percent):
            colour = "white" if value > 50 else "black"
            ax.text(col, row, f"{value:.0f}", ha="center", va="center", color=colour, size=8)
    return save_figure(figure, out)
