"""Precision-recall curves per class at IoU 0.5 and 0.75, and per-class / per-size AP tables.

    python -m experiments.pr_curves --config work_dirs/run/config.json \
        --checkpoint work_dirs/run/latest.pth --out pr.png
"""

from __future__ import annotations

from dataclasses import dataclass

import tyro

from detfn.analysis.pr_curves import (
    class_table,
    format_class_table,
    format_size_table,
    plot_pr_curves,
    run_cocoeval,
)
from experiments.tool_configs import DetectionsArgs, detections_of


@dataclass(frozen=True)
class PRArgs(DetectionsArgs):
    out: str = "pr_curves.png"


def main(args: PRArgs):
    evaluated = detections_of(args)
    dataset = evaluated.dataset
    try:
        evaluator = run_cocoeval(
            dataset.coco, evaluated.results, dataset.label_to_cat_id, dataset.image_ids
        )
    except (ValueError, KeyError) as error:
        raise SystemExit(str(error)) from None
    rows = class_table(evaluator, dataset.class_names)
    print(format_class_table(rows))
    print(format_size_table(rows))
    path = plot_pr_curves(evaluator, dataset.class_names, args.out)
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main(tyro.cli(PRArgs, description=__doc__))
