"""Parameters and FLOPs per module of a configured detector at an input size.

    python -m experiments.get_flops --preset bccd --shape 800 1333
    python -m experiments.get_flops --config work_dirs/run/config.json --depth 3 --out flops.png

FLOPs are torch.utils.flop_counter's (2 per multiply-add; mmcv's tables print multiply-adds).
"""

from __future__ import annotations

from dataclasses import dataclass

import tyro

from detfn.analysis.flops import detector_costs, format_costs, plot_costs
from detfn.registry import build
from experiments.tool_configs import resolve_config


@dataclass(frozen=True)
class FlopsArgs:
    config: str | None = None
    """a config.json (default: --preset)"""
    preset: str | None = None
    """a training preset (default bccd)"""
    shape: tuple[int, int] = (800, 1333)
    """input (height, width), as mmdetection's --shape"""
    depth: int = 2
    """module levels in the table"""
    out: str | None = None
    """also draw the top-level modules as a PNG"""


def main(args: FlopsArgs):
    cfg = resolve_config(args.config, args.preset)
    model = build(cfg.model)
    try:
        costs = detector_costs(model, args.shape, args.depth)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    print(f"{cfg.name} at input {args.shape[0]}x{args.shape[1]}")
    print(format_costs(costs))
    if args.out is not None:
        print(f"wrote {plot_costs(costs, args.out, f'{cfg.name} @ {args.shape}')}")
    return costs


if __name__ == "__main__":
    main(tyro.cli(FlopsArgs, description=__doc__))
