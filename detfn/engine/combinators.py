"""Hook functions built from hook functions: a hook's body says what it does, these say when.

``only_at(Stage.AFTER_TRAIN_ITER, when(nth(50, "iter"), log))``: conditions ``cond(event) ->
bool`` (:func:`nth`, :func:`last`, :func:`epoch_end`, :func:`at`, :func:`any_of`, :func:`all_of`)
gate a hook function with :func:`when`. Counting is mmcv's: an iteration's events see
``state.iter`` as its index, so "every n" fires when ``(iter + 1) % n == 0``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Literal

from detfn.engine.driver import keep_stop_reason
from detfn.engine.events import Event, Hook, HookFn, Stage
from detfn.engine.state import TrainState, run_max_iters

Condition = Callable[[Event], bool]
Counter = Literal["iter", "inner_iter", "epoch"]


def when(cond: Condition, fn: HookFn, who: str = "when") -> HookFn:
    """Run ``fn`` on the events where ``cond(event)`` holds."""
    if not callable(fn):
        raise ValueError(f"{who}: expected a hook function fn(event), got {fn!r}")
    return lambda event: fn(event) if cond(event) else None


def at(stages: Stage | str | Iterable[Stage | str]) -> Condition:
    """The event is one of ``stages`` (stages or their names)."""
    items = [stages] if isinstance(stages, (Stage, str)) else list(stages)
    names = {s.value for s in Stage}
    unknown = [s for s in items if not isinstance(s, Stage) and s not in names]
    if unknown or not items:
        raise ValueError(f"unknown stage {unknown[0]!r}; use one of {', '.join(names)}"
                         if unknown else "only_at: give at least one stage")  # fmt: skip
    wanted = frozenset(Stage(s) for s in items)
    return lambda event: event.stage in wanted


def nth(n: int, counter: Counter, start: int | None = None) -> Condition:
    """Every ``n``-th iteration / inner iteration / epoch, counted from 1 (mmcv's rule); with
    ``start``, the counts ``start, start + n, ...`` (mmcv's ``EvalHook(start=...)``)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"nth: n must be an int >= 1, got {n!r}")

    def cond(event: Event) -> bool:
        count = getattr(event.state, counter) + 1
        if start is None:
            return count % n == 0
        return count >= start and (count - start) % n == 0

    return cond


def epoch_end(event: Event) -> bool:
    """The last iteration of an epoch."""
    return event.state.inner_iter + 1 == event.state.iters_per_epoch


def last(counter: Literal["iter", "epoch"]) -> Condition:
    """The run's last iteration or epoch."""
    if counter == "epoch":
        return lambda e: e.state.max_epochs is not None and e.state.epoch + 1 == e.state.max_epochs
    return lambda event: event.state.iter + 1 == run_max_iters(event.state)


def any_of(*conds: Condition) -> Condition:
    return lambda event: any(cond(event) for cond in conds)


def all_of(*conds: Condition) -> Condition:
    return lambda event: all(cond(event) for cond in conds)


def only_at(stages: Stage | str | Iterable[Stage | str], fn: HookFn) -> HookFn:
    return when(at(stages), fn, "only_at")


def compose(*fns: HookFn) -> HookFn:
    """One hook function running ``fns`` in order, each seeing the state the previous returned;
    it returns the final state if any part returned one, else None."""
    if not fns:
        raise ValueError("compose: give at least one hook function")
    for i, fn in enumerate(fns):
        if isinstance(fn, Hook) or not callable(fn):
            raise ValueError(f"compose: argument {i} is {fn!r}; pass a hook function (hook.fn)")

    def composed(event: Event) -> TrainState | None:
        changed = None
        for fn in fns:
            new = fn(event if changed is None else replace(event, state=changed))
            if new is not None:
                before = event.state if changed is None else changed
                changed = keep_stop_reason(before, new, source=f"compose part {fn!r}")
        return changed

    return composed
