"""Small functions that build hook functions out of other hook functions.

A hook function is ``fn(event) -> TrainState | None``. The combinators keep that signature, so
they nest: ``every_n_iters(50, only_at(Stage.AFTER_TRAIN_ITER, log))``. Counting follows mmcv's
``Hook.every_n_iters`` / ``every_n_epochs`` / ``end_of_epoch``: an iteration's events see
``state.iter`` as the index of that iteration, so "every n" fires when ``(iter + 1) % n == 0``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from detfn.engine.driver import keep_stop_reason
from detfn.engine.events import Event, Hook, HookFn, Stage
from detfn.engine.priority import Priority, get_priority
from detfn.engine.state import TrainState

__all__ = [
    "at_epoch_end",
    "compose",
    "every_n_epochs",
    "every_n_inner_iters",
    "every_n_iters",
    "make_hook",
    "only_at",
    "to_stages",
]


def _check_fn(fn: HookFn, who: str) -> None:
    if not callable(fn):
        raise ValueError(f"{who}: expected a hook function fn(event), got {fn!r}")


def _check_n(n: int, who: str) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{who}: n must be an int >= 1, got {n!r}")


def to_stages(stages: Stage | str | Iterable[Stage | str]) -> frozenset[Stage]:
    """Stages from a :class:`Stage`, a stage name, or an iterable of them."""
    items = [stages] if isinstance(stages, (Stage, str)) else list(stages)
    out = set()
    for item in items:
        try:
            out.add(Stage(item))
        except ValueError:
            names = ", ".join(s.value for s in Stage)
            raise ValueError(f"unknown stage {item!r}; use one of {names}") from None
    if not out:
        raise ValueError("only_at: give at least one stage")
    return frozenset(out)


def only_at(stages: Stage | str | Iterable[Stage | str], fn: HookFn) -> HookFn:
    """Run ``fn`` only on events of ``stages``."""
    wanted = to_stages(stages)
    _check_fn(fn, "only_at")

    def filtered(event: Event) -> TrainState | None:
        return fn(event) if event.stage in wanted else None

    return filtered


def every_n_iters(n: int, fn: HookFn) -> HookFn:
    """Run ``fn`` when ``(state.iter + 1) % n == 0`` (iteration events)."""
    _check_n(n, "every_n_iters")
    _check_fn(fn, "every_n_iters")

    def gated(event: Event) -> TrainState | None:
        return fn(event) if (event.state.iter + 1) % n == 0 else None

    return gated


def every_n_inner_iters(n: int, fn: HookFn) -> HookFn:
    """Run ``fn`` when ``(state.inner_iter + 1) % n == 0`` (position inside the epoch)."""
    _check_n(n, "every_n_inner_iters")
    _check_fn(fn, "every_n_inner_iters")

    def gated(event: Event) -> TrainState | None:
        return fn(event) if (event.state.inner_iter + 1) % n == 0 else None

    return gated


def every_n_epochs(n: int, fn: HookFn) -> HookFn:
    """Run ``fn`` when ``(state.epoch + 1) % n == 0`` (epoch events)."""
    _check_n(n, "every_n_epochs")
    _check_fn(fn, "every_n_epochs")

    def gated(event: Event) -> TrainState | None:
        return fn(event) if (event.state.epoch + 1) % n == 0 else None

    return gated


def at_epoch_end(fn: HookFn) -> HookFn:
    """Run ``fn`` on the last iteration of an epoch (``inner_iter + 1 == iters_per_epoch``)."""
    _check_fn(fn, "at_epoch_end")

    def gated(event: Event) -> TrainState | None:
        state = event.state
        return fn(event) if state.inner_iter + 1 == state.iters_per_epoch else None

    return gated


def compose(*fns: HookFn) -> HookFn:
    """One hook function running ``fns`` in order, each seeing the state the previous returned.

    The composed function returns the final state if any part returned one, else None.
    """
    if not fns:
        raise ValueError("compose: give at least one hook function")
    for i, fn in enumerate(fns):
        if isinstance(fn, Hook):
            raise ValueError(f"compose: argument {i} is a Hook; pass its function (hook.fn)")
        _check_fn(fn, f"compose (argument {i})")

    def composed(event: Event) -> TrainState | None:
        changed = None
        for fn in fns:
            new = fn(event if changed is None else replace(event, state=changed))
            if new is not None:
                before = event.state if changed is None else changed
                changed = keep_stop_reason(before, new, source=f"compose part {fn!r}")
        return changed

    return composed


def make_hook(name: str, fn: HookFn, priority: int | str | Priority = Priority.NORMAL) -> Hook:
    """A :class:`Hook` with a checked name, function and priority (int, level or level name)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"make_hook: name must be a non-empty str, got {name!r}")
    _check_fn(fn, f"make_hook({name!r})")
    return Hook(name, fn, get_priority(priority))
