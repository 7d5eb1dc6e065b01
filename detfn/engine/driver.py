"""The driver: feed a run's event generator to hook functions in priority order (lower first;
equal priorities keep registration order, as mmcv's ``register_hook``), after checking the order
of their declared outputs. Each hook sees the state the previous one returned; the result is sent
back into the generator.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import replace
from typing import Any

from detfn.engine.events import LOOP_OUTPUTS, OUTPUT_FIELDS, Event, Hook, Stage, get_priority
from detfn.engine.state import TrainState

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
        if not isinstance(hook.name, str) or not hook.name:
            raise ValueError(f"a hook's name must be a non-empty str, got {hook.name!r}")
        if hook.name in names:
            raise ValueError(f"two hooks are named {hook.name!r}; hook names key state.hooks")
        if not callable(hook.fn):
            raise TypeError(f"hook {hook.name!r}: fn must be callable, got {hook.fn!r}")
        names.add(hook.name)
        checked.append(replace(hook, priority=get_priority(hook.priority)))
    return tuple(sorted(checked, key=lambda h: h.priority))


def check_outputs(ordered: Sequence[Hook]) -> None:
    """Every output a hook reads is written before it: by the loop, or by earlier hooks only
    (a hook that writes it later would leave the reader without it on some events); else one
    ValueError line naming the hook, the output and the later writer with both priorities."""
    for i, hook in enumerate(ordered):
        for name in (*hook.reads, *hook.reads_optional, *hook.writes):
            if name not in OUTPUT_FIELDS:
                known = ", ".join(sorted(OUTPUT_FIELDS))
                raise ValueError(f"hook {hook.name!r} names an unknown output {name!r}: {known}")
        for name in (*hook.reads, *hook.reads_optional):
            later = [w for w in ordered[i + 1 :] if name in w.writes]
            earlier = name in LOOP_OUTPUTS or any(name in w.writes for w in ordered[:i])
            if not later and (earlier or name not in hook.reads):
                continue
            where = "no hook writes it"
            if later:
                writer = f"hook {later[0].name!r} (priority {later[0].priority})"
                where = f"{writer} writes it later than this hook's priority {hook.priority}"
            raise ValueError(f"hook {hook.name!r} reads the output {name!r}, but {where}")


def _note(error: BaseException, text: str) -> None:
    if hasattr(error, "add_note"):  # Python 3.11+
        error.add_note(text)


def dispatch(event: Event, hooks: Sequence[Hook]) -> TrainState:
    """Run ``hooks`` (ordered) on one event, threading the state through them; each may set only
    the :class:`Outputs` fields it declares. On ``after_run`` every hook runs even if an earlier
    one raised; the failure is raised after all ran, or noted on the run's original error."""
    outputs = event.outputs
    state = event.state
    failures: list[BaseException] = []
    for hook in hooks:
        current = replace(event, state=state)
        outputs.open_for(f"hook {hook.name!r}", hook.writes)
        try:
            new = hook.fn(current)
        except (Exception, KeyboardInterrupt) as error:
            where = f"{event.stage.value} (epoch {state.epoch}, iter {state.iter})"
            _note(error, f"raised in hook {hook.name!r} at {where}")
            if event.stage is not Stage.AFTER_RUN:
                raise
            failures.append(error)
            continue
        finally:
            outputs.open_for("", None)
        if new is not None:
            state = keep_stop_reason(state, new, source=f"hook {hook.name!r}")
    if failures and event.error is not None:
        for failure in failures:
            _note(event.error, f"also, during after_run: {type(failure).__name__}: {failure}")
    elif failures:
        raise failures[0]
    return state


def drive(events: Events, hooks: Sequence[Hook]) -> TrainState:
    """Consume an event generator with ``hooks`` in priority order; return the final state. An
    error while driving (a hook, a ``KeyboardInterrupt``) is thrown into the generator, which
    yields ``after_run`` with it; after the hooks ran, the original error propagates."""
    ordered = order_hooks(hooks)
    check_outputs(ordered)
    event: Event | None = None
    try:
        event = next(events)
        while True:
            try:
                state = dispatch(event, ordered)
                event = events.send(state)
            except StopIteration as done:
                return done.value
            except (Exception, KeyboardInterrupt) as error:
                if event.stage is Stage.AFTER_RUN:
                    raise
                event = events.throw(error)
    finally:
        events.close()
