"""Confusion matrix rules by hand, ground truth as detections, the CLI on a tiny run."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from detfn.analysis.confusion import confusion_matrix, image_confusion, normalize_rows
from detfn.data import build_loader  # noqa: F401  (registers the dataset builders)
from detfn.evaluation.coco import load_coco
from experiments import confusion_matrix as cli
from tests.analysis.conftest import assert_png
from tests.apis.test_faster_rcnn_e2e import TINY


def test_one_image_by_hand():
    gt_boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]])
    gt_labels = torch.tensor([0, 1, 1])
    det_boxes = torch.tensor(
        [
            [0.0, 0, 10, 10],  # class 0 on the class-0 box: true positive
            [20, 20, 30, 31],  # class 0 on a class-1 box: confusion 1 -> 0
            [80, 80, 90, 90],  # class 1 on nothing: background false positive
            [50, 50, 60, 60],  # class 1 on a class-1 box but below the score threshold
        ]
    )
    counts = image_confusion(
        gt_boxes,
        gt_labels,
        det_boxes,
        torch.tensor([0.9, 0.8, 0.7, 0.1]),
        torch.tensor([0, 0, 1, 1]),
        num_classes=2,
        score_thr=0.3,
        iou_thr=0.5,
    )
    expected = np.array([[1, 0, 0], [1, 0, 2], [0, 1, 0]])  # both class-1 boxes missed
    np.testing.assert_array_equal(counts.numpy(), expected)
    np.testing.assert_allclose(normalize_rows(expected)[1], [1 / 3, 0, 2 / 3])


def test_ground_truth_as_detections_is_diagonal():
    coco = load_coco(TINY / "instances.json")
    anns = [a for a in coco.dataset["annotations"] if not a.get("iscrowd", 0)]
    results = [
        {
            "image_id": a["image_id"],
            "bbox": a["bbox"],
            "score": 1.0,
            "category_id": a["category_id"],
        }
        for a in anns
    ]
    cat_ids = coco.getCatIds()
    counts = confusion_matrix(coco, results, cat_ids)
    per_class = [sum(a["category_id"] == c for a in anns) for c in cat_ids]
    np.testing.assert_array_equal(counts, np.diag([*per_class, 0]))
    np.testing.assert_array_equal(normalize_rows(counts), np.diag([1.0] * len(cat_ids) + [0.0]))


def test_cli_from_a_checkpoint(tiny_run, tmp_path):
    _, work_dir = tiny_run
    out = tmp_path / "confusion.png"
    counts = cli.main(
        cli.ConfusionArgs(
            config=str(work_dir / "config.json"),
            checkpoint=str(work_dir / "latest.pth"),
            score_thr=0.0,
            out=str(out),
            device="cpu",
        )
    )
    assert counts.shape == (4, 4) and counts.sum() > 0
    assert_png(out)


def test_cli_from_a_results_file_of_ground_truth(tiny_run, tmp_path):
    _, work_dir = tiny_run
    coco = load_coco(TINY / "instances.json")
    results = [
        {
            "image_id": a["image_id"],
            "bbox": a["bbox"],
            "score": 0.9,
            "category_id": a["category_id"],
        }
        for a in coco.dataset["annotations"]
        if not a.get("iscrowd", 0)
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    args = cli.ConfusionArgs(
        config=str(work_dir / "config.json"), results=str(path), out=str(tmp_path / "c.png")
    )
    counts = cli.main(args)
    assert (counts == np.diag(np.diag(counts))).all() and counts[-1, -1] == 0
    assert counts.sum() == len(results)
    with pytest.raises(SystemExit, match="exactly one of a checkpoint and a results file"):
        cli.main(dataclasses.replace(args, checkpoint=str(work_dir / "latest.pth")))
