"""Confusion matrix of a detector on its val (or test) set, with a background row and column.

    python -m experiments.confusion_matrix --config work_dirs/run/config.json \
        --checkpoint work_dirs/run/latest.pth --out confusion.png
    python -m experiments.confusion_matrix --config ... --results results.json
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tyro

from detfn.analysis.confusion import confusion_matrix, normalize_rows, plot_confusion_matrix
from experiments.tool_configs import DetectionsArgs, detections_of


@dataclass(frozen=True)
class ConfusionArgs(DetectionsArgs):
    score_thr: float = 0.3
    """detections below this score are ignored"""
    iou_thr: float = 0.5
    """a detection and a ground-truth box match at IoU >= this"""
    out: str = "confusion_matrix.png"


def main(args: ConfusionArgs) -> np.ndarray:
    evaluated = detections_of(args)
    dataset = evaluated.dataset
    counts = confusion_matrix(
        dataset.coco,
        evaluated.results,
        dataset.label_to_cat_id,
        dataset.image_ids,
        args.score_thr,
        args.iou_thr,
    )
    names = [*dataset.class_names, "background"]
    print("rows: ground truth, columns: predicted; % of each row")
    print("\t".join(["", *names]))
    for name, row in zip(names, normalize_rows(counts) * 100):
        print("\t".join([name, *(f"{v:.1f}" for v in row)]))
    path = plot_confusion_matrix(counts, dataset.class_names, args.out)
    print(f"wrote {path}")
    return counts


if __name__ == "__main__":
    main(tyro.cli(ConfusionArgs, description=__doc__))
