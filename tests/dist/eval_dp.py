"""Distributed COCO evaluation on tests/assets/tiny/bccd8 with a deterministic stand-in detector.

The stand-in predicts each image's ground truth boxes, shifted by an amount that depends on the
box, plus one false positive, with scores that make the ranking matter: the metrics are far from
0 and 1, so a detection assigned to the wrong image or lost changes them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from detfn.apis.evaluate import evaluate_dataset
from detfn.apis.evaluate_dist import evaluate_dataset_on_ranks
from detfn.data import CocoDatasetConfig, LoaderConfig, build_loader, default_test_pipeline
from detfn.dist import get_rank, get_world_size
from detfn.registry import build
from detfn.structures import ImageDetections

TINY = Path(__file__).resolve().parents[1] / "assets" / "tiny" / "bccd8"
CLASSES = ("WBC", "RBC", "Platelets")


def dataset():
    cfg = CocoDatasetConfig(
        ann_file=str(TINY / "instances.json"),
        img_prefix=str(TINY / "JPEGImages"),
        classes=CLASSES,
        pipeline=default_test_pipeline(scale=(160, 120)),
        test_mode=True,
    )
    return build(cfg, seed=0)


def stand_in_predict(dataset):
    """``predict(params, buffers, images, metas)`` from the annotations, by image id."""
    coco = dataset.coco
    mapping = dataset.label_to_cat_id
    pairs = mapping.items() if isinstance(mapping, dict) else enumerate(mapping)
    label_of = {cat: label for label, cat in pairs}

    def predict(params, buffers, images, metas):
        del params, buffers, images
        out = []
        for meta in metas:
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[meta.image_id]))
            xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
            boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
            shift = (torch.arange(len(boxes), dtype=torch.float32) % 5) * 4.0
            boxes = boxes + shift[:, None]
            boxes = torch.cat([boxes, torch.tensor([[0.0, 0.0, 60.0, 60.0]])])
            labels = torch.tensor(
                [label_of[a["category_id"]] for a in anns] + [1], dtype=torch.int64
            )
            scores = torch.linspace(0.9, 0.3, len(labels)).roll(meta.image_id % 3)
            out.append(ImageDetections(boxes=boxes, scores=scores, labels=labels))
        return out

    return predict


def loader_cfg() -> LoaderConfig:
    return LoaderConfig(batch_size=1, num_workers=0, shuffle=False, group_by_aspect=False)


def evaluate_shards(env, out: Path) -> dict:
    """Each rank evaluates its shard; every rank returns the gathered metrics."""
    del env, out
    data = dataset()
    loader = build_loader(data, loader_cfg(), rank=get_rank(), world_size=get_world_size())
    metrics = evaluate_dataset_on_ranks(
        stand_in_predict(data), {}, {}, data, loader, class_names=data.class_names
    )
    return {k: v for k, v in metrics.items() if isinstance(v, float)}


def evaluate_single() -> dict:
    data = dataset()
    metrics = evaluate_dataset(
        stand_in_predict(data),
        {},
        {},
        data,
        build_loader(data, loader_cfg()),
        class_names=data.class_names,
    )
    return {k: v for k, v in metrics.items() if isinstance(v, float)}
