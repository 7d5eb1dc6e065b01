"""The lr / momentum hooks driven like mmcv 1.7's runner, against mmcv's own test expectations.

Each case reproduces one of mmcv's ``tests/test_runner/test_hooks.py`` runs: SGD(lr=0.02,
momentum=0.95) - or two groups (0.02, 0.95) and (0.01, 0.9), mmcv's ``multi_optimizers`` case -
a loader of 10 batches and a logger at interval 1. The logger records the lr / momentum of step
``k`` (1-based, as mmcv's ``runner.iter + 1``) after every ``before_train_iter`` hook ran; the
numbers asserted are the ones mmcv's tests assert, compared exactly.
"""

from __future__ import annotations

import pytest
import torch
from schedule_preview import preview_schedule, preview_state

import detfn.engine.schedules as sch
from detfn.engine.schedules import schedule_hook
from detfn.engine.state import TrainState

ONE_GROUP = ((0.02,), (0.95,))
TWO_GROUPS = ((0.02, 0.01), (0.95, 0.9))


def fresh_state(groups, *, iters_per_epoch=10, max_epochs=1, max_iters=None) -> TrainState:
    """The state before_run sees: one epoch of 10 batches unless the mmcv test says otherwise."""
    return preview_state(
        *groups, iters_per_epoch=iters_per_epoch, max_epochs=max_epochs, max_iters=max_iters
    )


def expect(logged, expected):
    """``expected``: {step: (lr tuple, momentum tuple)}; exact float equality, as mmcv asserts."""
    for step, (lr, momentum) in expected.items():
        assert logged[step] == (lr, momentum), f"step {step}"


# ---------------------------------------------------------------------------------------------
# mmcv test_cosine_runner_hook / test_linear_runner_hook


def annealing_run(momentum_cls, lr_cls, two_groups):
    """The shared setup of mmcv's cosine and linear runner tests: momentum toward 0.99, lr to 0.

    ``warmup_iters`` / ``warmup_ratio`` without a warmup type do nothing (as in mmcv).
    """
    hooks = [
        schedule_hook(
            "momentum",
            momentum_cls(
                min_ratio=0.99 / 0.95,
                by_epoch=False,
                warmup_iters=2,
                warmup_ratio=0.9 / 0.95,
            ),
        ),
        schedule_hook(
            "lr", lr_cls(by_epoch=False, min_ratio=0.0, warmup_iters=2, warmup_ratio=0.9)
        ),
    ]
    logged, _ = preview_schedule(hooks, fresh_state(TWO_GROUPS if two_groups else ONE_GROUP))
    return logged


@pytest.mark.parametrize("two_groups", [False, True])
def test_cosine_annealing_lr_and_momentum(two_groups):
    logged = annealing_run(sch.CosineSchedule, sch.CosineSchedule, two_groups)
    if two_groups:
        expect(
            logged,
            {
                1: ((0.02, 0.01), (0.95, 0.9)),
                6: ((0.01, 0.005), (0.97, 0.9189473684210527)),
                10: (
                    (0.0004894348370484647, 0.00024471741852423234),
                    (0.9890211303259032, 0.9369673866245399),
                ),
            },
        )
    else:
        expect(
            logged,
            {
                1: ((0.02,), (0.95,)),
                6: ((0.01,), (0.97,)),
                10: ((0.0004894348370484647,), (0.9890211303259032,)),
            },
        )


@pytest.mark.parametrize("two_groups", [False, True])
def test_linear_annealing_lr_and_momentum(two_groups):
    logged = annealing_run(sch.LinearSchedule, sch.LinearSchedule, two_groups)
    if two_groups:
        expect(
            logged,
            {
                1: ((0.02, 0.01), (0.95, 0.9)),
                6: ((0.01, 0.005), (0.97, 0.9189473684210527)),
                10: (
                    (0.0019999999999999983, 0.0009999999999999992),
                    (0.9860000000000001, 0.9341052631578949),
                ),
            },
        )
    else:
        expect(
            logged,
            {
                1: ((0.02,), (0.95,)),
                6: ((0.01,), (0.97,)),
                10: ((0.0019999999999999983,), (0.9860000000000001,)),
            },
        )


# ---------------------------------------------------------------------------------------------
# mmcv test_flat_cosine_runner_hook


@pytest.mark.parametrize("two_groups", [False, True])
@pytest.mark.parametrize("by_epoch", [False, True])
def test_flat_cosine_annealing_lr(two_groups, by_epoch):
    cfg = sch.FlatCosineSchedule(
        by_epoch=by_epoch,
        min_ratio=0.0,
        warmup="linear",
        warmup_iters=10 if by_epoch else 2,
        warmup_ratio=0.9,
        start_percent=0.5,
    )
    groups = TWO_GROUPS if two_groups else ONE_GROUP
    logged, _ = preview_schedule(
        [schedule_hook("lr", cfg)], fresh_state(groups, max_epochs=10 if by_epoch else 1)
    )
    steps = (1, 11, 61, 100) if by_epoch else (1, 6, 7, 10)
    lrs = (
        (0.018000000000000002, 0.009000000000000001),
        (0.02, 0.01),
        (0.018090169943749474, 0.009045084971874737),
        (0.0019098300562505265, 0.0009549150281252633),
    )
    n = len(groups[0])
    expect(logged, {s: (lr[:n], groups[1]) for s, lr in zip(steps, lrs)})


# ---------------------------------------------------------------------------------------------
# mmcv test_one_cycle_runner_hook


@pytest.mark.parametrize("two_groups", [False, True])
def test_one_cycle_lr_and_momentum(two_groups):
    hooks = [
        schedule_hook(
            "momentum",
            sch.OneCycleSchedule(
                inverse=True,
                min_value=0.85,
                max_value=0.95,
                pct_start=0.5,
                anneal_strategy="cos",
                three_phase=False,
            ),
        ),
        schedule_hook(
            "lr",
            sch.OneCycleSchedule(
                max_value=0.01,
                pct_start=0.5,
                anneal_strategy="cos",
                div_factor=25,
                final_div_factor=1e4,
                three_phase=False,
            ),
        ),
    ]
    groups = TWO_GROUPS if two_groups else ONE_GROUP
    logged, _ = preview_schedule(hooks, fresh_state(groups))
    n = len(groups[0])
    expect(
        logged,
        {
            1: ((0.0003999999999999993,) * n, (0.95,) * n),
            6: ((0.00904508879153485,) * n, (0.8595491502812526,) * n),
            10: ((4e-08,) * n, (0.95,) * n),
        },
    )


@pytest.mark.parametrize("max_iters", [2, 10])
def test_one_cycle_total_steps_against_torch(max_iters):
    args = dict(
        max_value=0.01,
        total_steps=5,
        pct_start=0.5,
        anneal_strategy="linear",
        div_factor=25.0,
        final_div_factor=1e4,
    )
    hooks = [schedule_hook("lr", sch.OneCycleSchedule(**args))]
    state = fresh_state(ONE_GROUP, max_epochs=None, max_iters=max_iters)
    if max_iters > args["total_steps"]:
        with pytest.raises(ValueError, match="total_steps=5 must be >= the run's max_iters=10"):
            preview_schedule(hooks, state)
        return
    logged, _ = preview_schedule(hooks, state)
    t = torch.tensor([0.0], requires_grad=True)
    optim = torch.optim.SGD([t], lr=0.01)
    torch_args = {("max_lr" if k == "max_value" else k): v for k, v in args.items()}
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optim, **torch_args)
    target = []
    for _ in range(max_iters):
        optim.step()
        target.append(optim.param_groups[0]["lr"])
        scheduler.step()
    assert logged[max_iters][0][0] == target[-1]


# ---------------------------------------------------------------------------------------------
# mmcv test_cosine_restart_lr_update_hook


@pytest.mark.parametrize("two_groups", [False, True])
def test_cosine_restart_lr(two_groups):
    cfg = sch.CosineRestartSchedule(
        by_epoch=False, periods=(5, 5), restart_weights=(0.5, 0.5), min_ratio=0.0
    )
    groups = TWO_GROUPS if two_groups else ONE_GROUP
    logged, _ = preview_schedule([schedule_hook("lr", cfg)], fresh_state(groups))
    lrs = {1: (0.01, 0.005), 6: (0.01, 0.005), 10: (0.0009549150281252633, 0.00047745751406263163)}
    n = len(groups[0])
    expect(logged, {s: (lr[:n], groups[1]) for s, lr in lrs.items()})


def test_cosine_restart_periods_must_cover_the_run():
    cfg = sch.CosineRestartSchedule(
        by_epoch=False, periods=(5, 2), restart_weights=(0.5, 0.5), min_value=0.0001
    )
    with pytest.raises(ValueError, match="past the last period"):
        preview_schedule([schedule_hook("lr", cfg)], fresh_state(ONE_GROUP))


# ---------------------------------------------------------------------------------------------
# mmcv test_step_runner_hook


@pytest.mark.parametrize("two_groups", [False, True])
def test_step_int_lr_and_momentum(two_groups):
    hooks = [
        schedule_hook(
            "momentum", sch.StepSchedule(by_epoch=False, step=5, gamma=0.5, min_value=0.05)
        ),
        schedule_hook("lr", sch.StepSchedule(by_epoch=False, step=5, gamma=0.5, min_value=1e-3)),
    ]
    groups = TWO_GROUPS if two_groups else ONE_GROUP
    logged, _ = preview_schedule(hooks, fresh_state(groups, iters_per_epoch=30))
    table = {
        1: ((0.02, 0.01), (0.95, 0.9)),
        6: ((0.01, 0.005), (0.475, 0.45)),
        16: ((0.0025, 0.00125), (0.11875, 0.1125)),
        21: ((0.00125, 0.001), (0.059375, 0.05625)),
        26: ((0.001, 0.001), (0.05, 0.05)),
        30: ((0.001, 0.001), (0.05, 0.05)),
    }
    n = len(groups[0])
    expect(logged, {s: (lr[:n], m[:n]) for s, (lr, m) in table.items()})


@pytest.mark.parametrize("two_groups", [False, True])
def test_step_milestones_lr_and_momentum(two_groups):
    hooks = [
        schedule_hook("momentum", sch.StepSchedule(by_epoch=False, step=(4, 6, 8), gamma=0.1)),
        schedule_hook("lr", sch.StepSchedule(by_epoch=False, step=(4, 6, 8), gamma=0.1)),
    ]
    groups = TWO_GROUPS if two_groups else ONE_GROUP
    logged, _ = preview_schedule(hooks, fresh_state(groups))
    table = {
        1: ((0.02, 0.01), (0.95, 0.9)),
        5: ((0.002, 0.001), (9.5e-2, 9.000000000000001e-2)),
        7: (
            (2.0000000000000004e-4, 1.0000000000000002e-4),
            (9.500000000000001e-3, 9.000000000000003e-3),
        ),
        9: (
            (2.0000000000000005e-05, 1.0000000000000003e-05),
            (9.500000000000002e-4, 9.000000000000002e-4),
        ),
    }
    n = len(groups[0])
    expect(logged, {s: (lr[:n], m[:n]) for s, (lr, m) in table.items()})


# ---------------------------------------------------------------------------------------------
# mmcv test_cyclic_lr_update_hook (iteration-based runner, max_iters=8)


@pytest.mark.parametrize(
    "two_groups, gamma, cyclic_times, table",
    [
        (True, 1.0, 1, {1: (0.02, 0.01), 4: (0.155, 0.0775), 6: (0.155, 0.0775)}),
        (False, 0.5, 2, {1: (0.02,), 4: (0.11,), 6: (0.065,), 7: (0.11,)}),
    ],
)
def test_cyclic_lr(two_groups, gamma, cyclic_times, table):
    cfg = sch.CyclicSchedule(
        by_epoch=False,
        target_ratio=(10.0, 1.0),
        cyclic_times=cyclic_times,
        step_ratio_up=0.5,
        anneal_strategy="linear",
        gamma=gamma,
    )
    groups = TWO_GROUPS if two_groups else ONE_GROUP
    logged, _ = preview_schedule(
        [schedule_hook("lr", cfg)], fresh_state(groups, max_epochs=None, max_iters=8)
    )
    expect(logged, {s: (lr, groups[1]) for s, lr in table.items()})


# ---------------------------------------------------------------------------------------------
# mmcv test_momentum_runner_hook


@pytest.mark.parametrize(
    "two_groups, gamma, cyclic_times, table",
    [
        (
            True,
            1.0,
            1,
            {
                1: ((0.01999999999999999, 0.009999999999999995), (0.95, 0.9)),
                5: ((0.2, 0.1), (0.85, 0.8052631578947369)),
                7: ((0.155, 0.0775), (0.875, 0.8289473684210527)),
            },
        ),
        (
            False,
            0.5,
            2,
            {
                1: ((0.01999999999999999,), (0.95,)),
                3: ((0.11,), (0.85,)),
                6: ((0.1879422863405995,), (0.95,)),
                8: ((0.11000000000000001,), (0.9,)),
            },
        ),
    ],
)
def test_cyclic_momentum_with_cyclic_lr(two_groups, gamma, cyclic_times, table):
    hooks = [
        schedule_hook(
            "momentum",
            sch.CyclicSchedule(
                by_epoch=False,
                target_ratio=(0.85 / 0.95, 1.0),
                cyclic_times=cyclic_times,
                step_ratio_up=0.4,
                gamma=gamma,
            ),
        ),
        schedule_hook(
            "lr",
            sch.CyclicSchedule(
                by_epoch=False, target_ratio=(10.0, 1.0), cyclic_times=1, step_ratio_up=0.4
            ),
        ),
    ]
    logged, _ = preview_schedule(hooks, fresh_state(TWO_GROUPS if two_groups else ONE_GROUP))
    expect(logged, table)


@pytest.mark.parametrize(
    "warmup, table",
    [
        ("constant", {1: ((1.9,), (1.8,)), 5: ((1.9,), (1.8,)), 10: ((0.95,), (0.9,))}),
        (
            "linear",
            {
                1: ((1.9,), (1.8,)),
                3: ((1.3571428571428572,), (1.2857142857142858,)),
                10: ((0.95,), (0.9,)),
            },
        ),
        (
            "exp",
            {
                1: ((1.9,), (1.8,)),
                3: ((1.4399307381848783,), (1.3641449098593583,)),
                10: ((0.95,), (0.9,)),
            },
        ),
    ],
)
@pytest.mark.parametrize("two_groups", [False, True])
def test_momentum_warmup_divides(warmup, table, two_groups):
    cfg = sch.StepSchedule(
        by_epoch=False, warmup=warmup, warmup_iters=5, warmup_ratio=0.5, step=(10,)
    )
    groups = TWO_GROUPS if two_groups else ONE_GROUP
    logged, _ = preview_schedule([schedule_hook("momentum", cfg)], fresh_state(groups))
    for step, (first, second) in table.items():
        momentum = first + second if two_groups else first
        assert logged[step] == (groups[0], momentum), f"step {step}"
