"""Distributed evaluation: every rank predicts its shard, rank 0 scores the whole dataset once.

The evaluation loader shards the dataset as ``indices[rank::world_size]`` (detfn's sampler; a
padded sampler such as mmdetection's repeats a few items to even the shards out). Rank 0 gathers
the shards, interleaves them back into dataset order and drops everything past the dataset's
length, which removes padding duplicates; the metrics are computed there once and broadcast, so
``save_best`` and early stopping take the same decision on every rank.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from detfn.dist.comm import all_gather_objects, broadcast_object, get_rank, is_distributed

__all__ = ["evaluate_on_ranks", "gather_in_order", "merge_strided_shards"]

T = TypeVar("T")


def merge_strided_shards(shards: Sequence[Sequence[T]], total: int) -> list[T]:
    """Dataset order from strided shards: ``shards[r][k]`` is item ``r + k * len(shards)``.

    Shards may be padded at their end (then they are longer than their share); the result is
    cut to ``total`` items.

    Raises:
        ValueError: when the shards hold fewer than ``total`` items.
    """
    world = len(shards)
    merged: list[T] = []
    longest = max((len(s) for s in shards), default=0)
    for k in range(longest):
        for shard in shards:
            if k < len(shard):
                merged.append(shard[k])
    if len(merged) < total:
        raise ValueError(f"shards of {world} ranks hold {len(merged)} items, dataset has {total}")
    return merged[:total]


def gather_in_order(items: Sequence[T], total: int) -> list[T] | None:
    """All ranks' ``items`` (this rank's strided shard) in dataset order on rank 0, else None."""
    shards = all_gather_objects(list(items))
    return merge_strided_shards(shards, total) if get_rank() == 0 else None


def evaluate_on_ranks(
    predict_shard: Callable[[], Sequence[Any]],
    score: Callable[[list[Any]], dict[str, Any]],
    total: int,
) -> dict[str, Any]:
    """Predict this rank's shard, score the gathered dataset on rank 0, return the score on
    every rank.

    Args:
        predict_shard: this rank's predictions, one per dataset item of its shard, in order.
        score: metrics of the whole dataset's predictions in dataset order.
        total: the dataset's length.
    """
    mine = list(predict_shard())
    if not is_distributed():
        return score(merge_strided_shards([mine], total))
    merged = gather_in_order(mine, total)
    metrics = score(merged) if merged is not None else None
    return broadcast_object(metrics)
