"""COCO segm evaluation: RLE results, ground truth as results gives AP 1.0, pycocotools parity."""

from __future__ import annotations

import contextlib
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pycocotools.cocoeval import COCOeval

from detfn.data import CocoDataset, LoadImageConfig, nuclei_dataset_config
from detfn.data.records import initial_sample
from detfn.evaluation.segm import (
    coco_evaluate_instances,
    detections_to_segm_results,
    encode_masks,
    write_instance_results,
)
from detfn.registry import build
from detfn.structures import ImageDetections


@pytest.fixture(scope="module")
def val():
    ds = build(nuclei_dataset_config("val", pipeline=(LoadImageConfig(),)))
    assert isinstance(ds, CocoDataset)
    return ds


def _metas(ds):
    from detfn.structures import ImageMeta

    return [ImageMeta(f"{i}.png", i, (1, 1), (1, 1), (1, 1)) for i in ds.image_ids]


def _gt_as_detections(ds, scores=None):
    dets = []
    for k, record in enumerate(ds.records):
        n = len(record.boxes)
        s = torch.ones(n) if scores is None else scores[k]
        dets.append(ImageDetections(record.boxes, s, record.labels, initial_sample(record).masks))
    return dets


def test_ground_truth_as_results_gives_segm_and_bbox_ap_1(val):
    results = detections_to_segm_results(_gt_as_detections(val), val.image_ids, val.label_to_cat_id)
    assert len(results) == 612
    assert {"image_id", "bbox", "score", "category_id", "segmentation"} <= set(results[0])
    metrics = coco_evaluate_instances(val.coco, results)
    for name in ("mAP", "mAP_50", "mAP_75"):
        assert metrics[f"segm_{name}"] == pytest.approx(1.0)
        assert metrics[f"bbox_{name}"] == pytest.approx(1.0)
    assert metrics["segm_mAP_l"] == -1.0  # no large nuclei: pycocotools' "no ground truth"


def test_segm_metrics_equal_pycocotools_run_directly(val):
    g = torch.Generator().manual_seed(0)
    dets = []
    for det in _gt_as_detections(val):
        masks = det.masks.clone()
        # damage the masks: drop a random band of rows from each, and shuffle confidence
        n = masks.shape[0]
        for i in range(n):
            ys = torch.nonzero(masks[i].any(1)).squeeze(1)
            cut = int(torch.randint(0, max(len(ys) // 2, 1), (1,), generator=g))
            masks[i, ys[:cut]] = False
        keep = masks.flatten(1).any(1)
        dets.append(
            ImageDetections(
                det.boxes[keep],
                torch.rand(int(keep.sum()), generator=g),
                det.labels[keep],
                masks[keep],
            )
        )
    results = detections_to_segm_results(dets, val.image_ids, val.label_to_cat_id)
    ours = coco_evaluate_instances(val.coco, results, metrics=("segm",))
    assert set(k for k in ours if not k.endswith(("summary", "copypaste"))) == {
        "segm_mAP",
        "segm_mAP_50",
        "segm_mAP_75",
        "segm_mAP_s",
        "segm_mAP_m",
        "segm_mAP_l",
    }
    with contextlib.redirect_stdout(io.StringIO()):
        dt = val.coco.loadRes(json.loads(json.dumps(results)))
        ev = COCOeval(val.coco, dt, "segm")
        ev.params.maxDets = [100, 300, 1000]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert 0.2 < ours["segm_mAP"] < 0.95
    np.testing.assert_allclose(
        [ours[f"segm_{n}"] for n in ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")],
        ev.stats[:6],
    )


def test_results_json_files_load_in_pycocotools(val, tmp_path):
    results = detections_to_segm_results(
        _gt_as_detections(val)[:3], val.image_ids[:3], val.label_to_cat_id
    )
    bbox_path, segm_path = write_instance_results(results, tmp_path / "out" / "results")
    assert bbox_path.name == "results.bbox.json" and segm_path.name == "results.segm.json"
    bbox = json.loads(bbox_path.read_text())
    segm = json.loads(segm_path.read_text())
    assert "segmentation" not in bbox[0] and isinstance(segm[0]["segmentation"]["counts"], str)
    with contextlib.redirect_stdout(io.StringIO()):
        loaded = val.coco.loadRes(str(segm_path))
    assert len(loaded.getAnnIds()) == len(results)


def test_clear_errors():
    with pytest.raises(ValueError, match=r"masks must be \[N, H, W\]"):
        encode_masks(torch.zeros(3, 4, dtype=torch.bool))
    det = ImageDetections(torch.zeros(2, 4), torch.ones(2), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="image 0 has no masks"):
        detections_to_segm_results([det], [1], [1])
    gt = {
        "images": [{"id": 1, "height": 4, "width": 4, "file_name": "a"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [0, 0, 2, 2],
                "area": 4,
                "iscrowd": 0,
            }
        ],
        "categories": [{"id": 1, "name": "a"}],
    }
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, :2, :2] = True
    det = ImageDetections(
        torch.tensor([[0.0, 0, 2, 2]]), torch.ones(1), torch.zeros(1, dtype=torch.int64), mask
    )
    results = detections_to_segm_results([det], [1], [1])
    with pytest.raises(ValueError, match="annotation 1 .* has no 'segmentation'"):
        coco_evaluate_instances(gt, results)
    assert coco_evaluate_instances(gt, results, metrics=("bbox",))["bbox_mAP"] == pytest.approx(1.0)


def test_collected_masks_are_kept_as_rle_and_score_the_same(val):
    """collect_detections keeps each batch's masks as COCO RLEs (a COCO val set's bool masks
    would not fit in memory); the segm metrics equal those of the full masks."""
    from detfn.apis.evaluate import collect_detections, score_detections
    from detfn.structures import EncodedMasks

    full = _gt_as_detections(
        val, scores=[torch.linspace(1, 0.5, len(r.boxes)) for r in val.records]
    )
    seen = []

    by_id = dict(zip(val.image_ids, full))

    def predict(params, buffers, images, metas):
        return [by_id[m.image_id] for m in metas]

    metas = _metas(val)
    batches = [
        SimpleNamespace(images=torch.zeros(1), metas=metas[i : i + 2])
        for i in range(0, len(metas), 2)
    ]
    kept, ids = collect_detections(
        predict, {}, {}, batches, on_batch=lambda b, d: seen.extend(x.masks for x in d)
    )
    assert all(isinstance(m, torch.Tensor) for m in seen)  # on_batch sees the tensors
    assert all(isinstance(d.masks, EncodedMasks) for d in kept)
    assert len(kept[0].masks) == full[0].masks.shape[0]
    from pycocotools import mask as mask_utils

    decoded = mask_utils.decode([dict(r, counts=r["counts"].encode()) for r in kept[0].masks.rles])
    assert np.array_equal(decoded.transpose(2, 0, 1), full[0].masks.numpy())
    cat_ids = list(val.label_to_cat_id)
    assert score_detections(val, kept, ids, cat_ids) == score_detections(val, full, ids, cat_ids)
