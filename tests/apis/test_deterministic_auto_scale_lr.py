"""--deterministic and auto_scale_lr (mmdetection's tools/train.py flags) reach the run."""

from __future__ import annotations

import pytest
import torch
from test_faster_rcnn_e2e import tiny_config

from detfn.apis import train as train_api
from detfn.apis.experiment import AutoScaleLrConfig
from detfn.config import override
from detfn.dist.seeding import set_deterministic
from experiments.faster_rcnn import parse


def test_flags_set_the_experiment_fields():
    cfg = parse(
        [
            "--deterministic",
            "--auto-scale-lr.enable",
            "--auto-scale-lr.base-batch-size",
            "8",
            "--batch-size",
            "4",
        ]
    )
    assert cfg.deterministic and cfg.auto_scale_lr == AutoScaleLrConfig(True, 8)
    assert not parse([]).deterministic and not parse([]).auto_scale_lr.enable
    with pytest.raises(ValueError, match="AutoScaleLrConfig.base_batch_size must be >= 1"):
        AutoScaleLrConfig(True, 0)


@pytest.mark.parametrize("enable", [True, False])
def test_train_detector_scales_the_lr_and_picks_deterministic_kernels(
    tmp_path, monkeypatch, enable
):
    seen = {}

    def fake_train(cfg, **kwargs):
        seen["lr"] = cfg.optimizer.lr
        seen["deterministic"] = torch.are_deterministic_algorithms_enabled()

    monkeypatch.setattr(train_api, "train", fake_train)
    cfg = override(
        tiny_config(tmp_path),
        {
            "deterministic": enable,
            "auto_scale_lr": AutoScaleLrConfig(enable, base_batch_size=16),
            "data.train_loader.batch_size": 4,
        },
    )
    try:
        train_api.train_detector(cfg)
    finally:
        set_deterministic(False)
    # one process of 4 images against mmdetection's 16: a quarter of the configured lr
    assert seen["lr"] == pytest.approx(0.01 * 4 / 16 if enable else 0.01)
    assert seen["deterministic"] is enable
