"""Gradient buckets: which gradients travel together in one all-reduce.

DDP's layout: parameters in *reverse* registration order (the backward pass produces the
gradients of the last layers first), cut into buckets of about ``cap_bytes`` (25 MiB, DDP's
``bucket_cap_mb``), one dtype and device per bucket. Each bucket also carries one presence flag
per parameter, so the all-reduce that averages the gradients tells every rank which parameters
had a gradient on *any* rank, and all ranks update the same set of parameters (a parameter
unused on this rank's batch gets the other ranks' gradient, as it would in one process).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

__all__ = ["DEFAULT_BUCKET_BYTES", "Bucket", "names_of", "pack", "plan_buckets", "unpack"]

DEFAULT_BUCKET_BYTES = 25 * 1024 * 1024  # DDP's bucket_cap_mb=25


@dataclass(frozen=True)
class Bucket:
    """One all-reduce: ``flat[offsets[i] : offsets[i] + numels[i]]`` is ``names[i]``'s gradient,
    and ``flat[size + i]`` its presence flag (1 when the rank had a gradient).

    Attributes:
        names / shapes / offsets / numels: the gradients in bucket order.
        size: elements of gradient data (the flags follow).
        dtype / device: of every gradient in the bucket.
    """

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    offsets: tuple[int, ...]
    numels: tuple[int, ...]
    size: int
    dtype: torch.dtype
    device: torch.device

    def index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}

    def new_flat(self) -> torch.Tensor:
        """A zeroed buffer ``Tensor[size + len(names)]``: gradients, then presence flags."""
        return torch.zeros(self.size + len(self.names), dtype=self.dtype, device=self.device)

    def view(self, flat: torch.Tensor, i: int) -> torch.Tensor:
        """Gradient ``i``'s slot in ``flat``, shaped like its parameter."""
        start = self.offsets[i]
        return flat[start : start + self.numels[i]].view(self.shapes[i])


def _bucket(names, tensors, dtype, device) -> Bucket:
    offsets, total = [], 0
    for name in names:
        offsets.append(total)
        total += tensors[name].numel()
    return Bucket(
        names=tuple(names),
        shapes=tuple(tensors[n].shape for n in names),
        offsets=tuple(offsets),
        numels=tuple(tensors[n].numel() for n in names),
        size=total,
        dtype=dtype,
        device=device,
    )


def plan_buckets(
    params: Mapping[str, torch.Tensor], cap_bytes: int = DEFAULT_BUCKET_BYTES
) -> list[Bucket]:
    """Buckets over ``params`` (registration order, e.g. ``dict(model.named_parameters())``).

    A bucket closes when adding the next parameter would pass ``cap_bytes`` or the dtype or
    device changes; a parameter larger than the cap gets a bucket of its own. The plan depends
    only on the names, shapes and dtypes, so every rank computes the same one.
    """
    if cap_bytes < 1:
        raise ValueError(f"bucket cap must be >= 1 byte, got {cap_bytes}")
    buckets: list[Bucket] = []
    current: list[str] = []
    current_bytes = 0
    kind: tuple[torch.dtype, torch.device] | None = None
    for name in reversed(list(params)):
        tensor = params[name]
        nbytes = tensor.numel() * tensor.element_size()
        this_kind = (tensor.dtype, tensor.device)
        if current and (this_kind != kind or current_bytes + nbytes > cap_bytes):
            buckets.append(_bucket(current, params, *kind))
            current, current_bytes = [], 0
        current.append(name)
        current_bytes += nbytes
        kind = this_kind
    if current:
        buckets.append(_bucket(current, params, *kind))
    return buckets


def unpack(bucket: Bucket, flat: torch.Tensor, world_size: int) -> dict[str, torch.Tensor]:
    """The averaged gradients of a reduced ``flat``: ``sum / world_size`` for every parameter
    that had a gradient on some rank (views into ``flat``, which is divided in place)."""
    flags = flat[bucket.size :]
    flat[: bucket.size].div_(world_size)
    present = (flags > 0).tolist()
    return {n: bucket.view(flat, i) for i, n in enumerate(bucket.names) if present[i]}


def pack(bucket: Bucket, grads: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``flat`` of :meth:`Bucket.new_flat` filled with this rank's ``grads`` and flags."""
    flat = bucket.new_flat()
    for i, name in enumerate(bucket.names):
        grad = grads.get(name)
        if grad is not None:
            bucket.view(flat, i).copy_(grad)
            flat[bucket.size + i] = 1
    return flat


def names_of(buckets: Sequence[Bucket]) -> set[str]:
    return {n for b in buckets for n in b.names}
