"""Small collectives over the default process group, each the identity in a 1-process run.

Everything here works without an initialized group (``world_size() == 1``), so library code can
call it unconditionally: one-process training pays nothing for being distribution-aware.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "all_gather_objects",
    "broadcast_object",
    "broadcast_tensors_",
    "get_rank",
    "get_world_size",
    "is_distributed",
    "is_main_process",
    "max_across_ranks",
    "mean_scalars_across_ranks",
    "running_stats",
]


def is_distributed() -> bool:
    """Whether a process group with more than one process is up."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0, the process that writes files."""
    return get_rank() == 0


def _comm_device(like: torch.Tensor | None = None) -> torch.device:
    """NCCL communicates CUDA tensors only; gloo CPU tensors (and CUDA ones through a copy)."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return like.device if like is not None else torch.device("cpu")


def broadcast_tensors_(tensors: Mapping[str, torch.Tensor], src: int = 0) -> None:
    """In place: every tensor of ``tensors`` (params and buffers by name) gets rank ``src``'s
    values, so all ranks start from one initialization (DDP's constructor does the same).

    Tensors are sent in sorted-name order, so ranks agree on the order whatever their dict
    order; each dtype is flattened into one buffer (one broadcast per dtype, not per tensor).
    """
    if not is_distributed():
        return
    names = sorted(tensors)
    by_dtype: dict[torch.dtype, list[str]] = {}
    for name in names:
        by_dtype.setdefault(tensors[name].dtype, []).append(name)
    for dtype in sorted(by_dtype, key=str):
        group = [tensors[n] for n in by_dtype[dtype]]
        device = _comm_device(group[0])
        flat = torch.cat([t.detach().reshape(-1).to(device) for t in group])
        dist.broadcast(flat, src)
        offset = 0
        for t in group:
            t.data.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()


RUNNING_STAT_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def running_stats(buffers: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The buffers a training forward changes: BatchNorm's (SyncBN's) running statistics.

    Frozen weights (FrozenBN, frozen stages) are buffers too but never change, so they are
    broadcast once at the start, not every iteration.
    """
    return {n: b for n, b in buffers.items() if n.endswith(RUNNING_STAT_SUFFIXES)}


def mean_scalars_across_ranks(values: Mapping[str, Any]) -> dict[str, Any]:
    """mmcv's ``log_vars`` reduction: each 0-d tensor or number averaged over the ranks (one
    all-reduce for all of them); other values pass through.

    Every rank must pass the same keys in the same order: a checksum of the names travels with
    the values, and a mismatch is an error, since a silent one would average unrelated numbers.
    """
    keys = [k for k, v in values.items() if _is_scalar(v)]
    if not is_distributed() or not keys:
        return dict(values)
    checksum = float(zlib.crc32("\n".join(keys).encode()))
    packed = torch.tensor([checksum, *(float(values[k]) for k in keys)], dtype=torch.float64)
    packed = packed.to(_comm_device())
    dist.all_reduce(packed)
    summed = packed.cpu().tolist()
    if summed[0] != checksum * get_world_size():
        raise RuntimeError(f"rank {get_rank()}: other ranks log different loss terms than {keys}")
    means = [v / get_world_size() for v in summed[1:]]
    out = dict(values)
    for key, mean in zip(keys, means):
        old = values[key]
        out[key] = (
            torch.tensor(mean, dtype=old.dtype, device=old.device)
            if isinstance(old, torch.Tensor)
            else mean
        )
    return out


def _is_scalar(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.numel() == 1 and value.is_floating_point()
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def max_across_ranks(value: float) -> float:
    """The largest ``value`` over the ranks (the slowest rank's iteration time, for the ETA)."""
    if not is_distributed():
        return float(value)
    packed = torch.tensor([float(value)], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(packed, op=dist.ReduceOp.MAX)
    return float(packed.item())


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank (a metric dict, a seed)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_comm_device() if _nccl() else None)
    return box[0]


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj``, in rank order."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _nccl() -> bool:
    return is_distributed() and dist.get_backend() == "nccl"
