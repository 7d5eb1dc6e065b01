"""The engine on a CUDA device: fused/foreach optimizers, CUDA RNG, autocast, a whole run.

Skipped without a GPU.
"""

from __future__ import annotations

import pytest
import torch
from engine_a_toys import ToyNet, make_loss_fn, split, toy_data

from detfn.engine.hooks.optimizer import OptimizerHookConfig
from detfn.engine.optim import AdamWConfig, SGDConfig, initial_hyperparams
from detfn.engine.runner import RunnerConfig, train
from detfn.engine.state import capture_rng, restore_rng
from detfn.registry import build

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEV = "cuda"


def _compare(cfg, make_ref):
    torch.manual_seed(0)
    model = ToyNet().to(DEV)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build(cfg, params=params)
    state = opt.init(params)
    hyper = initial_hyperparams(opt.groups)
    ref = make_ref(model.parameters())
    for step in range(4):
        g = torch.Generator(device=DEV).manual_seed(step)
        grads = {
            n: torch.randn(p.shape, generator=g, device=DEV) for n, p in model.named_parameters()
        }
        for n, p in model.named_parameters():
            p.grad = grads[n].clone()
        params, state = opt.update(grads, state, params, hyper)
        ref.step()
    for n, p in model.named_parameters():
        torch.testing.assert_close(params[n], p.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fused", [False, True])
def test_sgd_and_adamw_on_cuda_match_torch(fused):
    _compare(
        SGDConfig(lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=True, fused=fused),
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=True),
    )
    _compare(
        AdamWConfig(lr=1e-2, weight_decay=0.05, fused=fused),
        lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.05),
    )


def test_cuda_rng_is_captured_and_restored():
    torch.cuda.init()
    torch.rand(1, device=DEV)
    saved = capture_rng()
    assert "cuda" in saved
    a = torch.rand(3, device=DEV)
    restore_rng(saved)
    assert torch.equal(torch.rand(3, device=DEV), a)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_whole_run_on_cuda(precision):
    torch.manual_seed(0)
    model = ToyNet().to(DEV)
    params, buffers = split(model)
    x, y = toy_data(8)
    batches = [(x[i : i + 2].to(DEV), y[i : i + 2].to(DEV)) for i in range(0, 8, 2)]
    cfg = RunnerConfig(
        max_epochs=2,
        optimizer=SGDConfig(lr=0.01, fused=True),
        optimizer_hook=OptimizerHookConfig(precision=precision),
        lr=None,
        checkpoint=None,
        timer=None,
        text_logger=None,
        sampler_seed=None,
    )
    initial = {n: p.clone() for n, p in params.items()}  # train() updates params in place
    final = train(cfg, params=params, buffers=buffers, loss_fn=make_loss_fn(model),
                  train_loader=batches, device=DEV)  # fmt: skip
    assert final.iter == 8
    assert all(p.is_cuda and torch.isfinite(p).all() for p in final.params.values())
    assert any(not torch.equal(final.params[n], p) for n, p in initial.items())
