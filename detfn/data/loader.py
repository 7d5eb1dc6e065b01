"""The training / evaluation loader: batch plans, worker processes, resume and skip reports.

A :class:`DetectionLoader` wraps ``torch.utils.data.DataLoader``. Its batch sampler hands the
workers ``(index, epoch)`` keys, so every item is transformed with the generator of
(seed, epoch, index) whatever worker loads it. Position and epoch are the loader's state:
``state_dict() == {"epoch": e, "batches_done": k}``; after ``load_state_dict`` the next
iteration yields exactly the remaining batches of epoch ``e``.

Epochs: ``set_epoch(e)`` selects the epoch (a new epoch starts at batch 0; the current one keeps
its position, so "load_state_dict, then set_epoch(same)" still resumes). Iterating a finished
epoch without ``set_epoch`` moves on to the next one, so a plain ``for`` loop reshuffles.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from detfn.config import Config, check, check_non_negative, check_positive
from detfn.data.collate import collate
from detfn.data.group_sampler import plan_batches
from detfn.registry import register
from detfn.structures import Batch, mix_seed

__all__ = ["DetectionLoader", "LoaderConfig", "build_loader"]

logger = logging.getLogger("detfn.data")


@dataclass(frozen=True)
class LoaderConfig(Config):
    """How batches are formed and loaded (mmdetection: ``samples_per_gpu=2, workers_per_gpu=2``).

    Attributes:
        batch_size: images per batch on one rank.
        num_workers: loader processes (0 loads in the main process).
        shuffle: training order (aspect groups, shuffled per epoch); False keeps dataset order
            and never pads, for evaluation.
        seed: seeds the epoch shuffles and, with the epoch and index, every item's transforms.
        group_by_aspect: every training batch from one orientation group.
        drop_last: drop incomplete groups' tails instead of padding them with repeats.
        persistent_workers: keep worker processes between epochs.
        pin_memory: page-locked batches for faster host-to-GPU copies.
        size_divisor, pad_value: batch padding of :func:`detfn.data.collate`.
    """

    batch_size: int = 2
    num_workers: int = 2
    shuffle: bool = True
    seed: int = 0
    group_by_aspect: bool = True
    drop_last: bool = False
    persistent_workers: bool = False
    pin_memory: bool = False
    size_divisor: int = 32
    pad_value: float = 0.0

    def __post_init__(self) -> None:
        check_positive(self, "batch_size", "size_divisor")
        check_non_negative(self, "num_workers", "seed")
        check(
            self,
            "persistent_workers",
            not (self.persistent_workers and self.num_workers == 0),
            "needs num_workers > 0",
        )


class _PlanSampler(Sampler):
    """A batch sampler that yields whatever plan the loader gave it last."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _seed_worker(worker_id: int) -> None:
    """Seed Python and NumPy from the worker's torch seed, and keep the worker single-threaded.

    detfn transforms take their randomness from explicit generators; this covers user
    transforms that reach for global random state, and avoids thread oversubscription.
    """
    del worker_id  # torch already made the seed worker-specific
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(1)


class DetectionLoader:
    """Iterable of :class:`Batch` with ``len``, ``set_epoch`` and a resumable position."""

    def __init__(self, dataset: Any, cfg: LoaderConfig, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.dataset = dataset
        self.cfg = cfg
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.batches_done = 0
        self._skipped: list[str] = []
        self._plans: dict[int, list[list[int]]] = {}
        self._sampler = _PlanSampler()
        self._loader = DataLoader(
            dataset,
            batch_sampler=self._sampler,
            num_workers=cfg.num_workers,
            collate_fn=functools.partial(
                collate, size_divisor=cfg.size_divisor, pad_value=cfg.pad_value
            ),
            worker_init_fn=_seed_worker,
            generator=torch.Generator().manual_seed(cfg.seed),
            persistent_workers=cfg.persistent_workers,
            pin_memory=cfg.pin_memory,
        )

    def plan(self, epoch: int | None = None) -> list[list[int]]:
        """This rank's batches of dataset indices for ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        if epoch not in self._plans:
            self._plans = {
                epoch: plan_batches(
                    self.dataset.aspect_flags,
                    self.cfg.batch_size,
                    shuffle=self.cfg.shuffle,
                    group_by_aspect=self.cfg.group_by_aspect,
                    seed=self.cfg.seed,
                    epoch=epoch,
                    rank=self.rank,
                    world_size=self.world_size,
                    drop_last=self.cfg.drop_last,
                )
            }
        return self._plans[epoch]

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return len(self.plan())

    def set_epoch(self, epoch: int) -> None:
        """Select ``epoch``; a different epoch starts from its first batch."""
        if epoch != self.epoch:
            self.epoch = int(epoch)
            self.batches_done = 0
            self._skipped = []

    def state_dict(self) -> dict[str, int]:
        """``{"epoch": e, "batches_done": k}``: k batches of epoch e were yielded."""
        return {"epoch": self.epoch, "batches_done": self.batches_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a position; the next iteration yields the remaining batches of that epoch."""
        for key in ("epoch", "batches_done"):
            if not isinstance(state.get(key), int) or state[key] < 0:
                raise ValueError(
                    f"loader state: {key!r} must be an int >= 0, got {state.get(key)!r}"
                )
        self.epoch = state["epoch"]
        if state["batches_done"] > len(self):
            raise ValueError(
                f"loader state: 'batches_done' {state['batches_done']} exceeds the "
                f"{len(self)} batches of an epoch (was the dataset or batch size changed?)"
            )
        self.batches_done = state["batches_done"]
        self._skipped = []

    def skipped(self) -> tuple[str, ...]:
        """Files of the bad images skipped so far in the current epoch."""
        return tuple(self._skipped)

    def __iter__(self) -> Iterator[Batch]:
        if self.batches_done >= len(self) > 0:
            self.set_epoch(self.epoch + 1)
        epoch = self.epoch
        remaining = self.plan(epoch)[self.batches_done :]
        self._sampler.batches = [[(i, epoch) for i in batch] for batch in remaining]
        for batch in self._loader:
            # The loss's own randomness (RoI sampling) is seeded by the batch's place in the run,
            # so a resumed run draws exactly what the uninterrupted one drew.
            batch = dataclasses.replace(
                batch, rng_key=mix_seed(self.cfg.seed, self.rank, epoch, self.batches_done)
            )
            self.batches_done += 1
            self._skipped.extend(batch.skipped)
            if len(batch):
                yield batch
        if self._skipped:
            shown = ", ".join(self._skipped[:10]) + (" ..." if len(self._skipped) > 10 else "")
            logger.warning(
                "epoch %d: skipped %d bad image(s): %s", epoch, len(self._skipped), shown
            )


def build_loader(
    dataset: Any, cfg: LoaderConfig, rank: int = 0, world_size: int = 1
) -> DetectionLoader:
    """A :class:`DetectionLoader` over ``dataset`` (a built detfn dataset) for this rank."""
    return DetectionLoader(dataset, cfg, rank=rank, world_size=world_size)


@register(LoaderConfig)
def build_loader_from_config(
    cfg: LoaderConfig, dataset: Any = None, rank: int = 0, world_size: int = 1
) -> DetectionLoader:
    if dataset is None:
        raise TypeError("build(LoaderConfig(...), dataset=...) needs the dataset to load")
    return build_loader(dataset, cfg, rank=rank, world_size=world_size)
