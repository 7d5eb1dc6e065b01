"""Batch plans: which dataset indices form which batch, per epoch, rank and world size.

Training (``shuffle=True``) follows mmdetection's (Distributed)GroupSampler: images are split by
aspect flag (w / h > 1), each group is shuffled and padded with its own images up to a multiple
of ``batch_size * world_size``, cut into global steps, and the order of the steps is shuffled.
Every batch comes from one group; rank ``r`` takes slice ``r`` of every step, so all ranks get
the same number of batches. The plan is a pure function of (seed, epoch), which is what makes
a mid-epoch resume exact: skip the first ``batches_done`` batches of the same plan.

Evaluation (``shuffle=False``) keeps the dataset order, shards it as ``indices[rank::world]``,
and neither pads nor drops.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["epoch_generator", "plan_batches"]


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of an epoch's shuffle (distinct from the per-item generators)."""
    words = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed((int(words[0]) << 31) ^ int(words[1]))


def _pad_or_drop(perm: torch.Tensor, unit: int, drop_last: bool) -> torch.Tensor:
    """``perm`` cut down (drop_last) or cycled up (pad) to a multiple of ``unit``."""
    if drop_last:
        return perm[: len(perm) - len(perm) % unit]
    missing = (-len(perm)) % unit
    if missing == 0 or len(perm) == 0:
        return perm
    repeats = missing // len(perm) + 1
    return torch.cat((perm, perm.repeat(repeats)[:missing]))


def plan_batches(
    flags: Sequence[int],
    batch_size: int,
    *,
    shuffle: bool = True,
    group_by_aspect: bool = True,
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
) -> list[list[int]]:
    """This rank's batches of dataset indices for ``epoch``.

    Args:
        flags: per dataset item, its aspect group (mmdetection: 1 if width > height).
        batch_size: images per batch on one rank.
        shuffle: training order (grouped, padded, shuffled) versus evaluation order.
        group_by_aspect: keep each batch within one flag group (training only).
        rank, world_size: this process and the number of processes.
        drop_last: drop the incomplete tail of each group instead of padding it.
    """
    if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad batch_size={batch_size}, rank={rank}, world_size={world_size}")
    if not shuffle:
        shard = list(range(len(flags)))[rank::world_size]
        batches = [shard[i : i + batch_size] for i in range(0, len(shard), batch_size)]
        return [b for b in batches if len(b) == batch_size] if drop_last else batches
    generator = epoch_generator(seed, epoch)
    flag_t = torch.as_tensor(list(flags), dtype=torch.int64)
    keys = torch.unique(flag_t).tolist() if group_by_aspect else [None]
    unit = batch_size * world_size
    steps: list[torch.Tensor] = []
    for key in keys:
        members = torch.arange(len(flag_t)) if key is None else torch.nonzero(flag_t == key)[:, 0]
        perm = members[torch.randperm(len(members), generator=generator)]
        perm = _pad_or_drop(perm, unit, drop_last)
        steps.extend(perm.reshape(-1, unit))
    order = torch.randperm(len(steps), generator=generator).tolist()
    start = rank * batch_size
    return [steps[i][start : start + batch_size].tolist() for i in order]
