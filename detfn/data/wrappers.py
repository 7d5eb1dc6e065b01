"""RepeatDataset and ConcatDataset: index arithmetic over other datasets.

Both draw the item's generator from their *own* index (see :mod:`detfn.data.dataset`), so the
``k``-th repeat of an image is augmented differently from the first.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

import torch

from detfn.config import check
from detfn.data.dataset import DatasetConfig, SeededItems, records_to_coco_dict
from detfn.data.errors import Skipped
from detfn.data.records import ImageRecord
from detfn.data.sample import Sample
from detfn.registry import build, register

__all__ = ["ConcatDataset", "ConcatDatasetConfig", "RepeatDataset", "RepeatDatasetConfig"]


@dataclass(frozen=True)
class RepeatDatasetConfig(DatasetConfig):
    """``times`` copies of ``dataset`` per epoch (cheap epochs for small datasets)."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    times: int = 1

    def __post_init__(self) -> None:
        check(self, "times", self.times >= 1, f"must be >= 1, got {self.times}")
        check(
            self,
            "dataset",
            type(self.dataset) is not DatasetConfig,
            "must be a concrete dataset config (CocoDatasetConfig, VOCDatasetConfig, ...)",
        )


@dataclass(frozen=True)
class ConcatDatasetConfig(DatasetConfig):
    """The items of ``datasets`` one after another; all must have the same classes."""

    datasets: tuple[DatasetConfig, ...] = ()

    def __post_init__(self) -> None:
        check(self, "datasets", len(self.datasets) >= 1, "needs at least one dataset")


class RepeatDataset(SeededItems):
    """Item ``i`` is item ``i % len(inner)`` of ``inner``."""

    def __init__(self, inner: Any, times: int, seed: int = 0) -> None:
        self.inner = inner
        self.times = int(times)
        self.seed = int(seed)
        self.epoch = 0
        self.class_names = inner.class_names
        self.label_to_cat_id = inner.label_to_cat_id
        self.aspect_flags = tuple(inner.aspect_flags) * self.times
        self.image_ids = tuple(inner.image_ids)
        self.records: tuple[ImageRecord, ...] = tuple(inner.records)

    def __len__(self) -> int:
        return len(self.inner) * self.times

    def sample(self, index: int, generator: torch.Generator) -> Sample | Skipped:
        return self.inner.sample(index % len(self.inner), generator)

    def to_coco_dict(self) -> dict[str, Any]:
        """The inner dataset's ground truth (each image once)."""
        return self.inner.to_coco_dict()


class ConcatDataset(SeededItems):
    """The items of ``parts`` in order; they must share class names."""

    def __init__(self, parts: list[Any], seed: int = 0) -> None:
        names = parts[0].class_names
        for i, part in enumerate(parts[1:], start=1):
            if part.class_names != names:
                raise ValueError(
                    f"ConcatDataset: datasets[{i}] has classes {part.class_names}, "
                    f"datasets[0] has {names}"
                )
        self.parts = list(parts)
        self.seed = int(seed)
        self.epoch = 0
        self.class_names = names
        self.label_to_cat_id = parts[0].label_to_cat_id
        self.ends = []
        total = 0
        for part in parts:
            total += len(part)
            self.ends.append(total)
        self.aspect_flags = tuple(f for p in parts for f in p.aspect_flags)
        self.image_ids = tuple(i for p in parts for i in p.image_ids)
        self.records = tuple(r for p in parts for r in p.records)

    def __len__(self) -> int:
        return self.ends[-1]

    def sample(self, index: int, generator: torch.Generator) -> Sample | Skipped:
        part = bisect.bisect_right(self.ends, index)
        start = self.ends[part - 1] if part else 0
        return self.parts[part].sample(index - start, generator)

    def to_coco_dict(self) -> dict[str, Any]:
        """Ground truth of all parts; raises if two parts share an image id."""
        return records_to_coco_dict(self.records, self.class_names, self.label_to_cat_id)


@register(RepeatDatasetConfig)
def build_repeat_dataset(cfg: RepeatDatasetConfig, seed: int = 0, **context: Any) -> RepeatDataset:
    return RepeatDataset(build(cfg.dataset, seed=seed, **context), cfg.times, seed=seed)


@register(ConcatDatasetConfig)
def build_concat_dataset(cfg: ConcatDatasetConfig, seed: int = 0, **context: Any) -> ConcatDataset:
    return ConcatDataset([build(d, seed=seed, **context) for d in cfg.datasets], seed=seed)
