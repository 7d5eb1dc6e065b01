"""IoU loss (mmdetection's IoULoss): log, linear and square modes by hand, eps clamp, weights."""

from __future__ import annotations

import math

import pytest
import torch

from detfn.models.losses import IoULossConfig, aligned_iou
from detfn.registry import build

PRED = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
TARGET = torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]])  # IoU 1/3, 0


def test_modes_by_hand():
    torch.testing.assert_close(aligned_iou(PRED, TARGET), torch.tensor([1 / 3, 0.0]))
    cases = {
        "log": [math.log(3), -math.log(1e-6)],
        "linear": [2 / 3, 1 - 1e-6],
        "square": [1 - 1 / 9, 1 - 1e-12],
    }
    for mode, expected in cases.items():
        loss = build(IoULossConfig(mode=mode))
        got = loss(PRED, TARGET, reduction_override="none")
        torch.testing.assert_close(got, torch.tensor(expected), rtol=1e-5, atol=1e-6)


def test_weight_avg_factor_and_loss_weight():
    loss = build(IoULossConfig(loss_weight=2.0))
    weight = torch.tensor([0.5, 0.0])
    got = loss(PRED, TARGET, weight, avg_factor=0.25)
    torch.testing.assert_close(got, torch.tensor(2.0 * 0.5 * math.log(3) / 0.25), rtol=1e-5, atol=0)
    empty = loss(torch.zeros(0, 4, requires_grad=True), torch.zeros(0, 4), avg_factor=1.0)
    assert float(empty.detach()) == 0.0


def test_bad_mode_fails_with_one_line():
    with pytest.raises(ValueError, match="IoULossConfig.mode"):
        IoULossConfig(mode="cube")  # type: ignore[arg-type]
