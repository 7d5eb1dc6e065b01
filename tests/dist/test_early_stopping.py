"""Early stopping ends a real run through the stop request after ``patience`` bad evaluations."""

from __future__ import annotations

import pytest
import torch
from toy_dp import ShardLoader, TinyNet, loss_fn_of, runner_config

from detfn.engine.hooks.evaluation import EarlyStoppingConfig
from detfn.engine.hooks.evaluation import EvaluationHookConfig
from detfn.engine.runner import train
from detfn.registry import build


def _run(tmp_path, scores, stopper: EarlyStoppingConfig):
    torch.manual_seed(0)
    model = TinyNet()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    seen = []

    def evaluate(state):
        seen.append(state.epoch)
        return {"bbox_mAP": scores[len(seen) - 1], "loss": 1.0}

    cfg = runner_config(epochs=len(scores))
    cfg = type(cfg)(**{**cfg.__dict__, "evaluation": EvaluationHookConfig(interval=1)})
    state = train(
        cfg,
        params=params,
        buffers=buffers,
        loss_fn=loss_fn_of(model),
        train_loader=ShardLoader(0, 1),
        evaluate=evaluate,
        work_dir=tmp_path,
        hooks=[build(stopper)],
    )
    return state, seen


def test_run_stops_after_patience_evaluations_without_improvement(tmp_path):
    # best 0.3 at the 2nd evaluation; 0.2 and an equal 0.3 do not improve -> stop after the 4th
    scores = [0.1, 0.3, 0.2, 0.3, 0.9, 0.9]
    state, seen = _run(tmp_path, scores, EarlyStoppingConfig("bbox_mAP", patience=2))
    assert len(seen) == 4 and state.epoch == 4
    assert state.stop_reason == (
        "early stopping: bbox_mAP did not improve for 2 evaluations (best 0.3)"
    )
    assert state.hooks["early_stopping"] == {"best": 0.3, "bad_evaluations": 2}
    assert (tmp_path / "epoch_4.pth").is_file()  # the last epoch's checkpoint is still written


def test_improvements_below_min_delta_do_not_count(tmp_path):
    # 0.12 and 0.14 beat 0.10 by less than min_delta = 0.05
    stopper = EarlyStoppingConfig("bbox_mAP", rule="greater", min_delta=0.05, patience=2)
    state, seen = _run(tmp_path, [0.10, 0.12, 0.14, 0.5], stopper)
    assert len(seen) == 3 and state.hooks["early_stopping"]["best"] == 0.10


def test_bad_configs_and_unknown_monitor_are_one_line(tmp_path):
    with pytest.raises(ValueError, match="EarlyStoppingConfig.patience must be >= 1"):
        EarlyStoppingConfig(patience=0)
    with pytest.raises(ValueError, match="EarlyStoppingConfig.rule .*cannot infer"):
        EarlyStoppingConfig(monitor="widgets")
    with pytest.raises(KeyError, match="monitor='segm_mAP' is not in the evaluation metrics"):
        _run(tmp_path, [0.1], EarlyStoppingConfig("segm_mAP"))
