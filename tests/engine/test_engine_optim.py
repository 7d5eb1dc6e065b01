"""SGD / AdamW numerics against torch.optim on the same gradients, and parameter groups."""

from __future__ import annotations

import pytest
import torch
from engine_a_toys import ToyNet

from detfn.engine.optim import (
    AdamWConfig,
    CustomKeyConfig,
    ParamGroupsConfig,
    SGDConfig,
    initial_hyperparams,
    make_param_groups,
)
from detfn.models.functional import norm_param_names
from detfn.registry import build

STEPS = 5


def grads_for(model: torch.nn.Module, step: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return {n: torch.randn(p.shape, generator=g) for n, p in model.named_parameters()}


def torch_groups(model, groups, **extra):
    named = dict(model.named_parameters())
    return [
        {"params": [named[n] for n in g.names], "lr": g.lr, "weight_decay": g.weight_decay, **extra}
        for g in groups
    ]


def run_both(cfg, make_torch_opt, lr_scale=(1.0, 0.5, 1.0, 0.1, 0.1)):
    """Step detfn's optimizer and a torch.optim one with identical grads and lr changes."""
    torch.manual_seed(0)
    model = ToyNet()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build(cfg, params=params, norm_names=norm_param_names(model))
    state = opt.init(params)
    hyper = initial_hyperparams(opt.groups)
    ref = make_torch_opt(model, opt.groups)
    for step in range(STEPS):
        grads = grads_for(model, step)
        lrs = tuple(lr * lr_scale[step] for lr in hyper["lr"])
        for n, p in model.named_parameters():
            p.grad = grads[n].clone()  # before the update: it donates the grads, as torch does
        params, state = opt.update(grads, state, params, {**hyper, "lr": lrs})
        for group, lr in zip(ref.param_groups, lrs):
            group["lr"] = lr
        ref.step()
    return params, dict(model.named_parameters()), opt


NO_DECAY = ParamGroupsConfig(norm_decay_mult=0.0, bias_decay_mult=0.0, bias_lr_mult=2.0)


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("fused", [False, True])
def test_sgd_matches_torch_sgd_with_groups(nesterov, fused):
    cfg = SGDConfig(lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=nesterov, fused=fused,
                    param_groups=NO_DECAY)  # fmt: skip

    def make(model, groups):
        return torch.optim.SGD(
            torch_groups(model, groups), lr=0.1, momentum=0.9, nesterov=nesterov, foreach=False
        )

    ours, ref, opt = run_both(cfg, make)
    assert len(opt.groups) == 3  # weights, biases (2x lr, no decay), BN params (no decay)
    for name in ref:
        torch.testing.assert_close(ours[name], ref[name].detach(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("fused", [False, True])
def test_adamw_matches_torch_adamw_with_groups(fused):
    cfg = AdamWConfig(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05, fused=fused,
                      param_groups=NO_DECAY)  # fmt: skip

    def make(model, groups):
        return torch.optim.AdamW(
            torch_groups(model, groups), lr=0.01, betas=(0.8, 0.99), eps=1e-6, foreach=False
        )

    ours, ref, _ = run_both(cfg, make)
    for name in ref:
        torch.testing.assert_close(ours[name], ref[name].detach(), rtol=1e-6, atol=1e-7)


def test_momentum_argument_is_used_per_group():
    """state.momentum (what momentum schedules set) drives the update, group by group."""
    params = {"w": torch.ones(2), "bias": torch.ones(2)}
    opt = build(SGDConfig(lr=1.0, momentum=0.5, weight_decay=0.0), params=params)
    state = opt.init(params)
    grads = {"w": torch.ones(2), "bias": torch.ones(2)}
    params, state = opt.update(grads, state, params, {"lr": (1.0,), "momentum": (0.5,)})
    params, state = opt.update(grads, state, params, {"lr": (1.0,), "momentum": (0.0,)})
    # step 1: buf = 1, p = 0; step 2 with momentum 0: d = g = 1, p = -1
    assert params["w"].tolist() == [-1.0, -1.0]
    with pytest.raises(ValueError, match="1 parameter groups but got 2 lr values"):
        opt.update(grads, state, params, {"lr": (1.0, 1.0), "momentum": (0.0,)})
    with pytest.raises(ValueError, match="no hyperparameter 'betas'"):
        opt.update(grads, state, params, {"betas": (0.9,)})


def test_parameters_without_gradients_are_skipped():
    params = {"a": torch.ones(1), "b": torch.ones(1)}
    opt = build(SGDConfig(lr=0.1, momentum=0.9, weight_decay=0.1), params=params)
    state = opt.init(params)
    params, state = opt.update({"a": torch.ones(1)}, state, params, {"lr": (0.1,)})
    assert params["b"].item() == 1.0  # no grad: no decay, no momentum (torch skips it too)
    assert params["a"].item() == pytest.approx(1.0 - 0.1 * (1.0 + 0.1))


def test_param_group_rules_follow_mmcv_paramwise_cfg():
    model = ToyNet()
    cfg = ParamGroupsConfig(
        bias_lr_mult=2.0,
        bias_decay_mult=0.0,
        norm_decay_mult=0.0,
        custom_keys=(CustomKeyConfig("fc", lr_mult=0.1, decay_mult=1.0),
                     CustomKeyConfig("fc.weight", lr_mult=0.5, decay_mult=0.5)),
    )  # fmt: skip
    groups = make_param_groups(
        dict(model.named_parameters()), cfg, lr=0.02, weight_decay=1e-4, momentum=0.9,
        norm_names=norm_param_names(model),
    )  # fmt: skip
    by_name = {n: (g.lr, g.weight_decay) for g in groups for n in g.names}
    assert by_name["conv.weight"] == pytest.approx((0.02, 1e-4))
    assert by_name["conv.bias"] == pytest.approx((0.04, 0.0))
    assert by_name["bn.weight"] == pytest.approx((0.02, 0.0))
    assert by_name["bn.bias"] == pytest.approx((0.02, 0.0))  # norm rule, not the bias rule
    assert by_name["fc.weight"] == pytest.approx((0.01, 0.5e-4))  # longest key wins
    assert by_name["fc.bias"] == pytest.approx((0.002, 1e-4))
    assert groups[0].names == ("conv.weight",)
    assert initial_hyperparams(groups)["momentum"] == (0.9,) * len(groups)


def test_bad_optimizer_configs_name_the_field():
    with pytest.raises(ValueError, match="SGDConfig.lr must be > 0"):
        SGDConfig(lr=0.0)
    with pytest.raises(ValueError, match="SGDConfig.nesterov needs momentum > 0"):
        SGDConfig(momentum=0.0, nesterov=True)
    with pytest.raises(ValueError, match="AdamWConfig.betas must be two values in"):
        AdamWConfig(betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="duplicate patterns"):
        ParamGroupsConfig(custom_keys=(CustomKeyConfig("a"), CustomKeyConfig("a")))
    with pytest.raises(ValueError, match="no trainable parameters"):
        build(SGDConfig(), params={})
