"""Warmup: the start of training runs at a fraction of the scheduled value.

mmcv 1.x applies warmup on top of the regular (scheduled) value ``v`` at global iteration ``t``
of ``W`` warmup iterations, with ``ratio`` = ``warmup_ratio``:

==========  =====================================  ===================================
type        lr                                     momentum (divides: starts *higher*)
==========  =====================================  ===================================
constant    v * ratio                              v / ratio
linear      v * (1 - k), k = (1 - t/W)(1 - ratio)  v / (1 - k)
exp         v * k,       k = ratio ** (1 - t/W)    v / k
==========  =====================================  ===================================

Warmup lasts while ``t < W``; ``warmup_by_epoch`` counts ``W`` in epochs and converts it with the
number of iterations per epoch.
"""

from __future__ import annotations

from typing import Any, Literal

from detfn.config import check, fail

__all__ = [
    "WARMUP_TYPES",
    "WarmupType",
    "check_warmup_fields",
    "warmup_length",
    "warmup_lr",
    "warmup_momentum",
]

WarmupType = Literal["constant", "linear", "exp"]
WARMUP_TYPES: tuple[str, ...] = ("constant", "linear", "exp")


def _linear_k(cur_iter: int, warmup_iters: int, ratio: float) -> float:
    return (1 - cur_iter / warmup_iters) * (1 - ratio)


def _exp_k(cur_iter: int, warmup_iters: int, ratio: float) -> float:
    return ratio ** (1 - cur_iter / warmup_iters)


def warmup_lr(warmup: str, regular: float, cur_iter: int, warmup_iters: int, ratio: float) -> float:
    """The warmed-up lr at global iteration ``cur_iter`` (< ``warmup_iters``)."""
    if warmup == "constant":
        return regular * ratio
    if warmup == "linear":
        return regular * (1 - _linear_k(cur_iter, warmup_iters, ratio))
    if warmup == "exp":
        return regular * _exp_k(cur_iter, warmup_iters, ratio)
    raise ValueError(f"warmup must be one of {WARMUP_TYPES}, got {warmup!r}")


def warmup_momentum(
    warmup: str, regular: float, cur_iter: int, warmup_iters: int, ratio: float
) -> float:
    """The warmed-up momentum at ``cur_iter``: mmcv divides where the lr multiplies."""
    if warmup == "constant":
        return regular / ratio
    if warmup == "linear":
        return regular / (1 - _linear_k(cur_iter, warmup_iters, ratio))
    if warmup == "exp":
        return regular / _exp_k(cur_iter, warmup_iters, ratio)
    raise ValueError(f"warmup must be one of {WARMUP_TYPES}, got {warmup!r}")


def warmup_length(warmup_iters: int, warmup_by_epoch: bool, iters_per_epoch: int) -> int:
    """Warmup length in iterations (``warmup_iters`` counts epochs when ``warmup_by_epoch``)."""
    return warmup_iters * iters_per_epoch if warmup_by_epoch else warmup_iters


def check_warmup_fields(cfg: Any) -> None:
    """Validate the ``warmup*`` fields every lr/momentum schedule config carries."""
    if cfg.warmup is not None and cfg.warmup not in WARMUP_TYPES:
        fail(cfg, "warmup", f"must be None, 'constant', 'linear' or 'exp', got {cfg.warmup!r}")
    check(
        cfg,
        "warmup_iters",
        isinstance(cfg.warmup_iters, int) and cfg.warmup_iters >= 0,
        f"must be an int >= 0, got {cfg.warmup_iters!r}",
    )
    if cfg.warmup is None:
        return
    check(
        cfg,
        "warmup_iters",
        cfg.warmup_iters > 0,
        f"must be > 0 when warmup={cfg.warmup!r}, got {cfg.warmup_iters!r}",
    )
    check(
        cfg,
        "warmup_ratio",
        0 < cfg.warmup_ratio <= 1,
        f"must be in (0, 1] when warmup={cfg.warmup!r}, got {cfg.warmup_ratio!r}",
    )
