"""Samplers: which assigned candidates train, batched (mmdetection's ``RandomSampler`` and
``PseudoSampler``).

Every sampler is built from a :class:`SamplerConfig` subclass and called the same way,
``sampler(assigned, generator) -> SampleResult``, so heads take any of them from their config.
``sampling`` tells the head how to normalise: mmdetection divides a sampled head's losses by
positives + negatives, an unsampled (pseudo-sampled) head's by the positives alone.

Random sampling:

Per image, mmdetection takes at most ``int(num * pos_fraction)`` positives uniformly at random,
then fills the rest of ``num`` with random negatives; with ``neg_pos_ub >= 0`` it takes at most
``int(neg_pos_ub * max(1, num_pos))`` negatives. Ignored candidates (``assigned == -1``) are never
sampled.

Here every row of the batch is sampled at once: each candidate draws one uniform random key; a
candidate is kept when its rank among the candidates of its kind (positive or negative) in its
row is below that row's quota. Ranking by i.i.d. keys is a uniform random subset, so the counts
and the distribution are mmdetection's, with no Python loop over images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from detfn.config import Config, check, check_positive, check_unit_interval
from detfn.registry import register

__all__ = [
    "PseudoSampler",
    "PseudoSamplerConfig",
    "RandomSampler",
    "RandomSamplerConfig",
    "SampleResult",
    "SamplerConfig",
    "build_pseudo_sampler",
    "build_random_sampler",
    "random_sample",
    "rank_within",
]


@dataclass(frozen=True)
class SamplerConfig(Config):
    """Base of every sampler config; a head's ``sampler`` field takes any registered subclass."""


@dataclass(frozen=True)
class RandomSamplerConfig(SamplerConfig):
    """mmdetection's ``RandomSampler``.

    RPN: ``(256, 0.5, -1, False)``; R-CNN: ``(512, 0.25, -1, True)``.

    ``add_gt_as_proposals`` is honoured by the caller, which appends the gt boxes to the
    candidates before assignment; the sampler itself only reads the assignment.
    """

    num: int = 256
    pos_fraction: float = 0.5
    neg_pos_ub: float = -1.0
    add_gt_as_proposals: bool = True

    def __post_init__(self) -> None:
        check_positive(self, "num")
        check_unit_interval(self, "pos_fraction")
        check(
            self,
            "neg_pos_ub",
            self.neg_pos_ub == -1 or self.neg_pos_ub >= 0,
            f"must be -1 (no bound) or >= 0, got {self.neg_pos_ub!r}",
        )


class SampleResult(NamedTuple):
    """Attributes:
    pos_mask (Tensor[B, N]): bool, sampled positives.
    neg_mask (Tensor[B, N]): bool, sampled negatives (disjoint from ``pos_mask``).
    """

    pos_mask: Tensor
    neg_mask: Tensor


def rank_within(keys: Tensor, member: Tensor) -> Tensor:
    """Rank of each member by ascending key within its row; non-members rank after all members.

    Args:
        keys (Tensor[B, N]): float keys in [0, 1).
        member (Tensor[B, N]): bool.

    Returns:
        Tensor[B, N] int64: 0 for the member with the smallest key in its row, 1 for the next...
    """
    masked = torch.where(member, keys, torch.full_like(keys, 2.0))  # non-members sort last
    order = masked.argsort(dim=1)  # [B, N]
    positions = torch.arange(keys.shape[1], device=keys.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def random_sample(
    cfg: RandomSamplerConfig, assigned: Tensor, generator: torch.Generator | None = None
) -> SampleResult:
    """Sample positives (``assigned > 0``) and negatives (``assigned == 0``) in each row.

    Args:
        cfg: sizes.
        assigned (Tensor[B, N]): int64 assignment, -1 ignore, 0 negative, k >= 1 positive.
        generator: randomness source (any device); ``None`` uses torch's global one.

    Returns:
        :class:`SampleResult` of bool masks [B, N].
    """
    if assigned.dim() != 2 or assigned.dtype not in (torch.int32, torch.int64):
        raise ValueError(
            f"random_sample: assigned must be an integer tensor [B, N], got "
            f"{assigned.dtype} {tuple(assigned.shape)}"
        )
    positive, negative = assigned > 0, assigned == 0
    # Keys are drawn on the generator's device (a CPU generator also serves a CUDA batch).
    draw_on = assigned.device if generator is None else generator.device
    keys = torch.rand(assigned.shape, generator=generator, device=draw_on).to(assigned.device)

    pos_quota = int(cfg.num * cfg.pos_fraction)
    pos_mask = positive & (rank_within(keys, positive) < pos_quota)
    num_pos = pos_mask.sum(dim=1, keepdim=True)  # [B, 1]
    neg_quota = cfg.num - num_pos  # [B, 1]
    if cfg.neg_pos_ub >= 0:
        bound = (cfg.neg_pos_ub * num_pos.clamp(min=1)).long()  # int() truncation
        neg_quota = torch.minimum(neg_quota, bound)
    neg_mask = negative & (rank_within(keys, negative) < neg_quota)
    return SampleResult(pos_mask, neg_mask)


@dataclass(frozen=True)
class PseudoSamplerConfig(SamplerConfig):
    """mmdetection's ``PseudoSampler``: every positive and every negative trains (RetinaNet,
    FCOS, ATSS). It draws nothing, so it needs no generator."""


def pseudo_sample(assigned: Tensor) -> SampleResult:
    """All positives (``assigned > 0``) and all negatives (``assigned == 0``); ignored stay out.

    Args:
        assigned (Tensor[B, N]): int64 assignment.
    """
    return SampleResult(assigned > 0, assigned == 0)


@dataclass(frozen=True)
class PseudoSampler:
    """``sampler(assigned, generator) -> SampleResult`` keeping every candidate."""

    cfg: PseudoSamplerConfig
    sampling = False  # losses are normalised by the positives only

    def __call__(self, assigned: Tensor, generator: torch.Generator | None = None) -> SampleResult:
        del generator
        return pseudo_sample(assigned)


@register(PseudoSamplerConfig)
def build_pseudo_sampler(cfg: PseudoSamplerConfig, **context) -> PseudoSampler:
    """Build a :class:`PseudoSampler`; ``context`` is unused."""
    del context
    return PseudoSampler(cfg)


@dataclass(frozen=True)
class RandomSampler:
    """A configured :func:`random_sample`: ``sampler(assigned, generator) -> SampleResult``."""

    cfg: RandomSamplerConfig
    sampling = True  # losses are normalised by positives + negatives

    def __call__(self, assigned: Tensor, generator: torch.Generator | None = None) -> SampleResult:
        return random_sample(self.cfg, assigned, generator)


@register(RandomSamplerConfig)
def build_random_sampler(cfg: RandomSamplerConfig, **context) -> RandomSampler:
    """Build a :class:`RandomSampler`; ``context`` is unused."""
    del context
    return RandomSampler(cfg)
