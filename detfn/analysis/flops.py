"""Parameter and FLOP counts per module of any detector, through ``torch.utils.flop_counter``.

``FlopCounterMode`` counts the floating-point operations of the matrix products and convolutions
(``2 * multiply-adds``; element-wise ops, norms and NMS are not counted) and attributes each to
every module it ran inside. mmcv's ``get_model_complexity_info`` reports multiply-adds under the
name "FLOPs": divide detfn's number by 2 to compare with an mmdetection table.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from detfn.analysis.plotting import new_figure, save_figure
from detfn.models.functional import detector_predict_fn, split
from detfn.structures import ImageMeta

__all__ = [
    "ModuleCost",
    "count_flops",
    "detector_costs",
    "format_costs",
    "module_costs",
    "plot_costs",
]


@dataclass(frozen=True)
class ModuleCost:
    """One module: dotted name ("" for the whole model), parameters and FLOPs of one call."""

    name: str
    params: int
    flops: int


def count_flops(fn: Callable[[], object], root: str) -> dict[str, int]:
    """FLOPs of ``fn()`` per module name (dotted, relative to the module called ``root``).

    ``FlopCounterMode`` names modules by their class at the top (``FasterRCNN.backbone...``);
    the class prefix is stripped so names match ``named_modules()``.
    """
    with FlopCounterMode(display=False) as counter:
        fn()
    flops: dict[str, int] = {}
    for name, per_op in counter.get_flop_counts().items():
        if name == "Global":
            continue
        head, _, rest = name.partition(".")
        if head != root:
            continue
        flops[rest] = int(sum(per_op.values()))
    flops.setdefault("", int(counter.get_total_flops()))
    return flops


def module_costs(model: nn.Module, flops: dict[str, int], max_depth: int = 2) -> list[ModuleCost]:
    """Parameters and FLOPs of ``model`` and its modules down to ``max_depth`` dots, in order."""
    costs = []
    for name, module in model.named_modules():
        depth = 0 if name == "" else name.count(".") + 1
        if depth > max_depth:
            continue
        params = sum(p.numel() for p in module.parameters())
        costs.append(ModuleCost(name, params, flops.get(name, 0)))
    return costs


def detector_costs(
    model: nn.Module, input_shape: tuple[int, int], max_depth: int = 2, seed: int = 0
) -> list[ModuleCost]:
    """Costs of one inference of a detector on a ``(height, width)`` image (batch of one).

    The image is random normal pixels (a seeded generator): an all-zero image would make the
    proposal stage keep few boxes and under-count the second stage.
    """
    height, width = input_shape
    if height <= 0 or width <= 0:
        raise ValueError(f"input shape must be positive (height, width), got {input_shape}")
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    images = torch.randn(1, 3, height, width, generator=generator).to(device)
    meta = ImageMeta("<flops>", 0, (height, width), (height, width), (height, width))
    params, buffers = split(model)
    predict = detector_predict_fn(model)
    flops = count_flops(lambda: predict(params, buffers, images, [meta]), type(model).__name__)
    return module_costs(model, flops, max_depth)


def _human(value: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.2f}{unit}"
    return f"{value:.0f}"


def format_costs(costs: Sequence[ModuleCost]) -> str:
    """A table: module, parameters, FLOPs and their share of the whole model."""
    total = max(costs[0].flops, 1) if costs else 1
    rows = [("module", "params", "FLOPs", "% FLOPs")]
    for c in costs:
        indent = "  " * (0 if c.name == "" else c.name.count(".") + 1)
        label = indent + (c.name.rsplit(".", 1)[-1] if c.name else "(model)")
        rows.append((label, _human(c.params), _human(c.flops), f"{100 * c.flops / total:.1f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}"
        for r in rows
    )


def plot_costs(costs: Sequence[ModuleCost], out: str | os.PathLike[str], title: str = "") -> Path:
    """Horizontal bars of the FLOPs and parameters of the top-level modules."""
    top = [c for c in costs if c.name and "." not in c.name]
    if not top:
        raise ValueError("no top-level modules to plot")
    figure = new_figure(8.0, 0.5 * len(top) + 1.5)
    left, right = figure.subplots(1, 2, sharey=True)
    names = [c.name for c in top]
    left.barh(names, [c.flops / 1e9 for c in top], color="C0")
    left.set_xlabel("GFLOPs (2 x multiply-adds)")
    right.barh(names, [c.params / 1e6 for c in top], color="C1")
    right.set_xlabel("parameters (M)")
    left.invert_yaxis()
    if title:
        figure.suptitle(title)
    return save_figure(figure, out)
