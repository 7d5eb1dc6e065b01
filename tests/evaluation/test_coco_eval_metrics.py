"""coco_evaluate against pycocotools run directly; result conversion and category ids."""

import contextlib
import io
import json
import pathlib

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detfn.evaluation import (
    coco_evaluate,
    detections_to_coco_results,
    load_coco,
    write_results_json,
)
from detfn.structures import ImageDetections

COCO8 = pathlib.Path(__file__).resolve().parents[1] / "assets" / "tiny" / "coco8"
CAT_IDS = (3, 17, 90)  # non-contiguous original ids; labels 0, 1, 2


def _synthetic_gt() -> dict:
    """Three images, boxes of small / medium / large area in three categories."""
    boxes = {
        1: [(10, 10, 20, 20, 3), (50, 60, 100, 80, 17)],  # 20x20 small, 100x80 large
        2: [(5, 5, 50, 40, 90), (100, 100, 25, 25, 3)],  # medium, medium
        3: [(30, 40, 8, 12, 17), (0, 0, 150, 120, 90), (60, 70, 40, 50, 3)],
    }
    images = [{"id": i, "file_name": f"{i}.jpg", "height": 240, "width": 320} for i in boxes]
    anns = []
    for image_id, items in boxes.items():
        for x, y, w, h, cat in items:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "category_id": cat,
                    "iscrowd": 0,
                }
            )
    cats = [{"id": c, "name": f"class{c}"} for c in CAT_IDS]
    return {"images": images, "annotations": anns, "categories": cats}


def _perfect_detections(gt: dict, shift: float = 0.0) -> list[ImageDetections]:
    dets = []
    for image in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == image["id"] and not a["iscrowd"]]
        xyxy = [
            [x + shift, y + shift, x + w + shift, y + h + shift]
            for x, y, w, h in (a["bbox"] for a in anns)
        ]
        labels = [CAT_IDS.index(a["category_id"]) for a in anns]
        scores = torch.linspace(0.9, 0.5, len(anns))
        dets.append(
            ImageDetections(torch.tensor(xyxy).reshape(-1, 4), scores, torch.tensor(labels))
        )
    return dets


def _pycocotools_stats(gt: dict, results: list[dict]) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(gt))
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(json.loads(json.dumps(results))), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats[:6]


def test_results_use_xywh_original_category_ids_and_python_floats():
    dets = [
        ImageDetections(
            torch.tensor([[1.0, 2.0, 11.0, 22.0]]), torch.tensor([0.75]), torch.tensor([2])
        )
    ]
    (result,) = detections_to_coco_results(dets, [42], CAT_IDS)
    assert result == {
        "image_id": 42,
        "bbox": [1.0, 2.0, 10.0, 20.0],
        "score": 0.75,
        "category_id": 90,
    }
    assert type(result["score"]) is float
    mapped = detections_to_coco_results(dets, [42], {2: 7})
    assert mapped[0]["category_id"] == 7
    with pytest.raises(ValueError, match="label 2 is out of range for 2 categories"):
        detections_to_coco_results(dets, [42], (1, 2))


def test_perfect_detections_give_map_one():
    gt = _synthetic_gt()
    results = detections_to_coco_results(_perfect_detections(gt), [1, 2, 3], CAT_IDS)
    metrics = coco_evaluate(gt, results)
    for key in ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l"):
        assert metrics[key] == pytest.approx(1.0), key
    assert metrics["bbox_mAP_copypaste"] == "1.000 1.000 1.000 1.000 1.000 1.000"
    assert "Average Precision" in metrics["bbox_summary"]


def test_shifted_boxes_equal_pycocotools_directly():
    gt = _synthetic_gt()
    results = detections_to_coco_results(_perfect_detections(gt, shift=4.0), [1, 2, 3], CAT_IDS)
    metrics = coco_evaluate(gt, results)
    expected = _pycocotools_stats(gt, results)
    ours = [
        metrics[k]
        for k in (
            "bbox_mAP",
            "bbox_mAP_50",
            "bbox_mAP_75",
            "bbox_mAP_s",
            "bbox_mAP_m",
            "bbox_mAP_l",
        )
    ]
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)
    assert 0.0 < metrics["bbox_mAP"] < 1.0  # the shift hurts, but not to zero


def test_wrong_category_mapping_is_scored_zero_and_classwise_table():
    gt = _synthetic_gt()
    dets = _perfect_detections(gt)
    rotated = [ImageDetections(d.boxes, d.scores, (d.labels + 1) % 3) for d in dets]
    results = detections_to_coco_results(rotated, [1, 2, 3], CAT_IDS)
    metrics = coco_evaluate(gt, results, classwise=True)
    assert metrics["bbox_mAP"] == 0.0
    table = metrics["bbox_classwise"]
    assert "class3" in table and "class90" in table and "0.000" in table


def test_coco8_from_path_perfect_detections(tmp_path):
    path = COCO8 / "annotations" / "instances.json"
    gt = json.loads(path.read_text())
    cat_ids = [c["id"] for c in gt["categories"]]
    dets = []
    for image in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == image["id"] and not a["iscrowd"]]
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        labels = [cat_ids.index(a["category_id"]) for a in anns]
        dets.append(
            ImageDetections(
                torch.tensor(xyxy, dtype=torch.float64).reshape(-1, 4),
                torch.ones(len(anns)),
                torch.tensor(labels, dtype=torch.int64),
            )
        )
    results = detections_to_coco_results(dets, [im["id"] for im in gt["images"]], cat_ids)
    out = write_results_json(results, tmp_path / "sub" / "results.bbox.json")
    assert json.loads(out.read_text()) == results
    metrics = coco_evaluate(str(path), results)
    assert metrics["bbox_mAP"] == pytest.approx(1.0)
    assert metrics["bbox_mAP_50"] == pytest.approx(1.0)


def test_empty_results_warn_and_give_zero():
    with pytest.warns(UserWarning, match="no detections"):
        metrics = coco_evaluate(_synthetic_gt(), [])
    assert metrics["bbox_mAP"] == 0.0 and metrics["bbox_mAP_l"] == 0.0
    with pytest.warns(UserWarning, match="no detections"):
        table = coco_evaluate(_synthetic_gt(), [], classwise=True)["bbox_classwise"]
    assert table.count("0.000") == len(_synthetic_gt()["categories"])


def test_bad_inputs_raise_clear_errors(tmp_path):
    gt = _synthetic_gt()
    result = {"image_id": 99, "bbox": [0, 0, 1, 1], "score": 0.5, "category_id": 3}
    with pytest.raises(ValueError, match="image_id 99 is not in the ground truth"):
        coco_evaluate(gt, [result])
    with pytest.raises(ValueError, match="category_id 4 is not in the ground truth"):
        coco_evaluate(gt, [dict(result, image_id=1, category_id=4)])
    with pytest.raises(ValueError, match="cannot read COCO annotations"):
        load_coco(tmp_path / "missing.json")
    assert isinstance(load_coco(load_coco(gt)), COCO)
