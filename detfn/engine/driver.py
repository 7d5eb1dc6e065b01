"""The driver: feed a run's event generator to hook functions in priority order.

Hooks are sorted once by priority (lower first; equal priorities keep registration order, as
mmcv's ``register_hook`` inserts after the last hook of lower or equal priority). For every
event, the hooks run in that order and each sees the state the previous one returned; the
resulting state is sent back into the generator.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import replace
from typing import Any

from detfn.engine.events import Event, Hook, Stage
from detfn.engine.priority import get_priority
from detfn.engine.state import TrainState

__all__ = ["Events", "dispatch", "drive", "keep_stop_reason", "order_hooks"]

Events = Generator[Event, "TrainState | None", TrainState]


def keep_stop_reason(old: TrainState, new: Any, *, source: str = "the consumer") -> TrainState:
    """``new``, type-checked, with ``old``'s stop request kept: a stop cannot be cleared."""
    if not isinstance(new, TrainState):
        raise TypeError(f"{source} returned a {type(new).__name__}; return a TrainState or None")
    if old.stop_reason is not None and new.stop_reason != old.stop_reason:
        return replace(new, stop_reason=old.stop_reason)
    return new


def order_hooks(hooks: Sequence[Hook]) -> tuple[Hook, ...]:
    """Hooks sorted by priority (lower first); equal priorities keep registration order."""
    checked = []
    names: set[str] = set()
    for hook in hooks:
        if not isinstance(hook, Hook):
            raise TypeError(f"hooks must be detfn.engine.Hook values, got {type(hook).__name__}")
        if hook.name in names:
            raise ValueError(f"two hooks are named {hook.name!r}; hook names key state.hooks")
        if not callable(hook.fn):
            raise TypeError(f"hook {hook.name!r}: fn must be callable, got {hook.fn!r}")
        names.add(hook.name)
        checked.append(replace(hook, priority=get_priority(hook.priority)))
    return tuple(sorted(checked, key=lambda h: h.priority))


def _note(error: BaseException, text: str) -> None:
    if hasattr(error, "add_note"):
        error.add_note(text)


def _where(hook: Hook, event: Event) -> str:
    s = event.state
    return f"in hook {hook.name!r} at {event.stage.value} (epoch {s.epoch}, iter {s.iter})"


def dispatch(event: Event, hooks: Sequence[Hook]) -> TrainState:
    """Run ``hooks`` (already ordered) on one event, threading the state through them.

    All hooks of the event share one mutable copy of ``event.outputs`` (hooks may add keys, e.g.
    ``grad_norm``). On ``after_run`` every hook runs even if an earlier one raised; a failure
    there is raised after all ran, or, after a failed run, noted on the original error.
    """
    outputs = dict(event.outputs)
    state = event.state
    failures: list[BaseException] = []
    for hook in hooks:
        current = replace(event, state=state, outputs=outputs)
        try:
            new = hook.fn(current)
        except (Exception, KeyboardInterrupt) as error:
            _note(error, f"raised {_where(hook, current)}")
            if event.stage is not Stage.AFTER_RUN:
                raise
            failures.append(error)
            continue
        if new is not None:
            state = keep_stop_reason(state, new, source=f"hook {hook.name!r}")
    if failures and event.error is not None:
        for failure in failures:
            _note(event.error, f"also, during after_run: {type(failure).__name__}: {failure}")
    elif failures:
        raise failures[0]
    return state


def drive(events: Events, hooks: Sequence[Hook]) -> TrainState:
    """Consume an event generator with ``hooks`` in priority order; return the final state.

    A hook that raises is thrown into the generator, which then yields ``after_run`` with the
    error; after the hooks have handled it, the original error propagates to the caller.
    """
    ordered = order_hooks(hooks)
    try:
        event = next(events)
        while True:
            try:
                state = dispatch(event, ordered)
            except (Exception, KeyboardInterrupt) as error:
                if event.stage is Stage.AFTER_RUN:
                    raise
                event = events.throw(error)
                continue
            try:
                event = events.send(state)
            except StopIteration as done:
                return done.value
    finally:
        events.close()
