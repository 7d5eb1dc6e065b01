"""Sampler seeding (mmcv's ``DistSamplerSeedHook``): ``set_epoch(epoch)`` at every
``before_train_epoch``, so a sampler seeded by ``seed + epoch`` gives every epoch (and process) a
different, reproducible order. A loader without ``set_epoch`` (nor its sampler / batch sampler) is
an error, not a silent no-op: its order would repeat every epoch."""

from __future__ import annotations

from dataclasses import dataclass

from detfn.engine.combinators import only_at
from detfn.engine.events import Event, Hook, HookConfig, Stage, get_priority
from detfn.registry import register


@dataclass(frozen=True)
class SamplerSeedConfig(HookConfig):
    """Priority NORMAL, as a custom hook in mmdet's ``train_detector``."""


@register(SamplerSeedConfig)
def sampler_seed_hook(cfg: SamplerSeedConfig) -> Hook:
    def set_epoch(event: Event) -> None:
        loader = event.run.train_loader
        batch_sampler = getattr(loader, "batch_sampler", None)
        sampler = getattr(batch_sampler, "sampler", None)
        for target in (loader, batch_sampler, sampler, getattr(loader, "sampler", None)):
            if callable(getattr(target, "set_epoch", None)):
                target.set_epoch(event.state.epoch)
                return
        lacks = f"{type(loader).__name__} has no set_epoch (nor its sampler / batch_sampler)"
        fix = "use a loader whose sampler reshuffles by epoch or drop this hook"
        raise TypeError(f"sampler seed hook: {lacks}; {fix}")

    fn = only_at(Stage.BEFORE_TRAIN_EPOCH, set_epoch)
    return Hook("sampler_seed", fn, get_priority(cfg.priority))
