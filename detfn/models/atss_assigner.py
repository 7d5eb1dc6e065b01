"""Adaptive Training Sample Selection (mmdetection 2.x ``ATSSAssigner``), batched over images.

For every ground-truth box, independently:

1. on each feature level, the ``topk`` candidates whose centres are closest (L2) to the gt's
   centre are selected (all of the level if it has fewer);
2. the IoU threshold of that gt is ``mean + std`` of the selected candidates' IoUs with it
   (``std`` unbiased, as ``torch.std``);
3. a selected candidate is positive if its IoU reaches the threshold and its centre lies inside
   the gt by more than 0.01 px on every side.

A candidate positive for several gts goes to the one it overlaps most. The result follows
mmdetection's convention (``-1`` ignore, ``0`` negative, ``k >= 1`` matched to gt ``k - 1``).

Batching: the distance and IoU matrices are ``[B, N, M]`` with padded gts; each gt's threshold
only looks at its own candidates, so padded gts (masked out at the end) never disturb real
ones. Candidates with ``candidate_mask`` False are *removed* as mmdetection removes anchors
outside ``inside_flags``: they get an infinite distance, are left out of the mean and std, and
never become positive. Candidates covered by an ignore region (``ignore_iof_thr > 0``) stay in
the level, at a very large distance, and are labelled ``-1`` unless some gt takes them, as in
mmdetection.

References:
    Zhang et al., "Bridging the Gap Between Anchor-based and Anchor-free Detection via Adaptive
    Training Sample Selection", CVPR 2020, https://arxiv.org/abs/1912.02424
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from detfn.boxes import batched_box_iof, batched_box_iou
from detfn.config import check, check_positive
from detfn.models.assigners import IGNORE, NEGATIVE, AssignerConfig, AssignInput, AssignResult
from detfn.registry import register

__all__ = ["ATSSAssigner", "ATSSAssignerConfig", "assign_atss", "build_atss_assigner"]

# mmdetection's INF for ignored candidates: far enough never to be among the closest ones while
# real candidates remain on the level, yet finite so that they can still be picked if none do.
IGNORED_DISTANCE = 1e8
# A positive's centre must lie this far inside its gt on every side (mmdetection's 0.01 px).
INSIDE_MARGIN = 0.01


@dataclass(frozen=True)
class ATSSAssignerConfig(AssignerConfig):
    """mmdetection's ``ATSSAssigner(topk=9)`` settings; ``ignore_iof_thr <= 0`` disables ignores."""

    topk: int = 9
    ignore_iof_thr: float = -1.0

    def __post_init__(self) -> None:
        check_positive(self, "topk")
        check(
            self, "ignore_iof_thr", self.ignore_iof_thr <= 1.0, "must be <= 1 (or <= 0 to disable)"
        )


def _centres(boxes: Tensor) -> Tensor:
    """Tensor[..., 2] centres of xyxy boxes [..., 4]."""
    return (boxes[..., :2] + boxes[..., 2:]) * 0.5


def _level_candidates(distances: Tensor, num_per_level: tuple[int, ...], topk: int) -> Tensor:
    """Indices Tensor[B, K, M] of the ``topk`` closest candidates of each level, for each gt.

    Args:
        distances (Tensor[B, N, M]): centre distances.
        num_per_level: candidates per level, summing to N.
    """
    picked, start = [], 0
    for count in num_per_level:  # a handful of levels; each topk covers the whole batch
        k = min(topk, count)
        if k > 0:
            level = distances[:, start : start + count]  # [B, n_l, M]
            picked.append(level.topk(k, dim=1, largest=False).indices + start)  # [B, k, M]
        start += count
    return torch.cat(picked, dim=1)


def _masked_mean_std(values: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased std over dim 1 of the kept entries (NaN std for one entry, like torch).

    Args:
        values (Tensor[B, K, M]); keep (Tensor[B, K, M]) bool.

    Returns:
        Two Tensor[B, M].
    """
    weight = keep.to(values.dtype)
    count = weight.sum(dim=1)  # [B, M]
    mean = (values * weight).sum(dim=1) / count.clamp(min=1)
    square = ((values - mean[:, None]) ** 2 * weight).sum(dim=1)  # [B, M]
    std = torch.where(count > 1, square / (count - 1).clamp(min=1), torch.nan).sqrt()
    return mean, std


def _centre_inside(centres: Tensor, gt_boxes: Tensor) -> Tensor:
    """Tensor[B, K, M] bool: centres [B, K, M, 2] inside their gt [B, M, 4] by a margin."""
    gt = gt_boxes[:, None]  # [B, 1, M, 4]
    sides = torch.stack(
        (
            centres[..., 0] - gt[..., 0],
            centres[..., 1] - gt[..., 1],
            gt[..., 2] - centres[..., 0],
            gt[..., 3] - centres[..., 1],
        ),
        dim=-1,
    )  # [B, K, M, 4]
    return sides.amin(dim=-1) > INSIDE_MARGIN


def _ignored(cfg: ATSSAssignerConfig, inp: AssignInput) -> Tensor:
    """Tensor[B, N] bool: candidates covered more than ``ignore_iof_thr`` by an ignore region."""
    boxes = inp.candidates
    if cfg.ignore_iof_thr <= 0 or inp.ignore_boxes.shape[1] == 0 or boxes.shape[1] == 0:
        return torch.zeros(boxes.shape[:2], dtype=torch.bool, device=boxes.device)
    iof = batched_box_iof(boxes, inp.ignore_boxes).masked_fill(~inp.ignore_mask[:, None], 0.0)
    return iof.amax(dim=2) > cfg.ignore_iof_thr


def assign_atss(cfg: ATSSAssignerConfig, inp: AssignInput) -> AssignResult:
    """ATSS assignment of every candidate of every image at once.

    Args:
        cfg: ``topk`` and the ignore threshold.
        inp: :class:`AssignInput` with ``num_per_level`` summing to the candidate count.

    Returns:
        :class:`AssignResult`: ``assigned`` [B, N] and ``max_iou`` [B, N] (best IoU with a
        valid gt; 0 in images without gt, -1 for candidates with ``candidate_mask`` False).
    """
    boxes, valid = inp.candidates, inp.candidate_mask
    batch, num = boxes.shape[:2]
    if sum(inp.num_per_level) != num:
        raise ValueError(
            f"assign_atss: num_per_level {inp.num_per_level} sums to {sum(inp.num_per_level)}, "
            f"but there are {num} candidates"
        )
    if inp.gt_boxes.shape[1] == 0 or num == 0:
        return AssignResult(torch.where(valid, NEGATIVE, IGNORE), boxes.new_zeros(batch, num))
    iou = batched_box_iou(boxes, inp.gt_boxes)  # [B, N, M]
    centres = _centres(boxes)  # [B, N, 2]
    # Exact differences (not cdist's matrix-product shortcut), so close ties rank as in mmdet.
    offsets = centres[:, :, None] - _centres(inp.gt_boxes)[:, None]  # [B, N, M, 2]
    distances = offsets.pow(2).sum(dim=-1).sqrt()  # [B, N, M]
    ignored = _ignored(cfg, inp) & valid  # [B, N]
    distances = distances.masked_fill(ignored[:, :, None], IGNORED_DISTANCE)
    distances = distances.masked_fill(~valid[:, :, None], torch.inf)

    cand = _level_candidates(distances, inp.num_per_level, cfg.topk)  # [B, K, M]
    cand_valid = valid.gather(1, cand.flatten(1)).view_as(cand)  # [B, K, M]
    cand_iou = iou.gather(1, cand)  # [B, K, M]
    mean, std = _masked_mean_std(cand_iou, cand_valid)  # [B, M] each
    cand_centres = centres.gather(1, cand.flatten(1)[..., None].expand(-1, -1, 2))
    cand_centres = cand_centres.view(*cand.shape, 2)  # [B, K, M, 2]
    positive = (
        (cand_iou >= (mean + std)[:, None])
        & _centre_inside(cand_centres, inp.gt_boxes)
        & cand_valid
        & inp.gt_mask[:, None]
    )  # [B, K, M]

    # Within one gt the candidates are distinct, so each (image, candidate, gt) is written once.
    pos_iou = torch.full_like(iou, -torch.inf).scatter(
        1, cand, torch.where(positive, cand_iou, -torch.inf)
    )  # [B, N, M]
    best_iou, best_gt = pos_iou.max(dim=2)  # [B, N]
    assigned = torch.where(ignored, IGNORE, NEGATIVE)
    assigned = torch.where(best_iou > -torch.inf, best_gt + 1, assigned)
    no_gt = ~inp.gt_mask.any(dim=1, keepdim=True)  # [B, 1]
    assigned = torch.where(no_gt, NEGATIVE, assigned)  # as mmdetection, ignores included
    assigned = torch.where(valid, assigned, IGNORE)
    max_iou = iou.masked_fill(~inp.gt_mask[:, None], -1.0).amax(dim=2)  # [B, N]
    max_iou = torch.where(no_gt, 0.0, max_iou)
    return AssignResult(assigned, torch.where(valid, max_iou, -1.0))


@dataclass(frozen=True)
class ATSSAssigner:
    """A configured :func:`assign_atss`, called with one :class:`AssignInput`."""

    cfg: ATSSAssignerConfig

    def __call__(self, inp: AssignInput) -> AssignResult:
        return assign_atss(self.cfg, inp)


@register(ATSSAssignerConfig)
def build_atss_assigner(cfg: ATSSAssignerConfig, **context) -> ATSSAssigner:
    """Build an :class:`ATSSAssigner`; ``context`` is unused."""
    del context
    return ATSSAssigner(cfg)
