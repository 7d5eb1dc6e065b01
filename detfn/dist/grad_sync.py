"""Data-parallel gradient averaging in buckets, after or during the backward pass.

:class:`GradSync` averages the gradients of every rank with one all-reduce per bucket
(:mod:`detfn.dist.buckets`), never one call per tensor. Two ways to run it:

* **after the backward** (:meth:`GradSync.reduce`): the optimizer hook calls it on the step
  that updates, on the accumulated gradients, so accumulation windows communicate once;
  all buckets are launched asynchronously and then waited for;
* **overlapped** (:meth:`GradSync.wrap_loss_fn`, autograd backend): a gradient hook on every
  parameter leaf copies the gradient into its bucket as autograd produces it; a bucket whose
  gradients are all in, and whose predecessors are launched, starts its all-reduce at once,
  while autograd computes the earlier layers; a callback at the end of the backward launches
  what is left and waits (DDP's reducer, in a functional step). Buckets start in the same order
  on every rank, which collectives require. :meth:`reduce` then only hands the result over.

The ``func`` backend (``torch.func.grad_and_value``) has no hooks on its wrapped tensors, so it
uses the after-backward reduction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch.autograd import Variable

from detfn.dist.buckets import DEFAULT_BUCKET_BYTES, Bucket, pack, plan_buckets, unpack
from detfn.dist.comm import get_world_size, is_distributed

__all__ = ["GradSync"]

Grads = dict[str, torch.Tensor]


class _Backward:
    """Bookkeeping of one overlapped backward pass."""

    def __init__(self, buckets: list[Bucket]):
        self.buckets = buckets
        self.flats: list[torch.Tensor | None] = [None] * len(buckets)
        self.missing = [len(b.names) for b in buckets]
        self.works: list[Any] = []
        self.launched = 0
        self.callback_queued = False

    def flat(self, b: int) -> torch.Tensor:
        if self.flats[b] is None:
            self.flats[b] = self.buckets[b].new_flat()
        return self.flats[b]

    def launch_ready(self, everything: bool = False) -> None:
        """Start the all-reduce of every complete bucket whose predecessors have started."""
        while self.launched < len(self.buckets) and (
            everything or self.missing[self.launched] == 0
        ):
            flat = self.flat(self.launched)
            self.works.append(dist.all_reduce(flat, async_op=True))
            self.launched += 1


class GradSync:
    """Average gradients across the ranks in ~``cap_bytes`` buckets.

    Args:
        params: the trainable parameters by name, in registration order (their shapes,
            dtypes and devices fix the bucket plan, identical on every rank).
        cap_bytes: bucket size (DDP's 25 MiB).
        overlap: start bucket all-reduces during the backward pass (autograd backend only).
    """

    def __init__(
        self,
        params: Mapping[str, torch.Tensor],
        *,
        cap_bytes: int = DEFAULT_BUCKET_BYTES,
        overlap: bool = False,
    ):
        self.buckets = plan_buckets(params, cap_bytes)
        self.slots = {
            name: (b, i) for b, bkt in enumerate(self.buckets) for i, name in enumerate(bkt.names)
        }
        self.overlap = overlap
        self._live: _Backward | None = None
        self._reduced: Grads | None = None
        self.calls = 0  # all-reduce calls issued, for tests and benchmarks

    # ---- after the backward -------------------------------------------------------------
    def reduce(self, grads: Mapping[str, torch.Tensor]) -> Grads:
        """The ranks' average of ``grads`` (this rank's, by name); the identity on one process.

        After an overlapped backward this returns that pass's result (its all-reduces are done),
        with this rank's own tensors where it has them (the same storage).
        """
        if not is_distributed():
            return dict(grads)
        if self._reduced is not None:
            reduced, self._reduced = self._reduced, None
            self._check_known(grads)
            return {**reduced, **grads}
        self._check_known(grads)
        flats = [pack(bucket, grads) for bucket in self.buckets]
        works = [dist.all_reduce(flat, async_op=True) for flat in flats]
        self.calls += len(works)
        for work in works:
            work.wait()
        world = get_world_size()
        out: Grads = {}
        for bucket, flat in zip(self.buckets, flats):
            out.update(unpack(bucket, flat, world))
        return out

    def _check_known(self, grads: Mapping[str, torch.Tensor]) -> None:
        unknown = set(grads) - set(self.slots)
        if unknown:
            raise RuntimeError(f"GradSync: gradients outside the bucket plan: {sorted(unknown)}")

    # ---- overlapped with the backward ---------------------------------------------------
    def wrap_loss_fn(self, loss_fn: Callable) -> Callable:
        """``loss_fn`` that arms the overlapped reduction of the backward pass that follows.

        The gradient hooks go on the parameter leaves the autograd backend passes in (fresh
        leaves every step), so nothing leaks from one step into the next.
        """

        def armed(params, buffers, batch):
            if self.overlap and is_distributed():
                self._arm(params)
            return loss_fn(params, buffers, batch)

        return armed

    def _arm(self, params: Mapping[str, torch.Tensor]) -> None:
        self._live = _Backward(self.buckets)
        self._reduced = None
        for name, leaf in params.items():
            if name in self.slots and leaf.requires_grad and leaf.is_leaf:
                leaf.register_hook(self._hook(name))

    def _hook(self, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
        b, i = self.slots[name]
        bucket = self.buckets[b]

        def on_grad(grad: torch.Tensor) -> torch.Tensor:
            live = self._live
            if live is None:
                return grad
            if not live.callback_queued:
                Variable._execution_engine.queue_callback(self._finish)
                live.callback_queued = True
            flat = live.flat(b)
            slot = bucket.view(flat, i)
            slot.copy_(grad)
            flat[bucket.size + i] = 1
            live.missing[b] -= 1
            live.launch_ready()
            return slot  # autograd hands out the bucket slot: averaged in place by _finish

        return on_grad

    def _finish(self) -> None:
        """End of the backward: launch the rest in order, wait, average in place."""
        live, self._live = self._live, None
        if live is None:
            return
        live.launch_ready(everything=True)
        self.calls += len(live.works)
        for work in live.works:
            work.wait()
        world = get_world_size()
        reduced: Grads = {}
        for bucket, flat in zip(self.buckets, live.flats):
            reduced.update(unpack(bucket, flat, world))
        self._reduced = reduced
