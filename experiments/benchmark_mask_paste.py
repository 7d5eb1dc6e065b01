"""Equal-work benchmark of batched mask pasting against the references it reproduces.

    python -m experiments.benchmark_mask_paste --num 100 --height 800 --width 1216

Pairs, each producing the same masks: detfn's paste with torchvision's convention vs
``torchvision.models.detection.roi_heads.paste_masks_in_image`` (a Python loop over masks), and
detfn's paste with mmdetection's convention vs one full-image ``grid_sample`` (mmdetection's
``_do_paste_mask`` on GPU, no chunking). Both sides of a pair run alternately, ``repeats`` times;
the table gives each side's median time and the median of the per-pair time ratios.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import tyro
from torchvision.models.detection.roi_heads import paste_masks_in_image

from detfn.models.roi_heads import paste_masks

__all__ = ["PasteBenchmarkArgs", "main"]


@dataclass(frozen=True)
class PasteBenchmarkArgs:
    """Arguments of the paste benchmark."""

    num: int = 100
    """detections per image (mmdetection keeps at most 100)"""
    height: int = 800
    """image height"""
    width: int = 1216
    """image width"""
    repeats: int = 5
    """timed pairs per comparison"""
    seed: int = 0
    """seed of the random masks and boxes"""


def _grid_sample_paste(probs: torch.Tensor, boxes: torch.Tensor, height: int, width: int):
    x0, y0, x1, y1 = torch.split(boxes, 1, dim=1)
    img_y = (torch.arange(height, dtype=torch.float32) + 0.5 - y0) / (y1 - y0) * 2 - 1
    img_x = (torch.arange(width, dtype=torch.float32) + 0.5 - x0) / (x1 - x0) * 2 - 1
    grid = torch.stack(
        [
            img_x[:, None, :].expand(len(boxes), height, width),
            img_y[:, :, None].expand(len(boxes), height, width),
        ],
        dim=3,
    )
    return F.grid_sample(probs[:, None], grid, align_corners=False)[:, 0] >= 0.5


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(args: PasteBenchmarkArgs) -> list[tuple[str, float, float, float]]:
    """Print and return ``(pair, detfn median s, reference median s, median ratio)`` rows."""
    g = torch.Generator().manual_seed(args.seed)
    probs = torch.rand((args.num, 28, 28), generator=g)
    xy = torch.rand((args.num, 2), generator=g) * torch.tensor([args.width, args.height]) * 0.8
    boxes = torch.cat([xy, xy + torch.rand((args.num, 2), generator=g) * 300 + 8], 1)
    shape = (args.height, args.width)
    pairs = {
        "torchvision convention": (
            lambda: paste_masks(probs, boxes, shape, 0.5, "torchvision"),
            lambda: paste_masks_in_image(probs[:, None], boxes, shape)[:, 0] >= 0.5,
        ),
        "mmdet convention": (
            lambda: paste_masks(probs, boxes, shape, 0.5, "mmdet"),
            lambda: _grid_sample_paste(probs, boxes, *shape),
        ),
    }
    rows = []
    print(f"{args.num} masks into {args.width}x{args.height}, {torch.get_num_threads()} threads")
    print(f"{'pair':<24} {'detfn s':>9} {'reference s':>12} {'ratio':>7}")
    for name, (ours, reference) in pairs.items():
        ours(), reference()  # warm up
        times = [(_timed(ours), _timed(reference)) for _ in range(args.repeats)]
        ratio = statistics.median(r / o for o, r in times)
        row = (
            name,
            statistics.median(o for o, _ in times),
            statistics.median(r for _, r in times),
            ratio,
        )
        print(f"{name:<24} {row[1]:>9.3f} {row[2]:>12.3f} {ratio:>6.1f}x")
        rows.append(row)
    return rows


if __name__ == "__main__":
    main(tyro.cli(PasteBenchmarkArgs))
