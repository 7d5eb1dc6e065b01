"""The transform contract: a frozen config, a registered builder, a pure function.

A transform is ``fn(sample, generator) -> sample``: it returns a new :class:`Sample` and draws
every random number from ``generator``, so the same (seed, epoch, index) gives the same sample in
any worker, on any machine. A pipeline is a tuple of transform configs; :func:`build_pipeline`
builds each through the registry and composes them left to right.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from detfn.config import Config
from detfn.data.sample import Sample
from detfn.registry import build

__all__ = ["Transform", "TransformConfig", "build_pipeline", "compose"]

Transform = Callable[[Sample, torch.Generator], Sample]


@dataclass(frozen=True)
class TransformConfig(Config):
    """Common base of every transform config; a pipeline field is ``tuple[TransformConfig, ...]``.

    The JSON codec writes each item with its registry tag and reads subclasses back by that tag,
    so a user's registered transform fits a pipeline without an edit of detfn.
    """


def compose(transforms: Sequence[Transform]) -> Transform:
    """One transform that applies ``transforms`` in order with the same generator."""
    steps = tuple(transforms)

    def pipeline(sample: Sample, generator: torch.Generator) -> Sample:
        for step in steps:
            sample = step(sample, generator)
        return sample

    return pipeline


def build_pipeline(configs: Sequence[TransformConfig]) -> Transform:
    """Build every transform config and compose them."""
    for i, cfg in enumerate(configs):
        if not isinstance(cfg, TransformConfig):
            raise TypeError(f"pipeline[{i}] must be a TransformConfig, got {cfg!r}")
    return compose([build(cfg) for cfg in configs])
