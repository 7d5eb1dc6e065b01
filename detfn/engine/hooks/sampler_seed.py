"""Sampler seeding: ``train_loader.set_epoch(epoch)`` at every ``before_train_epoch``.

mmcv's ``DistSamplerSeedHook``: a shuffling sampler seeded by ``seed + epoch`` gives every epoch
(and every process) a different but reproducible order. The loader (or its sampler / batch
sampler) must offer ``set_epoch``; a loader without one is an error, not a silent no-op, since
the order would then repeat every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from detfn.engine.combinators import only_at
from detfn.engine.events import Event, Hook, HookConfig, Stage, get_priority
from detfn.registry import register

SAMPLER_SEED_HOOK = "sampler_seed"


@dataclass(frozen=True)
class SamplerSeedConfig(HookConfig):
    """Priority NORMAL, as a custom hook in mmdet's ``train_detector``."""


def _set_epoch_target(loader: Any) -> Any:
    """The object whose ``set_epoch`` to call: the loader, its batch sampler or its sampler."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    candidates = (
        loader,
        batch_sampler,
        getattr(batch_sampler, "sampler", None),
        getattr(loader, "sampler", None),
    )
    for candidate in candidates:
        if candidate is not None and callable(getattr(candidate, "set_epoch", None)):
            return candidate
    raise TypeError(
        f"sampler seed hook: {type(loader).__name__} has no set_epoch (nor its sampler / "
        "batch_sampler); use a loader whose sampler reshuffles by epoch or drop this hook"
    )


def sampler_seed_hook(cfg: SamplerSeedConfig) -> Hook:
    """The hook (see the module docstring)."""

    def set_epoch(event: Event) -> None:
        _set_epoch_target(event.run.train_loader).set_epoch(event.state.epoch)

    fn = only_at(Stage.BEFORE_TRAIN_EPOCH, set_epoch)
    return Hook(SAMPLER_SEED_HOOK, fn, get_priority(cfg.priority))


register(SamplerSeedConfig)(sampler_seed_hook)
