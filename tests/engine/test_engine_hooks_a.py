"""Optimizer hook (accumulation, clipping, fp16 scaler), EMA, NaN guard, sampler seeding."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from engine_a_toys import ToyLoader, ToyNet, make_loss_fn, split, toy_data

from detfn.engine.driver import drive
from detfn.engine.events import Event, Hook, Outputs, Stage
from detfn.engine.hooks.ema import EMAConfig, ema_hook, ema_momentum
from detfn.engine.hooks.optimizer import (
    GradClipConfig,
    LossScaleConfig,
    NanGuardConfig,
    NonFiniteLossError,
    OptimizerHookConfig,
    clip_grad_norm_,
    loss_divisor,
    nan_guard,
    optimizer_hook,
)
from detfn.engine.hooks.sampler_seed import SamplerSeedConfig, sampler_seed_hook
from detfn.engine.loop import RunContext, train_loop
from detfn.engine.optim import SGDConfig
from detfn.engine.runner import RunnerConfig, train
from detfn.engine.state import TrainState
from detfn.registry import build

QUIET = dict(lr=None, checkpoint=None, timer=None, text_logger=None, sampler_seed=None)


def train_toy(batch_size: int, cumulative_iters: int, n: int = 6, grad_clip=None, bn=False):
    torch.manual_seed(0)
    model = ToyNet(bn=bn)
    params, buffers = split(model)
    cfg = RunnerConfig(
        max_epochs=2,
        optimizer=SGDConfig(lr=0.1, momentum=0.9, weight_decay=1e-3),
        optimizer_hook=OptimizerHookConfig(cumulative_iters=cumulative_iters, grad_clip=grad_clip),
        **QUIET,
    )
    loader = ToyLoader(toy_data(n), batch_size, shuffle=False)
    return train(
        cfg, params=params, buffers=buffers, loss_fn=make_loss_fn(model), train_loader=loader
    )


def test_k_batches_of_one_equal_one_batch_of_k():
    # 6 samples in order, 2 epochs: windows of 3 batches of 1 == batches of 3.
    accumulated = train_toy(batch_size=1, cumulative_iters=3, n=6)
    single = train_toy(batch_size=3, cumulative_iters=1, n=6)
    for name in single.params:
        torch.testing.assert_close(accumulated.params[name], single.params[name])
    assert accumulated.hooks["optimizer"]["accum"] is None


def test_remainder_of_the_run_is_divided_by_its_size():
    assert [loss_divisor(i, 10, 4) for i in range(10)] == [4] * 8 + [2] * 2
    # 5 samples per epoch x 2 epochs = 10 iterations of batch 1 with k = 4: windows of
    # 4, 4, 2 samples; the equivalent batches are samples [0:4], [4,0,1,2], [3,4].
    accumulated = train_toy(batch_size=1, cumulative_iters=4, n=5)
    torch.manual_seed(0)
    model = ToyNet(bn=False)
    params, buffers = split(model)
    x, y = toy_data(5)
    order = [[0, 1, 2, 3], [4, 0, 1, 2], [3, 4]]
    batches = [(x[i], y[i]) for i in order]
    cfg = RunnerConfig(max_iters=3, optimizer=SGDConfig(lr=0.1, momentum=0.9, weight_decay=1e-3),
                       **QUIET)  # fmt: skip
    single = train(
        cfg, params=params, buffers=buffers, loss_fn=make_loss_fn(model), train_loader=batches
    )
    for name in single.params:
        torch.testing.assert_close(accumulated.params[name], single.params[name])


def test_clip_grad_norm_matches_torch():
    for norm_type in (2.0, 1.0, math.inf):
        g = torch.Generator().manual_seed(1)
        grads = [torch.randn(3, 4, generator=g) * 5, torch.randn(7, generator=g)]
        params = [torch.nn.Parameter(torch.zeros_like(t)) for t in grads]
        for p, t in zip(params, grads):
            p.grad = t.clone()
        ref = torch.nn.utils.clip_grad_norm_(params, max_norm=1.5, norm_type=norm_type)
        total = clip_grad_norm_(grads, 1.5, norm_type)
        torch.testing.assert_close(total, ref)
        for p, t in zip(params, grads):
            torch.testing.assert_close(t, p.grad)


def after_iter(state, outputs, iteration=0):
    return Event(Stage.AFTER_TRAIN_ITER, replace(state, iter=iteration), outputs)


def sgd_state(value=1.0, max_iters=100):
    params = {"w": torch.full((2,), value)}
    opt = build(SGDConfig(lr=1.0, momentum=0.0, weight_decay=0.0), params=params)
    state = TrainState(
        params=params, buffers={}, opt_state=opt.init(params), max_iters=max_iters,
        base={"lr": (1.0,), "momentum": (0.0,)}, hyper={"lr": (1.0,), "momentum": (0.0,)},
    )  # fmt: skip
    return opt, state


def test_grad_clip_logs_grad_norm_and_uses_state_lr():
    opt, state = sgd_state()
    hook = optimizer_hook(OptimizerHookConfig(grad_clip=GradClipConfig(max_norm=1.0)), opt)
    outputs = Outputs(grads={"w": torch.tensor([3.0, 4.0])})
    state = hook.fn(after_iter(replace(state, hyper={"lr": (0.5,), "momentum": (0.0,)}), outputs))
    assert outputs.grad_norm.item() == pytest.approx(5.0)
    # clipped grad = (0.6, 0.8); lr 0.5 from state.lr
    torch.testing.assert_close(state.params["w"], torch.tensor([1 - 0.3, 1 - 0.4]))


def test_fp16_scaler_unscales_skips_non_finite_windows_and_grows():
    opt, state = sgd_state()
    scale_cfg = LossScaleConfig(init_scale=4.0, dynamic=True, growth_interval=2)
    hook = optimizer_hook(OptimizerHookConfig(precision="fp16", loss_scale=scale_cfg), opt)
    state = hook.fn(Event(Stage.BEFORE_RUN, state))
    assert state.hooks["optimizer"]["scaler"] == {"scale": 4.0, "growth_tracker": 0}

    outputs = Outputs(grads={"w": torch.tensor([4.0, 8.0])})  # grads of the loss scaled by 4
    state = hook.fn(after_iter(state, outputs, 0))
    torch.testing.assert_close(state.params["w"], torch.tensor([0.0, -1.0]))
    assert outputs.loss_scale == 4.0

    state = hook.fn(after_iter(state, Outputs(grads={"w": torch.tensor([math.inf, 1.0])}), 1))
    torch.testing.assert_close(state.params["w"], torch.tensor([0.0, -1.0]))  # skipped
    assert state.hooks["optimizer"]["scaler"] == {"scale": 2.0, "growth_tracker": 0}

    for i in (2, 3):
        state = hook.fn(after_iter(state, Outputs(grads={"w": torch.tensor([2.0, 2.0])}), i))
    assert state.hooks["optimizer"]["scaler"] == {"scale": 4.0, "growth_tracker": 0}
    torch.testing.assert_close(state.params["w"], torch.tensor([-2.0, -3.0]))


def test_ema_numbers_by_hand_and_swap_at_epoch_end():
    cfg = EMAConfig(momentum=0.5, interval=1, warm_up=4)
    assert [ema_momentum(cfg, t) for t in range(4)] == [0.25, 0.4, 0.5, 0.5]
    hook = ema_hook(cfg)
    state = TrainState(params={"w": torch.tensor([0.0])}, buffers={}, opt_state=None)
    state = hook.fn(Event(Stage.BEFORE_RUN, state))
    for t in range(3):
        state.params["w"].fill_(t + 1.0)  # what the optimizer's in-place update would do
        assert hook.fn(Event(Stage.AFTER_TRAIN_ITER, replace(state, iter=t))) is None
    # 0 -> 0.75*0 + 0.25*1 = 0.25 -> 0.6*0.25 + 0.4*2 = 0.95 -> 0.5*0.95 + 0.5*3 = 1.975
    assert state.hooks["ema"]["params"]["w"].item() == pytest.approx(1.975)
    swapped = hook.fn(Event(Stage.AFTER_TRAIN_EPOCH, state))
    assert swapped.params["w"].item() == pytest.approx(1.975)
    assert swapped.hooks["ema"]["raw"]["w"].item() == 3.0
    assert swapped.hooks["ema"]["params"]["w"].item() == pytest.approx(1.975)
    back = hook.fn(Event(Stage.BEFORE_TRAIN_EPOCH, swapped))
    assert back.params["w"].item() == 3.0 and back.hooks["ema"]["raw"] is None


def test_ema_interval_raises_momentum_to_the_power_interval():
    hook = ema_hook(EMAConfig(momentum=0.5, interval=2, warm_up=4))
    state = TrainState(params={"w": torch.tensor([0.0])}, buffers={}, opt_state=None)
    state = hook.fn(Event(Stage.BEFORE_RUN, state))
    for t in range(3):
        state.params["w"].fill_(t + 1.0)
        hook.fn(Event(Stage.AFTER_TRAIN_ITER, replace(state, iter=t)))
    # t=0: m = min(0.25, 1/4) -> 0.25; t=1 skipped; t=2: m = min(0.25, 3/6) -> 0.9375
    assert state.hooks["ema"]["params"]["w"].item() == pytest.approx(0.9375)


def test_nan_guard_names_the_iteration_and_the_term():
    guard = nan_guard(NanGuardConfig())
    state = replace(TrainState(params={}, buffers={}, opt_state=None), iter=7, epoch=1)
    good = Outputs(loss=torch.tensor(1.0), losses={"loss_cls": torch.tensor(1.0)})
    assert guard.fn(Event(Stage.AFTER_TRAIN_ITER, state, good)) is None
    bad = Outputs(
        loss=torch.tensor(math.nan),
        losses={"loss_cls": torch.tensor(0.5), "loss_bbox": torch.tensor(math.inf)},
    )
    with pytest.raises(NonFiniteLossError, match="'loss_bbox' at iteration 7 \\(epoch 1") as info:
        guard.fn(Event(Stage.AFTER_TRAIN_ITER, state, bad))
    assert info.value.iteration == 7 and info.value.terms["loss_cls"] == 0.5


def test_nan_guard_in_a_run_stops_before_the_update():
    torch.manual_seed(0)
    model = ToyNet()
    params, buffers = split(model)
    loss_fn = make_loss_fn(model)

    def nan_at_2(p, b, batch):
        loss, aux = loss_fn(p, b, batch)
        if batch[0].shape[0] and nan_at_2.calls == 2:
            loss = loss * math.nan
        nan_at_2.calls += 1
        return loss, aux

    nan_at_2.calls = 0
    seen = []
    closer = Hook("closer", lambda e: seen.append(e) if e.stage is Stage.AFTER_RUN else None, 90)
    cfg = RunnerConfig(max_epochs=1, **QUIET)
    with pytest.raises(NonFiniteLossError, match="'loss' at iteration 2"):
        train(cfg, params=params, buffers=buffers, loss_fn=nan_at_2,
              train_loader=ToyLoader(toy_data(8), 2), hooks=[closer])  # fmt: skip
    assert isinstance(seen[0].error, NonFiniteLossError)
    assert all(torch.isfinite(p).all() for p in seen[0].state.params.values())


def test_sampler_seed_sets_every_epoch_and_rejects_loaders_without_set_epoch():
    loader = ToyLoader(toy_data(4), 2)
    run = RunContext(train_loader=loader, train_step=lambda s, b: {})
    state = TrainState(params={}, buffers={}, opt_state=None, max_epochs=3)
    drive(train_loop(state, run), [sampler_seed_hook(SamplerSeedConfig())])
    assert loader.epochs_seen == [0, 1, 2]
    run = RunContext(train_loader=[0, 1], train_step=lambda s, b: {})
    with pytest.raises(TypeError, match="list has no set_epoch"):
        drive(train_loop(state, run), [sampler_seed_hook(SamplerSeedConfig())])
