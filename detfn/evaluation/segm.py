"""COCO ``segm`` evaluation beside ``bbox``: RLE-encoded mask results and mmdetection's names.

Detections with masks (``ImageDetections.masks``, ``Tensor[N, H, W]`` bool in the original
image) become COCO result dicts whose ``segmentation`` is pycocotools' compressed RLE with the
counts as a UTF-8 string (json-ready), and whose ``bbox`` is the detection box, as mmdetection's
``segm.json`` has. :func:`coco_evaluate_instances` returns ``bbox_mAP``, ... and ``segm_mAP``,
``segm_mAP_50``, ``segm_mAP_75``, ``segm_mAP_s``, ``segm_mAP_m``, ``segm_mAP_l`` in one dict, so
an evaluation hook can monitor ``segm_mAP`` for ``save_best``.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from detfn.evaluation.coco import (
    coco_evaluate,
    detections_to_coco_results,
    load_coco,
    write_results_json,
)
from detfn.structures import EncodedMasks, ImageDetections

__all__ = [
    "coco_evaluate_instances",
    "compact_masks",
    "detections_to_segm_results",
    "encode_masks",
    "write_instance_results",
]


def encode_masks(masks: torch.Tensor) -> list[dict[str, Any]]:
    """COCO compressed RLE of each mask, ``{"size": [H, W], "counts": str}``.

    Args:
        masks (Tensor[N, H, W]): bool (or 0/1) masks.
    """
    if masks.dim() != 3:
        raise ValueError(f"encode_masks: masks must be [N, H, W], got {tuple(masks.shape)}")
    if masks.shape[0] == 0:
        return []
    # pycocotools wants a Fortran-ordered uint8 [H, W, N] array.
    array = np.asfortranarray(masks.detach().to("cpu", torch.uint8).permute(1, 2, 0).numpy())
    rles = mask_utils.encode(array)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("utf-8")
    return rles


def compact_masks(detections: ImageDetections) -> ImageDetections:
    """``detections`` with their ``Tensor[N, H, W]`` masks replaced by :class:`EncodedMasks`
    (the same masks as COCO RLEs); detections without masks, or already encoded, unchanged."""
    if not isinstance(detections.masks, torch.Tensor):
        return detections
    return detections._replace(masks=EncodedMasks(tuple(encode_masks(detections.masks))))


def detections_to_segm_results(
    detections: Sequence[Any],
    image_ids: Sequence[int],
    label_to_cat_id: Sequence[int] | Mapping[int, int],
) -> list[dict[str, Any]]:
    """COCO ``segm`` result dicts of per-image detections with masks.

    Args:
        detections: one :class:`~detfn.structures.ImageDetections` per image, ``masks`` set
            (``Tensor[N, H, W]`` bool in the original image, one per box, or their
            :class:`~detfn.structures.EncodedMasks`).
        image_ids, label_to_cat_id: as :func:`detfn.evaluation.detections_to_coco_results`.

    Returns:
        ``[{"image_id", "bbox", "score", "category_id", "segmentation"}, ...]`` in the order of
        the bbox results.
    """
    boxes = detections_to_coco_results(detections, image_ids, label_to_cat_id)
    rles: list[dict[str, Any]] = []
    for k, det in enumerate(detections):
        masks = getattr(det, "masks", None)
        if masks is None:
            raise ValueError(f"detections_to_segm_results: image {k} has no masks")
        num_boxes = torch.as_tensor(det[0]).reshape(-1, 4).shape[0]
        if len(masks) != num_boxes:
            raise ValueError(
                f"detections_to_segm_results: image {k} has {len(masks)} masks for "
                f"{num_boxes} boxes"
            )
        rles.extend(masks.rles if isinstance(masks, EncodedMasks) else encode_masks(masks))
    return [dict(result, segmentation=rle) for result, rle in zip(boxes, rles)]


def _check_segm_gt(gt: COCO) -> None:
    for ann in gt.dataset["annotations"]:
        if "segmentation" not in ann:
            raise ValueError(
                f"segm evaluation: ground-truth annotation {ann.get('id')} (image "
                f"{ann.get('image_id')}) has no 'segmentation' (load the dataset with_mask=True)"
            )


def coco_evaluate_instances(
    coco_gt: COCO | str | os.PathLike[str] | Mapping[str, Any],
    segm_results: Sequence[Mapping[str, Any]],
    metrics: Sequence[str] = ("bbox", "segm"),
    classwise: bool = False,
    img_ids: Sequence[int] | None = None,
) -> dict[str, Any]:
    """``bbox`` and ``segm`` COCO metrics of the same detections, in one dict.

    Args:
        coco_gt: ground truth with ``segmentation`` on every annotation.
        segm_results: :func:`detections_to_segm_results` output (each has ``bbox`` too).
        metrics: which of ``"bbox"`` and ``"segm"`` to compute.
        classwise, img_ids: as :func:`detfn.evaluation.coco_evaluate`.

    Returns:
        ``bbox_mAP``, ..., ``segm_mAP``, ``segm_mAP_50``, ``segm_mAP_75``, ``segm_mAP_s``,
        ``segm_mAP_m``, ``segm_mAP_l`` (and the ``_copypaste`` / ``_summary`` entries).
    """
    unknown = set(metrics) - {"bbox", "segm"}
    if unknown:
        raise ValueError(f"coco_evaluate_instances: unknown metrics {sorted(unknown)}")
    gt = load_coco(coco_gt)
    if "segm" in metrics:
        _check_segm_gt(gt)
    out: dict[str, Any] = {}
    for iou_type in metrics:
        out.update(coco_evaluate(gt, segm_results, classwise, iou_type, img_ids=img_ids))
    return out


def write_instance_results(
    segm_results: Sequence[Mapping[str, Any]], prefix: str | os.PathLike[str]
) -> tuple[pathlib.Path, pathlib.Path]:
    """Write ``<prefix>.bbox.json`` and ``<prefix>.segm.json`` (mmdetection's file names, e.g.
    for a test-dev submission); returns both paths."""
    prefix = str(prefix)
    bbox = [{k: v for k, v in r.items() if k != "segmentation"} for r in segm_results]
    return (
        write_results_json(bbox, f"{prefix}.bbox.json"),
        write_results_json(list(segm_results), f"{prefix}.segm.json"),
    )
