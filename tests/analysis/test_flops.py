"""FLOP counts against hand counts; a whole detector's table and picture."""

from __future__ import annotations

import torch
from torch import nn

from detfn.analysis.flops import count_flops, detector_costs, format_costs, module_costs
from detfn.registry import build
from experiments import get_flops
from tests.analysis.conftest import assert_png, tiny_run_config


class Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def test_single_conv_equals_hand_count():
    conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
    x = torch.randn(2, 3, 16, 16)
    flops = count_flops(lambda: conv(x), "Conv2d")
    # per output element: 3 * 3 * 3 multiply-adds = 2 * 27 FLOPs; 2 * 8 * 16 * 16 outputs
    assert flops[""] == 2 * 27 * (2 * 8 * 16 * 16)


def test_per_module_attribution_and_params():
    model = Two()
    x = torch.randn(1, 3, 10, 10)
    flops = count_flops(lambda: model(x), "Two")
    conv, fc = 2 * 27 * 8 * 100, 2 * 8 * 5
    assert flops == {"": conv + fc, "conv": conv, "fc": fc}
    costs = {c.name: c for c in module_costs(model, flops)}
    assert costs["conv"].params == 8 * 27 + 8 and costs["fc"].params == 8 * 5 + 5
    assert costs[""].params == costs["conv"].params + costs["fc"].params


def test_detector_table(tmp_path):
    model = build(tiny_run_config(tmp_path).model)
    costs = detector_costs(model, (96, 128), max_depth=1)
    by_name = {c.name: c for c in costs}
    assert by_name[""].params == sum(p.numel() for p in model.parameters())
    top = [c for c in costs if c.name]
    assert all(c.flops > 0 for c in top)
    assert sum(c.flops for c in top) <= by_name[""].flops  # the rest: ops outside submodules
    assert "backbone" in format_costs(costs)


def test_cli_writes_png(tiny_run, tmp_path):
    _, work_dir = tiny_run
    out = tmp_path / "flops.png"
    get_flops.main(
        get_flops.FlopsArgs(config=str(work_dir / "config.json"), shape=(96, 128), out=str(out))
    )
    assert_png(out)
