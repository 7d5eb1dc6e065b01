"""The event generator and the driver: order, counters, workflow, stop, failures, priorities."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import torch

from detfn.engine.driver import drive, keep_stop_reason, order_hooks
from detfn.engine.events import Event, Hook, Priority, Stage
from detfn.engine.hooks.ema import EMAConfig
from detfn.engine.loop import RunContext, train_loop
from detfn.engine.optim import SGDConfig
from detfn.engine.runner import RunnerConfig, build_hooks
from detfn.engine.schedules import CosineSchedule
from detfn.engine.state import TrainState
from detfn.registry import build

S = Stage


def fake_step(state, batch):
    return {"loss": torch.tensor(1.0), "losses": {}, "grads": {}, "batch_size": 1}


def fresh(**kw) -> TrainState:
    return TrainState(params={}, buffers={}, opt_state=None, **kw)


def recorder(log: list, name: str = "rec", priority: int = 50) -> Hook:
    def fn(event: Event):
        s = event.state
        log.append((event.stage, s.epoch, s.iter, s.inner_iter))

    return Hook(name, fn, priority)


def run_loop(state, run, hooks, workflow=(("train", 1),)):
    return drive(train_loop(state, run, workflow), hooks)


def test_epoch_based_order_with_val_workflow():
    log = []
    run = RunContext(
        train_loader=["a", "b"],
        train_step=fake_step,
        val_loader=["v1", "v2"],
        val_step=lambda s, b: {"acc": 1.0 if b == "v1" else 0.0, "batch_size": 1},
    )
    metrics = []

    def keep_metrics(event):
        if event.stage is S.AFTER_VAL_EPOCH:
            metrics.append(event.outputs.metrics)

    keep = Hook("m", keep_metrics, 60)
    final = run_loop(fresh(max_epochs=2), run, [recorder(log), keep], (("train", 1), ("val", 1)))
    epoch = lambda e, i0: [  # noqa: E731
        (S.BEFORE_TRAIN_EPOCH, e, i0, 0),
        (S.BEFORE_TRAIN_ITER, e, i0, 0),
        (S.AFTER_TRAIN_ITER, e, i0, 0),
        (S.BEFORE_TRAIN_ITER, e, i0 + 1, 1),
        (S.AFTER_TRAIN_ITER, e, i0 + 1, 1),
        (S.AFTER_TRAIN_EPOCH, e, i0 + 2, 2),
        (S.BEFORE_VAL_EPOCH, e + 1, i0 + 2, 0),
        (S.BEFORE_VAL_ITER, e + 1, i0 + 2, 0),
        (S.AFTER_VAL_ITER, e + 1, i0 + 2, 0),
        (S.BEFORE_VAL_ITER, e + 1, i0 + 2, 0),
        (S.AFTER_VAL_ITER, e + 1, i0 + 2, 0),
        (S.AFTER_VAL_EPOCH, e + 1, i0 + 2, 0),
    ]
    expected = [(S.BEFORE_RUN, 0, 0, 0), *epoch(0, 0), *epoch(1, 2), (S.AFTER_RUN, 2, 4, 0)]
    assert log == expected
    assert (final.epoch, final.iter, final.max_iters, final.iters_per_epoch) == (2, 4, 4, 2)
    assert metrics == [{"acc": 0.5}, {"acc": 0.5}]


def test_iteration_based_order_crosses_epochs():
    log = []
    run = RunContext(train_loader=["a", "b"], train_step=fake_step, evaluate=lambda s: {"x": 1.0})
    run_loop(fresh(max_iters=5), run, [recorder(log)], (("train", 2), ("val", 1)))
    stages = [(st.value, it) for st, _, it, _ in log]
    assert stages == [
        ("before_run", 0),
        ("before_train_epoch", 0),
        ("before_train_iter", 0),
        ("after_train_iter", 0),
        ("before_train_iter", 1),
        ("after_train_iter", 1),
        ("after_train_epoch", 2),
        ("before_val_epoch", 2),
        ("after_val_epoch", 2),
        ("before_train_epoch", 2),
        ("before_train_iter", 2),
        ("after_train_iter", 2),
        ("before_train_iter", 3),
        ("after_train_iter", 3),
        ("after_train_epoch", 4),
        ("before_val_epoch", 4),
        ("after_val_epoch", 4),
        ("before_train_epoch", 4),
        ("before_train_iter", 4),
        ("after_train_iter", 4),
        ("before_val_epoch", 5),
        ("after_val_epoch", 5),
        ("after_run", 5),
    ]


def test_consumer_may_send_a_new_state_but_not_clear_a_stop():
    run = RunContext(train_loader=["a", "b", "c"], train_step=fake_step)
    events = train_loop(fresh(max_epochs=1), run)
    event = next(events)
    seen = []
    while True:
        state = event.state
        seen.append(state.hooks.get("mark"))
        if event.stage is S.BEFORE_RUN:
            state = replace(state, hooks={"mark": 7})
        if event.stage is S.AFTER_TRAIN_ITER and state.iter == 0:
            state = replace(state, stop_reason="enough")
        if event.stage is S.BEFORE_TRAIN_ITER and state.iter == 1:
            state = replace(state, stop_reason=None)  # must not clear it
        try:
            event = events.send(state)
        except StopIteration as done:
            final = done.value
            break
    assert seen[0] is None and set(seen[1:]) == {7}
    assert final.stop_reason == "enough" and final.iter == 1


def test_stop_request_cannot_be_cleared_by_a_later_hook():
    log = []

    def stopper(event):
        if event.stage is S.AFTER_TRAIN_ITER and event.state.iter == 2:
            return replace(event.state, stop_reason="early stop")
        return None

    def clearer(event):
        return replace(event.state, stop_reason=None)

    hooks = [Hook("stop", stopper, 10), Hook("clear", clearer, 20), recorder(log, priority=30)]
    run = RunContext(train_loader=list(range(4)), train_step=fake_step)
    final = run_loop(fresh(max_epochs=3), run, hooks)
    assert final.stop_reason == "early stop"
    assert final.iter == 3 and final.epoch == 0
    assert log[-1][0] is S.AFTER_RUN
    assert [e for e in log if e[0] is S.AFTER_TRAIN_EPOCH] == []


def test_keep_stop_reason_rejects_non_states():
    with pytest.raises(TypeError, match="returned a int"):
        keep_stop_reason(fresh(max_iters=1), 3)


def test_hook_error_still_dispatches_after_run_and_reraises_original():
    original = ValueError("boom at iter 1")
    closed = []

    def bad(event):
        if event.stage is S.AFTER_TRAIN_ITER and event.state.iter == 1:
            raise original

    def closer(event):
        if event.stage is S.AFTER_RUN:
            closed.append((event.error, event.state.iter))

    run = RunContext(train_loader=list(range(4)), train_step=fake_step)
    with pytest.raises(ValueError) as info:
        run_loop(fresh(max_epochs=1), run, [Hook("bad", bad, 40), Hook("closer", closer, 90)])
    assert info.value is original
    assert closed == [(original, 1)]
    assert any("'bad'" in n and "after_train_iter" in n for n in original.__notes__)


def test_step_error_and_failing_closer_keep_the_original_error():
    calls = []

    def step(state, batch):
        if state.iter == 2:
            raise RuntimeError("step failed")
        return fake_step(state, batch)

    def closer_a(event):
        if event.stage is S.AFTER_RUN:
            calls.append("a")
            raise OSError("flush failed")

    def closer_b(event):
        if event.stage is S.AFTER_RUN:
            calls.append(("b", type(event.error).__name__))

    run = RunContext(train_loader=list(range(4)), train_step=step)
    hooks = [Hook("a", closer_a, 50), Hook("b", closer_b, 60)]
    with pytest.raises(RuntimeError, match="step failed") as info:
        run_loop(fresh(max_epochs=1), run, hooks)
    assert calls == ["a", ("b", "RuntimeError")]
    assert any("OSError: flush failed" in n for n in info.value.__notes__)


def test_after_run_failure_of_a_clean_run_is_raised_after_all_closers():
    calls = []

    def closer(name, fail):
        def fn(event):
            if event.stage is S.AFTER_RUN:
                calls.append(name)
                if fail:
                    raise OSError(name)

        return Hook(name, fn, 50)

    run = RunContext(train_loader=[0], train_step=fake_step)
    with pytest.raises(OSError, match="first"):
        run_loop(fresh(max_iters=1), run, [closer("first", True), closer("second", False)])
    assert calls == ["first", "second"]


def test_priorities_sort_and_equal_priorities_keep_registration_order():
    names = ["low", "a50", "high", "b50", "str_high", "c50"]
    prios = [Priority.LOW, 50, 30, "normal", "HIGH", Priority.NORMAL]
    hooks = [Hook(n, lambda e: None, p) for n, p in zip(names, prios)]
    assert [h.name for h in order_hooks(hooks)] == ["high", "str_high", "a50", "b50", "c50", "low"]
    with pytest.raises(ValueError, match="two hooks are named"):
        order_hooks([Hook("x", print, 1), Hook("x", print, 2)])
    with pytest.raises(ValueError, match="between 0 and 100"):
        order_hooks([Hook("x", print, 101)])


def test_default_slots_reproduce_mmcv_custom_hook_order_c():
    """mmdet-facts §4.2 test_custom_hook (c): customs at 1, NORMAL and 89 among the defaults."""
    cfg = RunnerConfig(
        momentum=CosineSchedule(min_ratio=0.1),
        nan_guard=None,
        sampler_seed=None,
    )
    optimizer = build(SGDConfig(), params={"w": torch.zeros(1)})
    custom = [
        Hook("custom_1", print, 1),
        Hook("custom_normal", print, int(Priority.NORMAL)),
        Hook("custom_89", print, 89),
    ]
    names = [h.name for h in order_hooks(build_hooks(cfg, optimizer, custom))]
    assert names == [
        "custom_1",
        "lr",
        "momentum",
        "optimizer",
        "checkpoint",
        "custom_normal",
        "timer",
        "custom_89",
        "text_logger",
    ]
    extras = build_hooks(replace(cfg, ema=EMAConfig(), evaluation=None), optimizer)
    ordered = [h.name for h in order_hooks(extras)]
    assert ordered.index("optimizer") < ordered.index("ema") < ordered.index("checkpoint")


def test_mid_epoch_state_continues_the_epoch_from_the_loader_position():
    from engine_a_toys import ToyLoader, toy_data

    x, y = toy_data(6)
    full = ToyLoader((x, y), batch_size=2, seed=3)
    full.set_epoch(0)
    expected = [b[1].tolist() for b in full][1:]
    seen = []

    def step(state, batch):
        seen.append(batch[1].tolist())
        return fake_step(state, batch)

    loader = ToyLoader((x, y), batch_size=2, seed=3)
    run = RunContext(train_loader=loader, train_step=step)
    log = []
    final = run_loop(fresh(max_epochs=1, epoch=0, iter=1, inner_iter=1), run, [recorder(log)])
    assert seen == expected
    assert (final.iter, final.epoch) == (3, 1)
    assert log[1] == (S.BEFORE_TRAIN_EPOCH, 0, 1, 1)


def test_bad_inputs_fail_with_one_line_errors():
    run = RunContext(train_loader=[0], train_step=fake_step)
    with pytest.raises(ValueError, match="max_epochs .* or max_iters"):
        train_loop(fresh(), run)
    with pytest.raises(ValueError, match="no \\('train', n\\) phase"):
        train_loop(fresh(max_iters=1), run, (("val", 1),))
    with pytest.raises(ValueError, match="'val' phase but the RunContext has no val_step"):
        train_loop(fresh(max_iters=1), run, (("train", 1), ("val", 1)))
    with pytest.raises(ValueError, match="must be \\('train' \\| 'val', count >= 1\\)"):
        train_loop(fresh(max_iters=1), run, (("train", 0),))
    with pytest.raises(TypeError, match="hook 'x' returned a str"):
        run_loop(fresh(max_iters=1), run, [Hook("x", lambda e: "oops", 50)])
    empty = RunContext(train_loader=_Loader(2, []), train_step=fake_step)
    with pytest.raises(RuntimeError, match="train loader yielded no batches in epoch 0"):
        run_loop(fresh(max_epochs=1), empty, [])
    long = RunContext(train_loader=_Loader(2, [0, 1, 2]), train_step=fake_step)
    with pytest.raises(RuntimeError, match="yielded more than len\\(\\) = 2 batches in epoch 0"):
        run_loop(fresh(max_epochs=1), long, [])


def test_a_loader_that_ends_early_closes_the_epoch_with_a_warning(caplog):
    log = []
    logger = logging.getLogger("test_engine_loop.early_end")  # propagates to caplog
    run = RunContext(train_loader=_Loader(3, [0, 1]), train_step=fake_step, logger=logger)
    with caplog.at_level("WARNING", logger=logger.name):
        final = run_loop(fresh(max_iters=5), run, [recorder(log)])
    assert "ended after 2 of len() = 3 batches in epoch 0" in caplog.text
    assert (final.iter, final.epoch) == (5, 2)
    closes = [(e, i) for st, e, i, _ in log if st is S.AFTER_TRAIN_EPOCH]
    assert closes == [(0, 2), (1, 4)]


class _Loader:
    """A loader whose len() disagrees with what it yields."""

    def __init__(self, length, items):
        self.length, self.items = length, items

    def __len__(self):
        return self.length

    def __iter__(self):
        return iter(self.items)
