"""The one evaluation maps the model's labels to a dataset's categories by class NAME and scores
only the model's categories (issue 16): extra categories and reordered ids leave the mAP as it
is, and a dataset without the model's classes is a one-line error naming them."""

from __future__ import annotations

import copy
import json
import pathlib

import pytest
import torch

from detfn.apis import evaluate_dataset
from detfn.data import (
    CocoDatasetConfig,
    LoaderConfig,
    LoadImageConfig,
    NormalizeConfig,
    PadConfig,
    ResizeConfig,
    build_loader,
)
from detfn.evaluation import coco_evaluate, detections_to_coco_results
from detfn.registry import build
from detfn.structures import ImageDetections

TINY = pathlib.Path(__file__).resolve().parents[1] / "assets" / "tiny" / "bccd8"
NAMES = ("RBC", "WBC", "Platelets")
PIPELINE = (LoadImageConfig(), ResizeConfig(scale=((64, 48),)), NormalizeConfig(), PadConfig())


def original() -> dict:
    return json.loads((TINY / "instances.json").read_text())


def fake_predict(gt: dict):
    """Detections made from the ground truth by name: jittered boxes, random scores, some labels
    wrong, one false positive per image, so that the mAP is well inside (0, 1)."""
    name_of = {c["id"]: c["name"] for c in gt["categories"]}
    by_image: dict[int, list] = {}
    for ann in gt["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)

    def predict(params, buffers, images, metas):
        out = []
        for meta in metas:
            g = torch.Generator().manual_seed(meta.image_id)
            anns = by_image.get(meta.image_id, [])
            boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
            boxes[:, 2:] += boxes[:, :2]
            boxes = boxes + 6 * torch.randn(boxes.shape, generator=g)
            labels = torch.tensor([NAMES.index(name_of[a["category_id"]]) for a in anns])
            flip = torch.rand(len(anns), generator=g) < 0.2
            labels = torch.where(flip, (labels + 1) % 3, labels)
            boxes = torch.cat([boxes, torch.tensor([[5.0, 5.0, 60.0, 60.0]])])
            labels = torch.cat([labels, torch.tensor([0])])
            scores = torch.rand(len(labels), generator=g)
            out.append(ImageDetections(boxes, scores, labels))
        return out

    return predict


def evaluate(data: dict, tmp_path: pathlib.Path, names=NAMES) -> dict:
    ann_file = tmp_path / f"ann{len(list(tmp_path.iterdir()))}.json"
    ann_file.write_text(json.dumps(data))
    dataset = build(
        CocoDatasetConfig(
            ann_file=str(ann_file), img_prefix=str(TINY / "JPEGImages"), pipeline=PIPELINE
        ),
        seed=0,
    )
    loader = build_loader(dataset, LoaderConfig(batch_size=4, num_workers=0, shuffle=False))
    predict = fake_predict(original())
    return evaluate_dataset(predict, {}, {}, dataset, loader, class_names=names, classwise=True)


def test_an_extra_category_leaves_the_map_unchanged(tmp_path):
    base = evaluate(original(), tmp_path)
    assert 0.1 < base["bbox_mAP"] < 0.9
    data = original()
    data["categories"].append({"id": 7, "name": "Other", "supercategory": "cell"})
    extra = [dict(a, id=10_000 + i, category_id=7) for i, a in enumerate(data["annotations"][:9])]
    data["annotations"] += extra
    got = evaluate(data, tmp_path)
    assert got["bbox_mAP"] == pytest.approx(base["bbox_mAP"])
    assert got["bbox_mAP_50"] == pytest.approx(base["bbox_mAP_50"])
    assert "Other" not in got["bbox_classwise"]
    # scoring every category of the file instead (the old behaviour) would have changed it
    predict = fake_predict(original())
    dets = predict(None, None, None, [_meta(i["id"]) for i in data["images"]])
    results = detections_to_coco_results(dets, [i["id"] for i in data["images"]], [1, 2, 3])
    assert coco_evaluate(data, results)["bbox_mAP"] < base["bbox_mAP"] - 0.05


def _meta(image_id: int):
    from detfn.structures import ImageMeta

    return ImageMeta("x", image_id, (480, 640), (480, 640), (480, 640))


def test_reordered_category_ids_give_the_same_map(tmp_path):
    base = evaluate(original(), tmp_path)
    data = copy.deepcopy(original())
    new_id = {1: 3, 2: 1, 3: 2}  # RBC 3, WBC 1, Platelets 2
    for cat in data["categories"]:
        cat["id"] = new_id[cat["id"]]
    for ann in data["annotations"]:
        ann["category_id"] = new_id[ann["category_id"]]
    got = evaluate(data, tmp_path)
    assert got["bbox_mAP"] == pytest.approx(base["bbox_mAP"])
    assert per_class(got) == per_class(base) and len(per_class(base)) == 3


def per_class(metrics: dict) -> set[tuple[str, str]]:
    """``{(name, AP)}`` of the classwise table."""
    cells = [
        c.strip() for line in metrics["bbox_classwise"].splitlines()[2:] for c in line.split("|")
    ]
    return set(zip(cells[::2], cells[1::2]))


def test_a_dataset_without_the_models_classes_is_an_error_naming_them(tmp_path):
    data = copy.deepcopy(original())
    data["categories"] = [{"id": i + 1, "name": f"class{i}"} for i in range(80)]
    with pytest.raises(ValueError) as info:
        evaluate(data, tmp_path)
    message = str(info.value)
    assert "\n" not in message and "['RBC', 'WBC', 'Platelets']" in message
    assert "class0" in message and str(tmp_path) in message
