"""Test-time detections of heads with a centerness (quality) branch: FCOS and ATSS.

mmdetection 2.x (``BaseDenseHead._get_bboxes_single`` with score factors), per image and level:

1. ``p = sigmoid(cls)`` over every (location, class) pair; keep pairs with ``p > score_thr``;
2. keep the ``nms_pre`` best of those by ``p``;
3. decode their boxes and clip them to the image;

then, over all levels together, score = ``p * sigmoid(centerness)`` (no square root), class-aware
NMS, and the ``max_per_img`` best. torchvision's FCOS instead ranks and thresholds by the
geometric mean ``sqrt(p * sigmoid(centerness))`` and reports it as the score:
``score_mode="geometric_mean"`` does that. Here every step runs on the whole batch: one ``topk``
per level and one NMS call for all images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from detfn.config import Config, check, check_positive, check_unit_interval
from detfn.models.postprocess import multiclass_nms
from detfn.structures import Detections

__all__ = ["CenternessTestConfig", "ScoreMode", "predict_with_centerness"]

ScoreMode = Literal["product", "geometric_mean"]

# decode(priors Tensor[B, k, P], predictions Tensor[B, k, 4], img_shapes Tensor[B, 2]) -> xyxy
Decode = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class CenternessTestConfig(Config):
    """mmdetection's FCOS/ATSS ``test_cfg`` (FCOS values; ATSS uses ``iou_threshold=0.6``).

    ``nms_pre`` is per level and image (``<= 0`` keeps all pairs above the threshold);
    ``score_thr`` is strict (``>``); ``score_mode`` is ``"product"`` (mmdetection) or
    ``"geometric_mean"`` (torchvision's FCOS, see the module docstring).
    """

    nms_pre: int = 1000
    score_thr: float = 0.05
    iou_threshold: float = 0.5
    max_per_img: int = 100
    score_mode: ScoreMode = "product"

    def __post_init__(self) -> None:
        check_positive(self, "max_per_img")
        check_unit_interval(self, "score_thr", "iou_threshold")
        check(
            self,
            "score_mode",
            self.score_mode in ("product", "geometric_mean"),
            f"must be 'product' or 'geometric_mean', got {self.score_mode!r}",
        )


def _flat(level: Tensor, channels: int) -> Tensor:
    """Tensor[B, channels, H, W] -> Tensor[B, H * W, channels], location-major like the priors."""
    return level.permute(0, 2, 3, 1).reshape(level.shape[0], -1, channels)


def _level_candidates(
    cfg: CenternessTestConfig, logits: Tensor, centerness: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The ``nms_pre`` best (location, class) pairs of one level of every image.

    Args:
        logits (Tensor[B, n, C]); centerness (Tensor[B, n]) logits.

    Returns:
        ``location, label, score, keep``: Tensor[B, k] each (``keep`` bool: above threshold).
    """
    num_classes = logits.shape[2]
    prob = logits.sigmoid()  # [B, n, C]
    factor = centerness.sigmoid()  # [B, n]
    if cfg.score_mode == "geometric_mean":
        prob = torch.sqrt(prob * factor[..., None])
    flat = prob.flatten(1)  # [B, n * C]
    k = flat.shape[1] if cfg.nms_pre <= 0 else min(cfg.nms_pre, flat.shape[1])
    ranked = torch.where(flat > cfg.score_thr, flat, -1.0)  # below threshold: ranked last
    top, index = ranked.topk(k, dim=1)  # [B, k]
    keep = top > cfg.score_thr
    location, label = index // num_classes, index % num_classes
    if cfg.score_mode == "product":
        top = top * factor.gather(1, location)
    return location, label, top, keep


def predict_with_centerness(
    cfg: CenternessTestConfig,
    priors: Sequence[Tensor],
    cls_scores: Sequence[Tensor],
    box_preds: Sequence[Tensor],
    centernesses: Sequence[Tensor],
    decode: Decode,
    img_shapes: Tensor,
) -> Detections:
    """Padded detections of a batch in the resized-image frame.

    Args:
        priors: per level Tensor[n_l, P] (points P = 2 or anchors P = 4), location-major.
        cls_scores: per level Tensor[B, C, H, W] logits.
        box_preds: per level Tensor[B, 4, H, W], what ``decode`` turns into boxes.
        centernesses: per level Tensor[B, 1, H, W] logits.
        decode: ``(priors [B, k, P], preds [B, k, 4], img_shapes [B, 2]) -> boxes [B, k, 4]``,
            clipping to the image.
        img_shapes (Tensor[B, 2]): ``(h, w)`` of each image before padding.

    Returns:
        :class:`~detfn.structures.Detections` with ``D = max_per_img``.
    """
    num_classes = cls_scores[0].shape[1]
    boxes, scores, labels, keeps = [], [], [], []
    for prior, logit, pred, ctr in zip(priors, cls_scores, box_preds, centernesses):
        location, label, score, keep = _level_candidates(
            cfg, _flat(logit, num_classes), _flat(ctr, 1).squeeze(2)
        )
        picked = pred.permute(0, 2, 3, 1).reshape(pred.shape[0], -1, 4)  # [B, n, 4]
        picked = picked.gather(1, location[..., None].expand(-1, -1, 4))  # [B, k, 4]
        boxes.append(decode(prior[location], picked, img_shapes))
        scores.append(score)
        labels.append(label)
        keeps.append(keep)
    score = torch.cat(scores, 1)  # [B, K]
    # One column per class for multiclass_nms: each candidate has one (label, score) pair; its
    # other columns are 0 and fall under the strict ``> 0`` threshold. A kept candidate's score
    # is > 0 (a product of sigmoids above score_thr, exactly 0 only below float32's range).
    per_class = score.new_zeros(*score.shape, num_classes)
    per_class = per_class.scatter(2, torch.cat(labels, 1)[..., None], score[..., None])
    return multiclass_nms(
        torch.cat(boxes, 1),
        per_class,
        torch.cat(keeps, 1),
        score_thr=0.0,
        iou_threshold=cfg.iou_threshold,
        max_per_img=cfg.max_per_img,
    )
