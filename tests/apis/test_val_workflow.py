"""The ("val", 1) workflow phase on a detector: validation losses with the model in eval mode and
no gradients, logged as a "mode": "val" record next to the evaluation hook's metrics."""

from __future__ import annotations

import json

import pytest
import torch

from detfn.apis import train_detector
from detfn.apis.train import build_experiment, detector_val_step
from detfn.config import override
from detfn.data import build_loader
from detfn.engine.hooks.evaluation import EvaluationHookConfig
from detfn.models.detectors.base import sum_losses
from detfn.models.functional import load_into, loss_generator
from tests.apis.test_faster_rcnn_e2e import tiny_config

TERMS = ("loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox")


def test_val_step_uses_eval_mode_and_leaves_the_running_statistics(tmp_path):
    cfg = tiny_config(tmp_path)  # trainable BatchNorm (norm_eval=False)
    built = build_experiment(cfg)
    batch = next(iter(build_loader(built.val_set, cfg.data.test_loader)))
    state = type("State", (), {"params": built.params, "buffers": built.buffers})()
    before = {k: v.clone() for k, v in built.buffers.items()}
    built.model.train(True)
    torch.manual_seed(3)
    with torch.no_grad():
        out = detector_val_step(built.model, built.device)(state, batch)
    assert not built.model.training and out["batch_size"] == len(batch.metas)
    for name, value in before.items():  # train-mode BatchNorm would have updated them
        assert torch.equal(built.buffers[name], value), name
    # the module itself in eval mode, the same sampling generator: the same losses
    reference = load_into(built.model, built.params, built.buffers).eval()
    generator = loss_generator(0, getattr(batch, "rng_key", None))
    with torch.no_grad():
        losses = reference.loss(batch.images, batch, generator=generator)
    total = sum_losses(losses)
    assert float(out["loss"]) == pytest.approx(float(total), rel=1e-6)
    for term in TERMS:
        assert float(out[term]) == pytest.approx(float(losses[term]), rel=1e-6)


def test_val_phase_logs_val_losses_next_to_the_evaluation_metrics(tmp_path):
    cfg = override(
        tiny_config(tmp_path),
        {
            "runner.max_epochs": 1,
            "runner.workflow": (("train", 1), ("val", 1)),
            "runner.evaluation": EvaluationHookConfig(interval=1),
        },
    )
    train_detector(cfg)
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r["mode"] == "val"]
    assert len(val) == 2  # the evaluation hook's, then the val phase's
    assert "bbox_mAP" in val[0] and not any(k.startswith("loss") for k in val[0])
    losses = val[1]
    assert set(TERMS) <= set(losses) and "bbox_mAP" not in losses
    # batch-size-weighted means of each term and of the total: the total is their sum
    assert losses["loss"] == pytest.approx(sum(losses[t] for t in TERMS), rel=1e-5)
    assert all(losses[t] > 0 for t in TERMS)
