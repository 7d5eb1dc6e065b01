"""``__post_init__`` checks shared by the lr and momentum policy configs.

The lr and momentum families have the same base fields (warmup), the same step, cyclic and
one-cycle parameters, so each check lives here once and both config modules call it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from detfn.config import check, check_positive, fail
from detfn.engine.schedules.steps import check_step
from detfn.engine.schedules.warmup import check_warmup_fields

__all__ = [
    "check_anneal_strategy",
    "check_cyclic_fields",
    "check_fractions",
    "check_min_pair",
    "check_nonempty_tuples",
    "check_one_cycle_fields",
    "check_only_by_iter",
    "check_schedule_base",
    "check_step_fields",
    "normalize_tuples",
]


def normalize_tuples(cfg: Any, *names: str) -> None:
    """Accept lists (mmcv habit) for tuple fields: store them as tuples so configs stay hashable."""
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, list):
            object.__setattr__(cfg, name, tuple(value))


def check_schedule_base(cfg: Any, base: type, family: str, policies: Sequence[type]) -> None:
    """The base config of a family is not a policy itself; every policy checks its warmup fields.

    Raises:
        ValueError: ``cfg`` is an instance of ``base`` itself, naming the ``policies`` to use.
    """
    if type(cfg) is base:
        names = ", ".join(c.__name__ for c in policies)
        raise ValueError(
            f"{base.__name__} is the base of the {family} policies; use one of {names}"
        )
    check_warmup_fields(cfg)


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


def check_fractions(cfg: Any, *names: str) -> None:
    """Each named field is a float in [0, 1] (a fraction of the run or of a cycle)."""
    for name in names:
        value = getattr(cfg, name)
        check(
            cfg,
            name,
            isinstance(value, float) and 0 <= value <= 1,
            f"must be a float in [0, 1], got {value!r}",
        )


def check_nonempty_tuples(cfg: Any, *names: str) -> None:
    """A per-group value given as a tuple needs at least one entry (one number is fine too)."""
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, tuple):
            check(cfg, name, len(value) > 0, "must not be an empty tuple")


def check_step_fields(cfg: Any) -> None:
    """``step`` (one interval or milestones) and a positive ``gamma`` of the step policies."""
    problem = check_step(cfg.step)
    if problem is not None:
        fail(cfg, "step", problem)
    check_positive(cfg, "gamma")


def check_cyclic_fields(cfg: Any) -> None:
    """The fields of the cyclic policies (see :mod:`detfn.engine.schedules.cycles`)."""
    check_only_by_iter(cfg)
    check(
        cfg,
        "target_ratio",
        len(cfg.target_ratio) in (1, 2),
        f"must hold 1 or 2 numbers, got {cfg.target_ratio!r}",
    )
    check_positive(cfg, "cyclic_times")
    check(
        cfg,
        "step_ratio_up",
        0 <= cfg.step_ratio_up < 1,
        f"must be in [0, 1), got {cfg.step_ratio_up!r}",
    )
    check_anneal_strategy(cfg)
    check(cfg, "gamma", 0 < cfg.gamma <= 1, f"must be in (0, 1], got {cfg.gamma!r}")


def check_one_cycle_fields(cfg: Any, *per_group: str) -> None:
    """The fields both one-cycle policies have; ``per_group`` names their per-group values."""
    check_only_by_iter(cfg)
    check_nonempty_tuples(cfg, *per_group)
    check_fractions(cfg, "pct_start")
    check_anneal_strategy(cfg)
