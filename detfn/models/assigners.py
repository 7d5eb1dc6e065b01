"""Max-IoU target assignment (mmdetection's ``MaxIoUAssigner``), batched over images.

Each candidate box (anchor or proposal) is labelled with mmdetection's convention:
``-1`` ignore, ``0`` negative (background), ``k >= 1`` matched to ground truth ``k - 1``. The
rules, applied in order to every image:

1. candidates whose IoF with an ignore region exceeds ``ignore_iof_thr`` are ignored;
2. ``max_iou`` over gts in ``[neg_low, neg_high)`` -> negative (``neg_iou_thr`` is ``neg_high``
   with ``neg_low = 0``, or a ``(low, high)`` pair);
3. ``max_iou >= pos_iou_thr`` -> positive, matched to the best gt;
4. ``match_low_quality``: every gt whose best IoU is ``>= min_pos_iou`` claims its best
   candidate(s) (all tied ones with ``gt_max_assign_all``); a later gt overrides an earlier one;
5. an image without ground truth has every candidate negative (mmdetection does the same, even
   for candidates in ignore regions).

Ground truth is padded to [B, M] with a mask; padded rows get IoU -1 and never match. The
sequential "later gt wins" loop of rule 4 is replaced by taking the highest qualifying gt index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from detfn.boxes import batched_box_iof, batched_box_iou, check_boxes
from detfn.config import Config, check, check_unit_interval
from detfn.registry import register

__all__ = [
    "AssignInput",
    "AssignerConfig",
    "AssignResult",
    "MaxIoUAssigner",
    "MaxIoUAssignerConfig",
    "assign_max_iou",
    "build_max_iou_assigner",
    "gather_assigned",
    "neg_iou_range",
]

IGNORE = -1
NEGATIVE = 0


@dataclass(frozen=True)
class AssignerConfig(Config):
    """Base of every assigner config. Its builder returns a callable
    ``assigner(AssignInput) -> AssignResult``; a head's ``assigner`` field takes any of them."""


@dataclass(frozen=True)
class MaxIoUAssignerConfig(AssignerConfig):
    """mmdetection's ``MaxIoUAssigner`` settings (``ignore_wrt_candidates=True`` always).

    RPN: ``(0.7, 0.3, 0.3, match_low_quality=True)``; R-CNN: ``(0.5, 0.5, 0.5, False)``.
    ``neg_iou_thr`` is a float (negatives have IoU in ``[0, thr)``) or a ``(low, high)`` pair.
    ``ignore_iof_thr <= 0`` disables ignore regions.
    """

    pos_iou_thr: float = 0.5
    neg_iou_thr: float | tuple[float, float] = 0.5
    min_pos_iou: float = 0.0
    gt_max_assign_all: bool = True
    ignore_iof_thr: float = -1.0
    match_low_quality: bool = True

    def __post_init__(self) -> None:
        check_unit_interval(self, "pos_iou_thr", "min_pos_iou")
        low, high = neg_iou_range(self)
        check(
            self,
            "neg_iou_thr",
            0.0 <= low <= high <= 1.0,
            f"must be a float in [0, 1] or a (low, high) pair with 0 <= low <= high <= 1, "
            f"got {self.neg_iou_thr!r}",
        )
        check(
            self,
            "neg_iou_thr",
            high <= self.pos_iou_thr,
            f"upper bound must be <= pos_iou_thr={self.pos_iou_thr}, got {self.neg_iou_thr!r}",
        )
        check(
            self, "ignore_iof_thr", self.ignore_iof_thr <= 1.0, "must be <= 1 (or <= 0 to disable)"
        )


def neg_iou_range(cfg: MaxIoUAssignerConfig) -> tuple[float, float]:
    """``[low, high)`` IoU range of negatives: ``(0, thr)`` for a float threshold."""
    thr = cfg.neg_iou_thr
    if isinstance(thr, (tuple, list)):
        if len(thr) != 2:
            raise ValueError(f"MaxIoUAssignerConfig.neg_iou_thr must have 2 values, got {thr!r}")
        return float(thr[0]), float(thr[1])
    return 0.0, float(thr)


class AssignInput(NamedTuple):
    """What every assigner receives, so that assigners are interchangeable by config.

    Attributes:
        candidates (Tensor[B, N, 4]): xyxy anchors, points' boxes or proposals of each image (a
            shared prior set is expanded over the batch, which costs no memory).
        candidate_mask (Tensor[B, N]): bool, False for candidates that take no part (outside
            the image, padding).
        num_per_level (tuple[int, ...]): candidates per feature level, in order, summing to N;
            ``()`` for proposals, which have no levels. Level-aware assigners (ATSS) need it.
        gt_boxes (Tensor[B, M, 4]): xyxy ground truth, padded; gt_mask (Tensor[B, M]) bool.
        ignore_boxes (Tensor[B, G, 4]): xyxy ignore regions, padded; ignore_mask (Tensor[B, G]).
        gt_labels (Tensor[B, M] | None): int64 labels, for assigners that look at classes.
    """

    candidates: Tensor
    candidate_mask: Tensor
    num_per_level: tuple[int, ...]
    gt_boxes: Tensor
    gt_mask: Tensor
    ignore_boxes: Tensor
    ignore_mask: Tensor
    gt_labels: Tensor | None = None


class AssignResult(NamedTuple):
    """Attributes:
    assigned (Tensor[B, N]): int64; -1 ignore, 0 negative, k >= 1 matched to gt k - 1.
    max_iou (Tensor[B, N]): float; best IoU with a valid gt (0 for images without gt, -1 for
        ignored or invalid candidates).
    """

    assigned: Tensor
    max_iou: Tensor


def _check_inputs(boxes, box_mask, gt_boxes, gt_mask, ignore_boxes, ignore_mask) -> None:
    for name, value in (("boxes", boxes), ("gt_boxes", gt_boxes), ("ignore_boxes", ignore_boxes)):
        check_boxes(value, name)
        if value.dim() != 3 or value.shape[0] != boxes.shape[0]:
            raise ValueError(f"assign_max_iou: {name} must be [B, *, 4], got {tuple(value.shape)}")
    for name, mask, of in (
        ("box_mask", box_mask, boxes),
        ("gt_mask", gt_mask, gt_boxes),
        ("ignore_mask", ignore_mask, ignore_boxes),
    ):
        if mask.dtype != torch.bool or mask.shape != of.shape[:2]:
            raise ValueError(
                f"assign_max_iou: {name} must be a bool tensor of shape {tuple(of.shape[:2])}, "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )


def _ignored(cfg, boxes: Tensor, ignore_boxes: Tensor, ignore_mask: Tensor) -> Tensor:
    """Tensor[B, N] bool: candidates covered more than ``ignore_iof_thr`` by an ignore region."""
    if cfg.ignore_iof_thr <= 0 or ignore_boxes.shape[1] == 0 or boxes.shape[1] == 0:
        return torch.zeros(boxes.shape[:2], dtype=torch.bool, device=boxes.device)
    iof = batched_box_iof(boxes, ignore_boxes).masked_fill(~ignore_mask[:, None, :], 0.0)
    return iof.amax(dim=2) > cfg.ignore_iof_thr  # [B, N]


def _low_quality_gt(cfg, iou: Tensor, gt_mask: Tensor) -> Tensor:
    """Tensor[B, N] int64: 1 + the highest gt index claiming each candidate, 0 if none.

    Args:
        iou (Tensor[B, N, M]): with -1 for excluded candidates and padded gts.
    """
    gt_max, gt_argmax = iou.max(dim=1)  # [B, M]
    qualified = (gt_max >= cfg.min_pos_iou) & gt_mask  # [B, M]
    if cfg.gt_max_assign_all:
        claims = iou == gt_max[:, None, :]  # [B, N, M]
    else:
        candidate = torch.arange(iou.shape[1], device=iou.device)  # [N]
        claims = candidate[None, :, None] == gt_argmax[:, None, :]  # [B, N, M]
    claims = claims & qualified[:, None, :]  # [B, N, M]
    # The first claim in reversed gt order is the highest claiming gt (a later gt overrides an
    # earlier one in mmdetection's loop); 1 byte per pair keeps the memory of [B, N, M] low.
    last = iou.shape[2] - claims.flip(2).to(torch.uint8).argmax(dim=2)  # [B, N], 1-based
    return torch.where(claims.any(dim=2), last, torch.zeros_like(last))


def assign_max_iou(
    cfg: MaxIoUAssignerConfig,
    boxes: Tensor,
    box_mask: Tensor,
    gt_boxes: Tensor,
    gt_mask: Tensor,
    ignore_boxes: Tensor,
    ignore_mask: Tensor,
) -> AssignResult:
    """Assign candidates to padded ground truth, all images at once.

    Args:
        cfg: thresholds.
        boxes (Tensor[B, N, 4]): xyxy candidates; box_mask (Tensor[B, N]) bool marks valid ones
            (invalid ones get -1 and take no part in matching).
        gt_boxes (Tensor[B, M, 4]): xyxy ground truth, padded; gt_mask (Tensor[B, M]) bool.
        ignore_boxes (Tensor[B, G, 4]): xyxy ignore regions, padded; ignore_mask (Tensor[B, G]).

    Returns:
        :class:`AssignResult` with ``assigned`` and ``max_iou`` of shape [B, N].
    """
    _check_inputs(boxes, box_mask, gt_boxes, gt_mask, ignore_boxes, ignore_mask)
    batch, num_boxes = boxes.shape[:2]
    if gt_boxes.shape[1] == 0 or num_boxes == 0:
        assigned = torch.where(box_mask, NEGATIVE, IGNORE)
        return AssignResult(assigned, boxes.new_zeros(batch, num_boxes))
    excluded = ~box_mask | _ignored(cfg, boxes, ignore_boxes, ignore_mask)  # [B, N]
    iou = batched_box_iou(boxes, gt_boxes)  # [B, N, M]
    iou = iou.masked_fill(~gt_mask[:, None, :] | excluded[:, :, None], -1.0)
    max_iou, best_gt = iou.max(dim=2)  # [B, N]

    low, high = neg_iou_range(cfg)
    assigned = torch.full_like(best_gt, IGNORE)
    assigned = torch.where((max_iou >= low) & (max_iou < high), NEGATIVE, assigned)
    assigned = torch.where(max_iou >= cfg.pos_iou_thr, best_gt + 1, assigned)
    if cfg.match_low_quality:
        claimed = _low_quality_gt(cfg, iou, gt_mask)
        assigned = torch.where(claimed > 0, claimed, assigned)

    no_gt = ~gt_mask.any(dim=1, keepdim=True)  # [B, 1]
    assigned = torch.where(no_gt, NEGATIVE, assigned)
    max_iou = torch.where(no_gt, 0.0, max_iou)
    assigned = torch.where(box_mask, assigned, IGNORE)
    return AssignResult(assigned, max_iou)


def gather_assigned(assigned: Tensor, values: Tensor, fill: float | int = 0) -> Tensor:
    """Per-candidate value of the matched gt (boxes, labels, ...); ``fill`` where unmatched.

    Args:
        assigned (Tensor[B, N]): from :func:`assign_max_iou`.
        values (Tensor[B, M, ...]): per-gt values, e.g. boxes [B, M, 4] or labels [B, M].

    Returns:
        Tensor[B, N, ...] with ``values[b, assigned[b, n] - 1]`` where ``assigned > 0``.
    """
    if values.shape[1] == 0:
        return values.new_full((*assigned.shape, *values.shape[2:]), fill)
    index = (assigned - 1).clamp(min=0)  # [B, N]
    trailing = values.shape[2:]
    expanded = index.view(*index.shape, *(1,) * len(trailing)).expand(*index.shape, *trailing)
    gathered = values.gather(1, expanded)  # [B, N, ...]
    matched = (assigned > 0).view(*assigned.shape, *(1,) * len(trailing))
    return torch.where(matched, gathered, torch.full_like(gathered, fill))


@dataclass(frozen=True)
class MaxIoUAssigner:
    """A configured :func:`assign_max_iou`; every assigner is called with one
    :class:`AssignInput` and returns an :class:`AssignResult`."""

    cfg: MaxIoUAssignerConfig

    def __call__(self, inp: AssignInput) -> AssignResult:
        return assign_max_iou(
            self.cfg,
            inp.candidates,
            inp.candidate_mask,
            inp.gt_boxes,
            inp.gt_mask,
            inp.ignore_boxes,
            inp.ignore_mask,
        )


@register(MaxIoUAssignerConfig)
def build_max_iou_assigner(cfg: MaxIoUAssignerConfig, **context) -> MaxIoUAssigner:
    """Build a :class:`MaxIoUAssigner`; ``context`` is unused."""
    del context
    return MaxIoUAssigner(cfg)
