"""Hook-function combinators: stage filters, every-n gates, epoch end, compose; hook checks."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from detfn.engine.combinators import compose, epoch_end, nth, only_at, when
from detfn.engine.driver import drive, order_hooks
from detfn.engine.events import Event, Hook, Priority, Stage
from detfn.engine.loop import RunContext, train_loop
from detfn.engine.state import TrainState


def fake_step(state, batch):
    return {"loss": torch.tensor(0.0), "losses": {}, "grads": {}, "batch_size": 1}


def run(fn, max_epochs=2, loader_len=5):
    state = TrainState(params={}, buffers={}, opt_state=None, max_epochs=max_epochs)
    ctx = RunContext(train_loader=list(range(loader_len)), train_step=fake_step)
    return drive(train_loop(state, ctx), [Hook("h", fn)])


def calls_of(wrap):
    calls = []
    run(wrap(lambda e: calls.append((e.stage.value, e.state.epoch, e.state.iter))))
    return calls


def test_only_at_and_every_n_iters_follow_mmcv_counting():
    calls = calls_of(lambda f: only_at("after_train_iter", when(nth(3, "iter"), f)))
    assert [c[2] for c in calls] == [2, 5, 8]  # (iter + 1) % 3 == 0 over 10 iterations
    calls = calls_of(lambda f: only_at(Stage.AFTER_TRAIN_ITER, when(nth(2, "inner_iter"), f)))
    assert [c[2] for c in calls] == [1, 3, 6, 8]  # inner 1, 3 of each 5-iteration epoch


def test_every_n_epochs_and_at_epoch_end():
    calls = calls_of(lambda f: only_at([Stage.AFTER_TRAIN_EPOCH], when(nth(2, "epoch"), f)))
    assert calls == [("after_train_epoch", 1, 10)]
    calls = calls_of(lambda f: only_at("after_train_iter", when(epoch_end, f)))
    assert [c[2] for c in calls] == [4, 9]


def test_compose_threads_the_state_and_keeps_a_stop():
    def add(key):
        def fn(event):
            return replace(event.state, hooks={**event.state.hooks, key: len(event.state.hooks)})

        return fn

    def stop(event):
        return replace(event.state, stop_reason="enough")

    def clear(event):
        return replace(event.state, stop_reason=None)

    state = TrainState(params={}, buffers={}, opt_state=None)
    out = compose(add("a"), lambda e: None, add("b"), stop, clear)(Event(Stage.BEFORE_RUN, state))
    assert out.hooks == {"a": 0, "b": 1} and out.stop_reason == "enough"
    assert compose(lambda e: None)(Event(Stage.BEFORE_RUN, state)) is None


def test_bad_combinator_inputs_raise_value_errors():
    with pytest.raises(ValueError, match="nth: n must be an int >= 1, got 0"):
        nth(0, "iter")
    with pytest.raises(ValueError, match="nth: n must be an int >= 1, got 1.5"):
        nth(1.5, "epoch")
    with pytest.raises(ValueError, match="unknown stage 'after_iter'"):
        only_at("after_iter", print)
    with pytest.raises(ValueError, match="expected a hook function"):
        when(epoch_end, None)
    with pytest.raises(ValueError, match="compose: give at least one"):
        compose()
    with pytest.raises(ValueError, match="argument 1 is Hook.*; pass a hook function"):
        compose(print, Hook("x", print))
    with pytest.raises(ValueError, match="name must be a non-empty str"):
        order_hooks([Hook("", print)])
    assert order_hooks([Hook("x", print, "very_low")])[0].priority == Priority.VERY_LOW == 90
    with pytest.raises(ValueError, match="unknown priority 'urgent'"):
        order_hooks([Hook("x", print, "urgent")])
    with pytest.raises(TypeError, match="priority must be an integer"):
        order_hooks([Hook("x", print, [10])])
