"""The lr / momentum hooks over whole runs: the 1x schedule, warmup in epochs, by-epoch
policies, resume, hook identity and the errors raised at before_run."""

from __future__ import annotations

import dataclasses
from math import cos, pi

import pytest
from schedule_preview import preview_schedule, preview_state

import detfn.engine.schedules as sch
from detfn.engine.events import Event, Priority, Stage
from detfn.engine.schedules import schedule_hook
from detfn.registry import build

ONE_GROUP = ((0.02,), (0.95,))
TWO_GROUPS = ((0.02, 0.01), (0.95, 0.9))


def fresh_state(groups, *, iters_per_epoch=10, max_epochs=1, max_iters=None):
    return preview_state(
        *groups, iters_per_epoch=iters_per_epoch, max_epochs=max_epochs, max_iters=max_iters
    )


# ---------------------------------------------------------------------------------------------
# detfn-specific: the 1x schedule, warmup counted in epochs, by-epoch policies, resume


def test_1x_schedule_warmup_and_steps():
    cfg = sch.StepSchedule(step=(8, 11), warmup="linear", warmup_iters=500, warmup_ratio=0.001)
    ipe = 300  # warmup runs into epoch 1, where the regular lr is still 0.02
    logged, _ = preview_schedule(
        [schedule_hook("lr", cfg)], fresh_state(ONE_GROUP, iters_per_epoch=ipe, max_epochs=12)
    )
    lr = {it: logged[it + 1][0][0] for it in (0, 250, 499, 500, 501, 8 * ipe - 1)}
    assert lr[0] == pytest.approx(2e-5, rel=1e-12)  # 0.02 * ratio
    assert lr[250] == pytest.approx(0.02 * (1 - 0.5 * 0.999), rel=1e-12)  # ~0.01001
    assert lr[250] == pytest.approx(0.01001, rel=1e-9)
    assert lr[499] < 0.02 and lr[500] == 0.02 and lr[501] == 0.02
    assert lr[8 * ipe - 1] == 0.02  # last iteration of epoch 7
    for epoch, want in ((8, 0.002), (9, 0.002), (10, 0.002), (11, 0.0002)):
        first, last = epoch * ipe + 1, (epoch + 1) * ipe
        assert logged[first][0][0] == pytest.approx(want, rel=1e-12), epoch
        assert logged[last][0][0] == logged[first][0][0]


def test_warmup_by_epoch_converts_epochs_to_iterations():
    cfg = sch.FixedSchedule(warmup="linear", warmup_iters=2, warmup_ratio=0.1, warmup_by_epoch=True)
    logged, _ = preview_schedule(
        [schedule_hook("lr", cfg)], fresh_state(ONE_GROUP, iters_per_epoch=5, max_epochs=3)
    )
    for it in range(10):  # 2 epochs of 5 iterations
        k = (1 - it / 10) * (1 - 0.1)
        assert logged[it + 1][0] == (0.02 * (1 - k),)
    assert all(logged[it + 1][0] == (0.02,) for it in range(10, 15))


@pytest.mark.parametrize(
    "cfg, want",
    [
        (sch.ExpSchedule(gamma=0.5), lambda e: 0.02 * 0.5**e),
        (
            sch.PolySchedule(power=2.0, min_value=1e-4),
            lambda e: (0.02 - 1e-4) * (1 - e / 4) ** 2 + 1e-4,
        ),
        (sch.InvSchedule(gamma=0.1, power=0.75), lambda e: 0.02 * (1 + 0.1 * e) ** -0.75),
        (
            sch.CosineSchedule(min_value=0.001),
            lambda e: 0.001 + 0.019 * (1 + cos(pi * e / 4)) / 2,
        ),
        (sch.LinearSchedule(min_ratio=0.5), lambda e: 0.02 - 0.01 * e / 4),
    ],
)
def test_by_epoch_policies_change_once_per_epoch(cfg, want):
    logged, _ = preview_schedule(
        [schedule_hook("lr", cfg)], fresh_state(ONE_GROUP, iters_per_epoch=3, max_epochs=4)
    )
    for epoch in range(4):
        for it in range(epoch * 3, epoch * 3 + 3):
            assert logged[it + 1][0][0] == pytest.approx(want(epoch), rel=1e-12)


def test_resume_keeps_base_momentum_and_continues_the_schedule():
    make = lambda: [  # noqa: E731
        schedule_hook("momentum", sch.CosineSchedule(min_value=0.5, by_epoch=False)),
        schedule_hook(
            "lr", sch.StepSchedule(by_epoch=False, step=(3,), warmup="exp", warmup_iters=4)
        ),
    ]
    full, _ = preview_schedule(make(), fresh_state(TWO_GROUPS))
    first, state = preview_schedule(make(), fresh_state(TWO_GROUPS), stop_at=6)
    assert state.momentum != TWO_GROUPS[1]  # the scheduled value, not the base
    second, end = preview_schedule(make(), state)  # fresh hooks, resumed mid-epoch
    assert end.base["momentum"] == TWO_GROUPS[1]
    assert {**first, **second} == full


def test_hook_names_priorities_and_events_without_effect():
    lr_hook = build(sch.FixedSchedule(), param="lr")
    momentum_hook = build(sch.StepSchedule(), param="momentum")
    wd_hook = build(sch.CosineSchedule(), param="weight_decay")
    assert (lr_hook.name, lr_hook.priority) == ("lr", int(Priority.VERY_HIGH)) == ("lr", 10)
    assert (momentum_hook.name, momentum_hook.priority) == ("momentum", int(Priority.HIGH))
    assert (wd_hook.name, wd_hook.priority) == ("weight_decay", int(Priority.HIGH))
    state = fresh_state(ONE_GROUP)
    for stage in (Stage.AFTER_TRAIN_ITER, Stage.AFTER_TRAIN_EPOCH, Stage.BEFORE_VAL_EPOCH):
        assert lr_hook.fn(Event(stage=stage, state=state)) is None


def test_before_run_errors_are_one_line_value_errors():
    epochs_unknown = fresh_state(ONE_GROUP, max_epochs=None, max_iters=10)
    with pytest.raises(
        ValueError, match=r"CosineSchedule\(by_epoch=True\) needs the run's max_epochs"
    ):
        schedule_hook("lr", sch.CosineSchedule()).fn(Event(Stage.BEFORE_RUN, epochs_unknown))
    no_momentum = dataclasses.replace(fresh_state(ONE_GROUP), base={"lr": (0.02,)})
    with pytest.raises(ValueError, match="state.base has no 'momentum' values"):
        schedule_hook("momentum", sch.StepSchedule()).fn(Event(Stage.BEFORE_RUN, no_momentum))
    no_loader = dataclasses.replace(fresh_state(ONE_GROUP), iters_per_epoch=0)
    cfg = sch.FixedSchedule(warmup="linear", warmup_iters=1, warmup_by_epoch=True)
    with pytest.raises(ValueError, match="iters_per_epoch > 0"):
        schedule_hook("lr", cfg).fn(Event(Stage.BEFORE_RUN, no_loader))
    with pytest.raises(ValueError, match="max_value has 1 values for 2 parameter groups"):
        schedule_hook("lr", sch.OneCycleSchedule(max_value=(0.1,))).fn(
            Event(Stage.BEFORE_RUN, fresh_state(TWO_GROUPS))
        )


def test_preview_of_an_iteration_based_run_counts_passes_as_epochs():
    state = preview_state((0.1,), (0.9,), iters_per_epoch=10, max_iters=25)
    steps, end = preview_schedule(
        [schedule_hook("lr", sch.ExpSchedule(gamma=0.5, by_epoch=False))], state
    )
    assert sorted(steps) == list(range(1, 26))
    assert steps[25][0] == (0.1 * 0.5**24,)
    assert (end.iter, end.epoch, end.inner_iter) == (25, 2, 5)
    with pytest.raises(ValueError, match="give max_epochs or max_iters"):
        preview_state((0.1,), (0.9,), iters_per_epoch=10)
    with pytest.raises(ValueError, match="iters_per_epoch must be > 0"):
        preview_state((0.1,), (0.9,), iters_per_epoch=0, max_epochs=1)
