"""train(): config dump, the full default hook set on a toy run, config validation."""

from __future__ import annotations

import json

import pytest
import torch
from engine_a_toys import ToyLoader, ToyNet, make_loss_fn, split, toy_data

from detfn.config import from_json, load, to_json
from detfn.engine.hooks.ema import EMAConfig
from detfn.engine.hooks.evaluation import EvaluationHookConfig
from detfn.engine.hooks.logger import TextLoggerHookConfig
from detfn.engine.hooks.optimizer import GradClipConfig, OptimizerHookConfig
from detfn.engine.optim import AdamWConfig, ParamGroupsConfig
from detfn.engine.runner import RunnerConfig, train
from detfn.engine.schedules import CosineSchedule
from detfn.models.functional import norm_param_names


def test_runner_config_round_trips_through_json():
    cfg = RunnerConfig(
        max_iters=100,
        workflow=(("train", 2), ("val", 1)),
        optimizer=AdamWConfig(lr=1e-3, param_groups=ParamGroupsConfig(norm_decay_mult=0.0)),
        optimizer_hook=OptimizerHookConfig(grad_clip=GradClipConfig(10.0), precision="bf16"),
        lr=CosineSchedule(min_value=0.0, by_epoch=False),
        ema=EMAConfig(priority="ABOVE_NORMAL"),
        nan_guard=None,
    )
    assert from_json(to_json(cfg), RunnerConfig) == cfg
    assert RunnerConfig().max_epochs == 12 and RunnerConfig().max_iters is None


def test_bad_runner_configs_name_the_field():
    with pytest.raises(ValueError, match="RunnerConfig.max_epochs and max_iters: set only one"):
        RunnerConfig(max_epochs=2, max_iters=10)
    with pytest.raises(ValueError, match="RunnerConfig.workflow .*no \\('train', n\\) phase"):
        RunnerConfig(workflow=(("val", 1),))
    with pytest.raises(ValueError, match="RunnerConfig.load_from and resume_from are exclusive"):
        RunnerConfig(load_from="a.pth", resume_from="b.pth")
    with pytest.raises(ValueError, match="OptimizerHookConfig.precision must be"):
        OptimizerHookConfig(precision="fp8")


def test_full_default_hook_set_on_a_toy_run(tmp_path):
    torch.manual_seed(0)
    model = ToyNet()
    params, buffers = split(model)
    loss_fn = make_loss_fn(model)
    val_batches = [toy_data(4, seed=9)]
    evaluated = []

    def evaluate(state):
        with torch.no_grad():
            loss, _ = loss_fn(state.params, {k: v.clone() for k, v in state.buffers.items()},
                              val_batches[0])  # fmt: skip
        evaluated.append(state.epoch)
        return {"loss": float(loss)}

    cfg = RunnerConfig(
        max_epochs=2,
        workflow=(("train", 1), ("val", 1)),
        optimizer_hook=OptimizerHookConfig(grad_clip=GradClipConfig(max_norm=1.0)),
        evaluation=EvaluationHookConfig(interval=1, save_best="loss"),
        text_logger=TextLoggerHookConfig(interval=1),
    )
    final = train(
        cfg,
        params=params,
        buffers=buffers,
        loss_fn=loss_fn,
        train_loader=ToyLoader(toy_data(8), 2),
        evaluate=evaluate,
        work_dir=tmp_path,
        norm_names=norm_param_names(model),
    )
    assert (final.epoch, final.iter) == (2, 8)
    assert load(tmp_path / "config.json", RunnerConfig) == cfg
    assert (tmp_path / "epoch_2.pth").is_file()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if "grad_norm" in r]
    assert len(train_records) == 8
    # linear warmup over 500 iterations from 0.001 * 0.02 (mmdet 1x); the last iteration is t = 7
    assert final.lr[0] == pytest.approx(0.02 * (1 - (1 - 7 / 500) * (1 - 0.001)))
    assert len(evaluated) >= 2  # the evaluation hook and the ("val", 1) phase both ran


def test_fp16_run_scales_the_loss_and_unscales_the_grads():
    """fp16 autocast + static loss scale 512 trains like fp32 (to fp16 accuracy)."""

    def one_run(precision):
        torch.manual_seed(0)
        model = ToyNet()
        params, buffers = split(model)
        cfg = RunnerConfig(
            max_iters=3,
            optimizer_hook=OptimizerHookConfig(precision=precision),
            lr=None,
            checkpoint=None,
            timer=None,
            text_logger=None,
        )
        loader = ToyLoader(toy_data(8), 2, shuffle=False)
        return train(cfg, params=params, buffers=buffers, loss_fn=make_loss_fn(model),
                     train_loader=loader)  # fmt: skip

    fp32, fp16 = one_run("fp32"), one_run("fp16")
    assert fp16.hooks["optimizer"]["scaler"] == {"scale": 512.0, "growth_tracker": 0}
    for name in fp32.params:
        torch.testing.assert_close(fp16.params[name], fp32.params[name], atol=2e-3, rtol=1e-2)
