"""The TensorBoard hook writes event files that tensorboard's own reader loads."""

from __future__ import annotations

import json

import pytest
import torch
from toy_dp import ShardLoader, TinyNet, loss_fn_of, runner_config

from detfn.engine.hooks.evaluation import EvaluationHookConfig
from detfn.engine.hooks.logger import TensorBoardHookConfig
from detfn.engine.runner import train
from detfn.registry import build

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="the TensorBoard hook needs the optional `tensorboard` package",
)


def test_scalars_land_under_work_dir_tf_logs(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    cfg = runner_config(epochs=2)
    cfg = type(cfg)(**{**cfg.__dict__, "evaluation": EvaluationHookConfig(interval=1)})
    train(
        cfg,
        params=params,
        buffers=buffers,
        loss_fn=loss_fn_of(model),
        train_loader=ShardLoader(0, 1),
        evaluate=lambda state: {"bbox_mAP": 0.25 * (state.epoch + 1)},
        work_dir=tmp_path,
        hooks=[build(TensorBoardHookConfig(interval=2))],
    )
    acc = event_accumulator.EventAccumulator(str(tmp_path / "tf_logs"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/loss_cls", "train/lr", "train/time", "val/bbox_mAP"} <= tags
    # 2 epochs of 4 iterations, a point every 2 -> steps 2, 4, 6, 8
    loss = acc.Scalars("train/loss_cls")
    assert [e.step for e in loss] == [2, 4, 6, 8]
    # each point is the mean over its interval, as the text log's records
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    per_iter = [r["loss_cls"] for r in records if r["mode"] == "train"]
    expected = [(per_iter[i] + per_iter[i + 1]) / 2 for i in range(0, 8, 2)]
    assert [e.value for e in loss] == pytest.approx(expected, rel=1e-6)
    assert [(e.step, e.value) for e in acc.Scalars("val/bbox_mAP")] == [(4, 0.25), (8, 0.5)]
