"""Pure schedule math and config checks (values hand-computed or from torch's OneCycleLR)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import replace
from math import cos, pi

import pytest
import torch
from mmcv_policies import schedule_from_mmcv
from schedule_preview import preview_schedule, preview_state

import detfn.engine.schedules as sch
from detfn.config import from_json, to_json
from detfn.engine.events import Hook
from detfn.engine.schedules import (
    annealing_cos,
    annealing_linear,
    one_cycle_ends,
    restart_position,
    schedule_hook,
    warmup_factor,
)
from detfn.registry import build, is_registered


def regular(cfg, base, progress, total, group=0):
    """The policy's value of one group (the regular value, before warmup)."""
    return cfg.value(base, progress, total, group)


# ---------------------------------------------------------------------------------------------
# curves


def test_annealing_curves_endpoints_and_midpoints():
    assert annealing_cos(1.0, 0.2, 0.0) == 1.0
    assert annealing_cos(1.0, 0.2, 1.0) == 0.2
    assert annealing_cos(1.0, 0.2, 0.5) == pytest.approx(0.6)
    # a restart weight w starts the cycle at w * start + (1 - w) * end
    assert annealing_cos(1.0, 0.2, 0.0, weight=0.5) == pytest.approx(0.6)
    assert annealing_linear(1.0, 0.2, 0.25) == pytest.approx(0.8)


def test_warmup_lr_formulas():
    regular, w, ratio = 0.02, 500, 0.001
    assert regular * warmup_factor("constant", 123, w, ratio) == pytest.approx(2e-5)
    assert regular * warmup_factor("linear", 0, w, ratio) == pytest.approx(2e-5)
    assert regular * warmup_factor("linear", 250, w, ratio) == pytest.approx(0.02 * 0.5005)
    assert regular * warmup_factor("exp", 0, w, ratio) == pytest.approx(2e-5)
    assert regular * warmup_factor("exp", 250, w, ratio) == pytest.approx(0.02 * 0.001**0.5)
    with pytest.raises(ValueError, match="warmup must be one of"):
        regular * warmup_factor("cosine", 0, w, ratio)


@pytest.mark.parametrize("kind", ["constant", "linear", "exp"])
@pytest.mark.parametrize("t", [0, 2, 4])
def test_momentum_warmup_divides_by_the_lr_factor(kind, t):
    factor = warmup_factor(kind, t, 5, 0.5)
    cfg = sch.FixedSchedule(by_epoch=False, warmup=kind, warmup_iters=5, warmup_ratio=0.5)
    state = preview_state((0.1,), (0.95,), iters_per_epoch=10, max_epochs=1)
    hooks = [schedule_hook("lr", cfg), schedule_hook("momentum", cfg)]
    steps, _ = preview_schedule(hooks, state)
    assert steps[t + 1] == ((0.1 * factor,), (0.95 / factor,))
    # the direction is the schedule's: a multiplying momentum warmup on request
    steps, _ = preview_schedule(
        [schedule_hook("momentum", replace(cfg, warmup_divides=False))], state
    )
    assert steps[t + 1][1] == (0.95 * factor,)


def test_step_decay():
    def decays(step, p):  # 0.5 ** n after n decays
        return round(-math.log2(regular(sch.StepSchedule(step=step, gamma=0.5), 1.0, p, 0)))

    assert [decays(5, p) for p in (0, 4, 5, 14, 15)] == [0, 0, 1, 2, 3]
    # a milestone counts once progress reaches it
    assert [decays((8, 11), p) for p in (0, 7, 8, 10, 11, 20)] == [0, 0, 1, 1, 2, 2]
    assert regular(sch.StepSchedule(step=(8, 11), gamma=0.1), 0.02, 9, None) == pytest.approx(0.002)
    assert regular(sch.StepSchedule(step=5, gamma=0.5, min_value=1e-3), 0.02, 30, None) == 1e-3


# ---------------------------------------------------------------------------------------------
# policies as functions of progress


def test_simple_policies_by_hand():
    base = 0.1
    assert regular(sch.FixedSchedule(), base, 7, None) == base
    assert regular(sch.ExpSchedule(gamma=0.9), base, 3, None) == pytest.approx(0.1 * 0.729)
    poly = sch.PolySchedule(power=0.9, min_value=1e-4)
    assert regular(poly, base, 25, 100) == pytest.approx((0.1 - 1e-4) * 0.75**0.9 + 1e-4)
    inv = sch.InvSchedule(gamma=1e-4, power=0.75)
    assert regular(inv, base, 1000, None) == pytest.approx(0.1 * 1.1**-0.75)
    cosine = sch.CosineSchedule(min_ratio=0.01)
    assert regular(cosine, base, 3, 12) == pytest.approx(
        0.001 + 0.5 * (0.1 - 0.001) * (1 + cos(pi * 0.25))
    )
    # neither min_lr nor min_lr_ratio: anneal to 0
    assert regular(sch.CosineSchedule(), base, 6, 12) == pytest.approx(0.05)
    linear = sch.LinearSchedule(min_value=0.02)
    assert regular(linear, base, 3, 12) == pytest.approx(0.08)


def test_flat_cosine_starts_at_rounded_fraction():
    cfg = sch.FlatCosineSchedule(start_percent=0.25, min_value=0.0)
    # start = round(10 * 0.25) = round(2.5) = 2 (Python's round, as mmcv)
    assert [regular(cfg, 1.0, p, 10) for p in (0, 1)] == [1.0, 1.0]
    assert regular(cfg, 1.0, 2, 10) == 1.0
    assert regular(cfg, 1.0, 6, 10) == pytest.approx(0.5)  # halfway through 8


def test_cosine_restart_weights_and_positions():
    cfg = sch.CosineRestartSchedule(periods=(4, 6), restart_weights=(1.0, 0.5), min_value=0.0)
    assert regular(cfg, 1.0, 0, None) == 1.0
    assert regular(cfg, 1.0, 2, None) == pytest.approx(0.5)
    assert regular(cfg, 1.0, 4, None) == pytest.approx(0.5)  # restart at weight 0.5
    assert regular(cfg, 1.0, 7, None) == pytest.approx(0.25)
    assert [restart_position(p, (100, 200, 300, 400)) for p in (50, 210, 300)] == [0, 2, 3]
    with pytest.raises(ValueError, match="past the last period"):
        regular(cfg, 1.0, 10, None)
    whole_run = sch.CosineRestartSchedule(min_value=0.0)  # periods=None: one period, the run
    assert regular(whole_run, 1.0, 5, 10) == pytest.approx(0.5)


def test_cyclic_value_by_hand():
    # 10 iters, 1 cycle, 4 up: 1 -> 10 (cos) then 10 -> 1e-4
    cfg = sch.CyclicSchedule(target_ratio=(10.0, 1e-4))
    assert regular(cfg, 1.0, 2, 10) == pytest.approx(5.5)
    assert regular(cfg, 1.0, 4, 10) == pytest.approx(10.0)
    assert regular(cfg, 1.0, 7, 10) == pytest.approx((10 + 1e-4) / 2)
    # a single ratio r means (r, r / 1e5)
    single = sch.CyclicSchedule(target_ratio=(10.0,), step_ratio_up=0.0, anneal_strategy="linear")
    assert regular(single, 1.0, 5, 10) == pytest.approx(10 + (1e-4 - 10) * 0.5)
    with pytest.raises(ValueError, match="smaller than cyclic_times"):
        regular(sch.CyclicSchedule(target_ratio=(10.0, 1.0), cyclic_times=3), 1.0, 0, 2)


@pytest.mark.parametrize("three_phase", [False, True])
@pytest.mark.parametrize("strategy", ["cos", "linear"])
def test_one_cycle_matches_torch(three_phase, strategy):
    steps = 20
    t = torch.zeros(1, requires_grad=True)
    optim = torch.optim.SGD([t], lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optim,
        max_lr=0.1,
        total_steps=steps,
        pct_start=0.3,
        anneal_strategy=strategy,
        three_phase=three_phase,
        base_momentum=0.85,
        max_momentum=0.95,
    )
    lr_cfg = sch.OneCycleSchedule(
        max_value=0.1, pct_start=0.3, anneal_strategy=strategy, three_phase=three_phase
    )
    mom_cfg = sch.OneCycleSchedule(
        inverse=True, min_value=0.85, max_value=0.95, pct_start=0.3, anneal_strategy=strategy,
        three_phase=three_phase,
    )  # fmt: skip
    for it in range(steps):
        group = optim.param_groups[0]
        assert regular(lr_cfg, 0.5, it, steps) == pytest.approx(group["lr"], rel=1e-12)
        assert regular(mom_cfg, 0.9, it, steps) == pytest.approx(group["momentum"], rel=1e-12)
        optim.step()
        scheduler.step()


def test_one_cycle_per_group_values_and_default_max_lr():
    cfg = sch.OneCycleSchedule(max_value=(0.1, 0.05))
    assert regular(cfg, 9.9, 0, 10, group=1) == pytest.approx(0.05 / 25)
    default = sch.OneCycleSchedule()  # max_lr None: the configured lr is the peak
    assert regular(default, 0.2, 0, 10) == pytest.approx(0.2 / 25)
    mom = sch.OneCycleSchedule(inverse=True, min_value=(0.8, 0.85), max_value=(0.9, 0.95))
    assert regular(mom, 0.0, 0, 10, group=1) == pytest.approx(0.95)
    with pytest.raises(ValueError, match="do not increase from 0"):
        one_cycle_ends(3, 0.3, False)


def test_a_user_policy_is_a_schedule_subclass():
    @dataclasses.dataclass(frozen=True)
    class Halving(sch.Schedule):
        def value(self, base, progress, total, group):
            return base / 2**progress

    state = preview_state((0.1,), (0.9,), iters_per_epoch=2, max_epochs=3)
    steps, _ = preview_schedule([schedule_hook("lr", Halving())], state)
    assert [steps[i][0][0] for i in (1, 3, 5)] == [0.1, 0.05, 0.025]
    with pytest.raises(ValueError, match="Schedule is the base of the policies"):
        sch.Schedule()


# ---------------------------------------------------------------------------------------------
# configs


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: sch.FixedSchedule(warmup="cosine", warmup_iters=5), "FixedSchedule.warmup must"),
        (lambda: sch.FixedSchedule(warmup="linear"), "FixedSchedule.warmup_iters must be > 0"),
        (lambda: sch.FixedSchedule(warmup="exp", warmup_iters=5, warmup_ratio=0.0), "(0, 1]"),
        (lambda: sch.FixedSchedule(warmup="exp", warmup_iters=5, warmup_ratio=1.5), "(0, 1]"),
        (lambda: sch.FixedSchedule(warmup_iters=-1), "warmup_iters must be an int >= 0"),
        (lambda: sch.StepSchedule(step=-10), "StepSchedule.step must be > 0"),
        (lambda: sch.StepSchedule(step=(10, 16, -20)), "must hold positive ints"),
        (lambda: sch.StepSchedule(step=(11, 8)), "must be sorted"),
        (lambda: sch.StepSchedule(step=()), "non-empty"),
        (lambda: sch.CosineSchedule(min_value=0.1, min_ratio=0.0), "not both"),
        (lambda: sch.LinearSchedule(min_value=0.1, min_ratio=0.0), "not both"),
        (lambda: sch.FlatCosineSchedule(start_percent=-0.1), "start_percent"),
        (
            lambda: sch.CosineRestartSchedule(periods=(2, 10), restart_weights=(0.5,)),
            "one weight per period",
        ),
        (
            lambda: sch.CosineRestartSchedule(
                periods=(2, 10), restart_weights=(0.5, 0.5), min_value=0.1, min_ratio=0.0
            ),
            "not both",
        ),
        (lambda: sch.CyclicSchedule(by_epoch=True), "CyclicSchedule.by_epoch must be False"),
        (lambda: sch.CyclicSchedule(target_ratio=(10.0, 0.1, 0.2)), "1 or 2 numbers"),
        (lambda: sch.CyclicSchedule(step_ratio_up=1.4), "[0, 1)"),
        (lambda: sch.CyclicSchedule(anneal_strategy="sin"), "'cos' or 'linear'"),
        (lambda: sch.CyclicSchedule(gamma=0.0), "(0, 1]"),
        (lambda: sch.OneCycleSchedule(by_epoch=True), "by_epoch must be False"),
        (lambda: sch.OneCycleSchedule(pct_start=-0.1), "pct_start"),
        (lambda: sch.OneCycleSchedule(anneal_strategy="sin"), "'cos' or 'linear'"),
        (lambda: sch.OneCycleSchedule(total_steps=0), "total_steps"),
        (lambda: sch.StepSchedule(step=0), "StepSchedule.step"),
        (
            lambda: sch.CosineSchedule(min_value=0.9, min_ratio=1.0),
            "not both",
        ),
        (lambda: sch.CyclicSchedule(by_epoch=True), "by_epoch must be False"),
        (lambda: sch.OneCycleSchedule(pct_start=2.0), "pct_start"),
        (lambda: sch.OneCycleSchedule(inverse=True), "min_value must be set"),
    ],
)
def test_invalid_configs_raise_value_error(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert message in str(info.value)


def test_lists_become_tuples():
    assert sch.StepSchedule(step=[8, 11]).step == (8, 11)
    assert sch.CosineRestartSchedule(periods=[5, 5], restart_weights=[1, 1]).periods == (5, 5)
    assert hash(sch.OneCycleSchedule(max_value=[0.1, 0.2]))


@dataclasses.dataclass(frozen=True)
class _Holder:
    lr: sch.ScheduleConfig = dataclasses.field(default_factory=sch.StepSchedule)
    momentum: sch.ScheduleConfig | None = None


@pytest.mark.parametrize("cls", sch.SCHEDULES)
def test_every_policy_builds_a_hook_for_any_hyperparameter_and_round_trips(cls):
    assert is_registered(cls)
    for param, priority in (("lr", 10), ("momentum", 30), ("weight_decay", 30)):
        hook = build(cls(), param=param)
        assert isinstance(hook, Hook) and (hook.name, hook.priority) == (param, priority)
    holder = _Holder(lr=cls(), momentum=cls())
    assert from_json(to_json(holder), _Holder) == holder


def test_mmcv_policy_names():
    cfg = schedule_from_mmcv(
        policy="step", step=[8, 11], warmup="linear", warmup_iters=500, warmup_ratio=0.001
    )
    assert cfg == sch.StepSchedule(
        step=(8, 11), warmup="linear", warmup_iters=500, warmup_ratio=0.001
    )
    assert isinstance(schedule_from_mmcv("Step"), sch.StepSchedule)
    assert isinstance(schedule_from_mmcv("CosineAnnealing", min_lr=0.0), sch.CosineSchedule)
    assert isinstance(schedule_from_mmcv("cyclic", momentum=True), sch.CyclicSchedule)
    mom = schedule_from_mmcv("OneCycle", momentum=True, base_momentum=[0.8, 0.85])
    assert (mom.inverse, mom.min_value, mom.max_value) == (True, (0.8, 0.85), 0.95)
    assert schedule_from_mmcv("cyclic", target_ratio=10.0).target_ratio == (10.0,)
    with pytest.raises(ValueError, match="did you mean 'cosineannealing'"):
        schedule_from_mmcv("CosineAnealing")
    with pytest.raises(ValueError, match="StepSchedule has no field"):
        schedule_from_mmcv("step", steps=[8, 11])


@pytest.mark.parametrize(
    "cfg",
    [
        sch.StepSchedule(step=3, min_value=1e-5),
        sch.OneCycleSchedule(max_value=0.1, total_steps=100),
        sch.OneCycleSchedule(max_value=(0.1, 0.2), three_phase=True),
        sch.CosineRestartSchedule(periods=(5, 5), restart_weights=(1.0, 0.5), min_ratio=0.1),
        sch.CyclicSchedule(target_ratio=(10.0,), anneal_strategy="linear"),
    ],
)
def test_union_field_round_trips_non_default_values(cfg):
    holder = _Holder(lr=cfg)
    text = to_json(holder)
    assert from_json(text, _Holder) == holder
    assert f'"type": "{type(cfg).__name__}"' in text
