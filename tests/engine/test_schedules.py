"""Pure schedule math and config checks (values hand-computed or from torch's OneCycleLR)."""

from __future__ import annotations

import dataclasses
from math import cos, pi

import pytest
import torch

import detfn.engine.schedules as sch
from detfn.config import from_json, to_json
from detfn.engine.events import Hook
from detfn.engine.schedules.lr_policies import restart_position
from detfn.engine.schedules.steps import step_decay, step_exponent
from detfn.registry import build, is_registered

# ---------------------------------------------------------------------------------------------
# curves


def test_annealing_curves_endpoints_and_midpoints():
    assert sch.annealing_cos(1.0, 0.2, 0.0) == 1.0
    assert sch.annealing_cos(1.0, 0.2, 1.0) == 0.2
    assert sch.annealing_cos(1.0, 0.2, 0.5) == pytest.approx(0.6)
    # a restart weight w starts the cycle at w * start + (1 - w) * end
    assert sch.annealing_cos(1.0, 0.2, 0.0, weight=0.5) == pytest.approx(0.6)
    assert sch.annealing_linear(1.0, 0.2, 0.25) == pytest.approx(0.8)


def test_warmup_lr_formulas():
    regular, w, ratio = 0.02, 500, 0.001
    assert sch.warmup_lr("constant", regular, 123, w, ratio) == pytest.approx(2e-5)
    assert sch.warmup_lr("linear", regular, 0, w, ratio) == pytest.approx(2e-5)
    assert sch.warmup_lr("linear", regular, 250, w, ratio) == pytest.approx(0.02 * 0.5005)
    assert sch.warmup_lr("exp", regular, 0, w, ratio) == pytest.approx(2e-5)
    assert sch.warmup_lr("exp", regular, 250, w, ratio) == pytest.approx(0.02 * 0.001**0.5)
    with pytest.raises(ValueError, match="warmup must be one of"):
        sch.warmup_lr("cosine", regular, 0, w, ratio)


@pytest.mark.parametrize("kind", ["constant", "linear", "exp"])
@pytest.mark.parametrize("t", [0, 2, 4])
def test_momentum_warmup_divides_by_the_lr_factor(kind, t):
    factor = sch.warmup_lr(kind, 1.0, t, 5, 0.5)
    assert sch.warmup_momentum(kind, 0.95, t, 5, 0.5) == pytest.approx(0.95 / factor, rel=1e-15)


def test_step_decay():
    assert [step_exponent(p, 5) for p in (0, 4, 5, 14, 15)] == [0, 0, 1, 2, 3]
    # a milestone counts once progress reaches it
    assert [step_exponent(p, (8, 11)) for p in (0, 7, 8, 10, 11, 20)] == [0, 0, 1, 1, 2, 2]
    assert step_decay(0.02, 9, (8, 11), 0.1, None) == pytest.approx(0.002)
    assert step_decay(0.02, 30, 5, 0.5, 1e-3) == 1e-3


# ---------------------------------------------------------------------------------------------
# policies as functions of progress


def test_simple_policies_by_hand():
    base = 0.1
    assert sch.regular_lr(sch.FixedLrConfig(), base, 7, None) == base
    assert sch.regular_lr(sch.ExpLrConfig(gamma=0.9), base, 3, None) == pytest.approx(0.1 * 0.729)
    poly = sch.PolyLrConfig(power=0.9, min_lr=1e-4)
    assert sch.regular_lr(poly, base, 25, 100) == pytest.approx((0.1 - 1e-4) * 0.75**0.9 + 1e-4)
    inv = sch.InvLrConfig(gamma=1e-4, power=0.75)
    assert sch.regular_lr(inv, base, 1000, None) == pytest.approx(0.1 * 1.1**-0.75)
    cosine = sch.CosineAnnealingLrConfig(min_lr_ratio=0.01)
    assert sch.regular_lr(cosine, base, 3, 12) == pytest.approx(
        0.001 + 0.5 * (0.1 - 0.001) * (1 + cos(pi * 0.25))
    )
    # neither min_lr nor min_lr_ratio: anneal to 0
    assert sch.regular_lr(sch.CosineAnnealingLrConfig(), base, 6, 12) == pytest.approx(0.05)
    linear = sch.LinearAnnealingLrConfig(min_lr=0.02)
    assert sch.regular_lr(linear, base, 3, 12) == pytest.approx(0.08)


def test_flat_cosine_starts_at_rounded_fraction():
    cfg = sch.FlatCosineAnnealingLrConfig(start_percent=0.25, min_lr=0.0)
    # start = round(10 * 0.25) = round(2.5) = 2 (Python's round, as mmcv)
    assert [sch.regular_lr(cfg, 1.0, p, 10) for p in (0, 1)] == [1.0, 1.0]
    assert sch.regular_lr(cfg, 1.0, 2, 10) == 1.0
    assert sch.regular_lr(cfg, 1.0, 6, 10) == pytest.approx(0.5)  # halfway through 8


def test_cosine_restart_weights_and_positions():
    cfg = sch.CosineRestartLrConfig(periods=(4, 6), restart_weights=(1.0, 0.5), min_lr=0.0)
    assert sch.regular_lr(cfg, 1.0, 0, None) == 1.0
    assert sch.regular_lr(cfg, 1.0, 2, None) == pytest.approx(0.5)
    assert sch.regular_lr(cfg, 1.0, 4, None) == pytest.approx(0.5)  # restart at weight 0.5
    assert sch.regular_lr(cfg, 1.0, 7, None) == pytest.approx(0.25)
    assert [restart_position(p, (100, 200, 300, 400)) for p in (50, 210, 300)] == [0, 2, 3]
    with pytest.raises(ValueError, match="past the last period"):
        sch.regular_lr(cfg, 1.0, 10, None)
    whole_run = sch.CosineRestartLrConfig(min_lr=0.0)  # periods=None: one period, the run
    assert sch.regular_lr(whole_run, 1.0, 5, 10) == pytest.approx(0.5)


def test_cyclic_value_by_hand():
    # 10 iters, 1 cycle, 4 up: 1 -> 10 (cos) then 10 -> 1e-4
    cfg = sch.CyclicLrConfig(target_ratio=(10.0, 1e-4))
    assert sch.regular_lr(cfg, 1.0, 2, 10) == pytest.approx(5.5)
    assert sch.regular_lr(cfg, 1.0, 4, 10) == pytest.approx(10.0)
    assert sch.regular_lr(cfg, 1.0, 7, 10) == pytest.approx((10 + 1e-4) / 2)
    # a single ratio r means (r, r / 1e5)
    single = sch.CyclicLrConfig(target_ratio=(10.0,), step_ratio_up=0.0, anneal_strategy="linear")
    assert sch.regular_lr(single, 1.0, 5, 10) == pytest.approx(10 + (1e-4 - 10) * 0.5)
    with pytest.raises(ValueError, match="smaller than cyclic_times"):
        sch.cyclic_value(1.0, 0, 2, 3, 0.4, (10.0, 1.0), 1.0, "cos")


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
    lr_cfg = sch.OneCycleLrConfig(
        max_lr=0.1, pct_start=0.3, anneal_strategy=strategy, three_phase=three_phase
    )
    mom_cfg = sch.OneCycleMomentumConfig(
        pct_start=0.3, anneal_strategy=strategy, three_phase=three_phase
    )
    for it in range(steps):
        group = optim.param_groups[0]
        assert sch.regular_lr(lr_cfg, 0.5, it, steps) == pytest.approx(group["lr"], rel=1e-12)
        assert sch.regular_momentum(mom_cfg, 0.9, it, steps) == pytest.approx(
            group["momentum"], rel=1e-12
        )
        optim.step()
        scheduler.step()


def test_one_cycle_per_group_values_and_default_max_lr():
    cfg = sch.OneCycleLrConfig(max_lr=(0.1, 0.05))
    assert sch.regular_lr(cfg, 9.9, 0, 10, group=1) == pytest.approx(0.05 / 25)
    default = sch.OneCycleLrConfig()  # max_lr None: the configured lr is the peak
    assert sch.regular_lr(default, 0.2, 0, 10) == pytest.approx(0.2 / 25)
    mom = sch.OneCycleMomentumConfig(base_momentum=(0.8, 0.85), max_momentum=(0.9, 0.95))
    assert sch.regular_momentum(mom, 0.0, 0, 10, group=1) == pytest.approx(0.95)
    with pytest.raises(ValueError, match="do not increase from 0"):
        sch.one_cycle_ends(3, 0.3, False)


def test_unknown_config_type_has_no_policy():
    @dataclasses.dataclass(frozen=True)
    class Mystery:
        by_epoch: bool = True

    with pytest.raises(TypeError, match="no lr policy for Mystery"):
        sch.regular_lr(Mystery(), 0.1, 0, 1)
    with pytest.raises(TypeError, match="no momentum policy for Mystery"):
        sch.regular_momentum(Mystery(), 0.9, 0, 1)


# ---------------------------------------------------------------------------------------------
# configs


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: sch.FixedLrConfig(warmup="cosine", warmup_iters=5), "FixedLrConfig.warmup must"),
        (lambda: sch.FixedLrConfig(warmup="linear"), "FixedLrConfig.warmup_iters must be > 0"),
        (lambda: sch.FixedLrConfig(warmup="exp", warmup_iters=5, warmup_ratio=0.0), "(0, 1]"),
        (lambda: sch.FixedLrConfig(warmup="exp", warmup_iters=5, warmup_ratio=1.5), "(0, 1]"),
        (lambda: sch.FixedLrConfig(warmup_iters=-1), "warmup_iters must be an int >= 0"),
        (lambda: sch.StepLrConfig(step=-10), "StepLrConfig.step must be > 0"),
        (lambda: sch.StepLrConfig(step=(10, 16, -20)), "must hold positive ints"),
        (lambda: sch.StepLrConfig(step=(11, 8)), "must be sorted"),
        (lambda: sch.StepLrConfig(step=()), "non-empty"),
        (lambda: sch.CosineAnnealingLrConfig(min_lr=0.1, min_lr_ratio=0.0), "not both"),
        (lambda: sch.LinearAnnealingLrConfig(min_lr=0.1, min_lr_ratio=0.0), "not both"),
        (lambda: sch.FlatCosineAnnealingLrConfig(start_percent=-0.1), "start_percent"),
        (
            lambda: sch.CosineRestartLrConfig(periods=(2, 10), restart_weights=(0.5,)),
            "one weight per period",
        ),
        (
            lambda: sch.CosineRestartLrConfig(
                periods=(2, 10), restart_weights=(0.5, 0.5), min_lr=0.1, min_lr_ratio=0.0
            ),
            "not both",
        ),
        (lambda: sch.CyclicLrConfig(by_epoch=True), "CyclicLrConfig.by_epoch must be False"),
        (lambda: sch.CyclicLrConfig(target_ratio=(10.0, 0.1, 0.2)), "1 or 2 numbers"),
        (lambda: sch.CyclicLrConfig(step_ratio_up=1.4), "[0, 1)"),
        (lambda: sch.CyclicLrConfig(anneal_strategy="sin"), "'cos' or 'linear'"),
        (lambda: sch.CyclicLrConfig(gamma=0.0), "(0, 1]"),
        (lambda: sch.OneCycleLrConfig(by_epoch=True), "by_epoch must be False"),
        (lambda: sch.OneCycleLrConfig(pct_start=-0.1), "pct_start"),
        (lambda: sch.OneCycleLrConfig(anneal_strategy="sin"), "'cos' or 'linear'"),
        (lambda: sch.OneCycleLrConfig(total_steps=0), "total_steps"),
        (lambda: sch.StepMomentumConfig(step=0), "StepMomentumConfig.step"),
        (
            lambda: sch.CosineAnnealingMomentumConfig(min_momentum=0.9, min_momentum_ratio=1.0),
            "not both",
        ),
        (lambda: sch.CyclicMomentumConfig(by_epoch=True), "by_epoch must be False"),
        (lambda: sch.OneCycleMomentumConfig(pct_start=2.0), "pct_start"),
        (lambda: sch.LrScheduleConfig(), "base of the lr policies"),
        (lambda: sch.MomentumScheduleConfig(), "base of the momentum policies"),
    ],
)
def test_invalid_configs_raise_value_error(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert message in str(info.value)


def test_lists_become_tuples():
    assert sch.StepLrConfig(step=[8, 11]).step == (8, 11)
    assert sch.CosineRestartLrConfig(periods=[5, 5], restart_weights=[1, 1]).periods == (5, 5)
    assert hash(sch.OneCycleLrConfig(max_lr=[0.1, 0.2]))


@dataclasses.dataclass(frozen=True)
class _Holder:
    lr: sch.LrScheduleConfig = dataclasses.field(default_factory=sch.StepLrConfig)
    momentum: sch.MomentumConfig | None = None


@pytest.mark.parametrize("cls", sch.LR_CONFIGS)
def test_every_lr_config_builds_a_hook_and_round_trips(cls):
    assert is_registered(cls)
    hook = build(cls())
    assert isinstance(hook, Hook) and hook.name == "lr" and hook.priority == 10
    holder = _Holder(lr=cls())
    assert from_json(to_json(holder), _Holder) == holder


@pytest.mark.parametrize("cls", sch.MOMENTUM_CONFIGS)
def test_every_momentum_config_builds_a_hook_and_round_trips(cls):
    assert is_registered(cls)
    hook = build(cls())
    assert isinstance(hook, Hook) and hook.name == "momentum" and hook.priority == 30
    holder = _Holder(momentum=cls())
    assert from_json(to_json(holder), _Holder) == holder


def test_mmcv_policy_names():
    cfg = sch.lr_config_from_policy(
        policy="step", step=[8, 11], warmup="linear", warmup_iters=500, warmup_ratio=0.001
    )
    assert cfg == sch.StepLrConfig(
        step=(8, 11), warmup="linear", warmup_iters=500, warmup_ratio=0.001
    )
    assert isinstance(sch.lr_config_from_policy("Step"), sch.StepLrConfig)
    assert isinstance(sch.lr_config_from_policy("CosineAnnealing"), sch.CosineAnnealingLrConfig)
    assert isinstance(sch.lr_config_from_policy("cyclic"), sch.CyclicLrConfig)
    assert isinstance(sch.momentum_config_from_policy("cyclic"), sch.CyclicMomentumConfig)
    mom = sch.momentum_config_from_policy("OneCycle", base_momentum=[0.8, 0.85])
    assert mom.base_momentum == (0.8, 0.85)
    assert sch.lr_config_from_policy("cyclic", target_ratio=10.0).target_ratio == (10.0,)
    with pytest.raises(ValueError, match="did you mean 'cosineannealing'"):
        sch.lr_config_from_policy("CosineAnealing")
    with pytest.raises(ValueError, match="StepLrConfig has no field"):
        sch.lr_config_from_policy("step", steps=[8, 11])


@pytest.mark.parametrize(
    "cfg",
    [
        sch.StepLrConfig(step=3, min_lr=1e-5),
        sch.OneCycleLrConfig(max_lr=0.1, total_steps=100),
        sch.OneCycleLrConfig(max_lr=(0.1, 0.2), three_phase=True),
        sch.CosineRestartLrConfig(periods=(5, 5), restart_weights=(1.0, 0.5), min_lr_ratio=0.1),
        sch.CyclicLrConfig(target_ratio=(10.0,), anneal_strategy="linear"),
    ],
)
def test_union_field_round_trips_non_default_values(cfg):
    holder = _Holder(lr=cfg)
    text = to_json(holder)
    assert from_json(text, _Holder) == holder
    assert f'"type": "{type(cfg).__name__[: -len("Config")]}"' in text
