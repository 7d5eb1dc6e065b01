"""``__post_init__`` checks shared by the lr and momentum policy configs."""

from __future__ import annotations

from typing import Any

from detfn.config import check, fail

__all__ = ["check_anneal_strategy", "check_min_pair", "check_only_by_iter", "normalize_tuples"]


def normalize_tuples(cfg: Any, *names: str) -> None:
    """Accept lists (mmcv habit) for tuple fields: store them as tuples so configs stay hashable."""
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, list):
            object.__setattr__(cfg, name, tuple(value))


def check_min_pair(cfg: Any, value: str, ratio: str) -> None:
    """``min_x`` and ``min_x_ratio`` are alternatives; neither means a target of 0."""
    if getattr(cfg, value) is not None and getattr(cfg, ratio) is not None:
        fail(cfg, value, f"and {ratio} are alternatives: set one of them, not both")


def check_only_by_iter(cfg: Any) -> None:
    """Cyclic and one-cycle policies change every iteration (mmcv supports nothing else)."""
    check(cfg, "by_epoch", not cfg.by_epoch, "must be False: this policy changes every iteration")


def check_anneal_strategy(cfg: Any) -> None:
    """``anneal_strategy`` names a curve of :mod:`detfn.engine.schedules.annealing`."""
    check(
        cfg,
        "anneal_strategy",
        cfg.anneal_strategy in ("cos", "linear"),
        f"must be 'cos' or 'linear', got {cfg.anneal_strategy!r}",
    )
