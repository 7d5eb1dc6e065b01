"""PR curves and AP tables: a perfect result is flat at 1; the tables agree with COCOeval."""

from __future__ import annotations

import numpy as np
import pytest

from detfn.analysis.pr_curves import (
    class_table,
    format_class_table,
    format_size_table,
    pr_curve,
    run_cocoeval,
)
from detfn.evaluation.coco import coco_evaluate, load_coco
from experiments import pr_curves as cli
from tests.analysis.conftest import assert_png
from tests.apis.test_faster_rcnn_e2e import TINY


def gt_results(coco, drop_every=0):
    anns = [a for a in coco.dataset["annotations"] if not a.get("iscrowd", 0)]
    if drop_every:
        anns = [a for i, a in enumerate(anns) if i % drop_every]
    return [
        {
            "image_id": a["image_id"],
            "bbox": a["bbox"],
            "score": 1.0,
            "category_id": a["category_id"],
        }
        for a in anns
    ]


def test_perfect_result_is_flat_at_one():
    coco = load_coco(TINY / "instances.json")
    evaluator = run_cocoeval(coco, gt_results(coco))
    for k in range(len(coco.getCatIds())):
        for iou in (0.5, 0.75):
            recall, precision = pr_curve(evaluator, k, iou)
            assert recall[0] == 0.0 and recall[-1] == 1.0 and len(recall) == 101
            np.testing.assert_array_equal(precision, np.ones(101))
    rows = class_table(evaluator, ["RBC", "WBC", "Platelets"])
    assert all(r.ap == r.ap50 == r.ap75 == 1.0 and r.recall == 1.0 for r in rows)
    assert [r.gts for r in rows] == [r.dets for r in rows]


def test_tables_agree_with_cocoeval_summary():
    coco = load_coco(TINY / "instances.json")
    results = gt_results(coco, drop_every=3)  # a third missed: recall 2/3 for large classes
    evaluator = run_cocoeval(coco, results)
    rows = class_table(evaluator, [c["name"] for c in coco.loadCats(coco.getCatIds())])
    metrics = coco_evaluate(coco, results)
    assert np.nanmean([r.ap for r in rows]) == pytest.approx(metrics["bbox_mAP"], abs=1e-9)
    assert np.nanmean([r.ap50 for r in rows]) == pytest.approx(metrics["bbox_mAP_50"], abs=1e-9)
    assert np.nanmean([r.ap75 for r in rows]) == pytest.approx(metrics["bbox_mAP_75"], abs=1e-9)
    total = sum(r.gts for r in rows)
    assert total == sum(not a.get("iscrowd", 0) for a in coco.dataset["annotations"])
    text = format_class_table(rows) + format_size_table(rows)
    assert "mAP" in text and "AP_small" in text and "RBC" in text


def test_cli_from_a_checkpoint(tiny_run, tmp_path, capsys):
    _, work_dir = tiny_run
    out = tmp_path / "pr.png"
    rows = cli.main(
        cli.PRArgs(
            config=str(work_dir / "config.json"),
            checkpoint=str(work_dir / "latest.pth"),
            out=str(out),
            device="cpu",
        )
    )
    assert len(rows) == 3
    assert_png(out)
    assert "recall@.5" in capsys.readouterr().out
