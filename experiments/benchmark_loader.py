"""Images per second of the BCCD train pipeline through the loader, with 0 and 2 workers.

    python -m experiments.benchmark_loader [--batches 100] [--workers 0 2]

Each row times ``--batches`` batches after one warm-up batch (worker start-up excluded).
It prints a table; it is not a test.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import tyro

from detfn.data import LoaderConfig, bccd_dataset_config, build_loader
from detfn.registry import build

__all__ = ["BenchmarkArgs", "main", "time_loader"]


@dataclass(frozen=True)
class BenchmarkArgs:
    """Arguments of the loader benchmark."""

    batches: int = 100
    """timed batches per row"""
    workers: tuple[int, ...] = (0, 2)
    """worker counts to compare"""
    batch_size: int = 2
    """images per batch (mmdetection's samples_per_gpu)"""
    threads: int = 1
    """torch threads of the main process"""


def time_loader(num_workers: int, args: BenchmarkArgs) -> tuple[int, float]:
    """(images, seconds) for ``args.batches`` batches after a warm-up batch."""
    dataset = build(bccd_dataset_config("train"), seed=0)
    loader = build_loader(
        dataset, LoaderConfig(batch_size=args.batch_size, num_workers=num_workers, seed=0)
    )
    batches = iter(loader)
    next(batches)
    images, start = 0, time.perf_counter()
    for _, batch in zip(range(args.batches), batches):
        images += len(batch)
    return images, time.perf_counter() - start


def main(args: BenchmarkArgs) -> list[tuple[int, int, float]]:
    """Print the table and return its rows ``(workers, images, seconds)``."""
    torch.set_num_threads(args.threads)
    rows = [(w, *time_loader(w, args)) for w in args.workers]
    print(f"BCCD train pipeline, batch {args.batch_size}, {args.batches} batches per row")
    print(f"{'workers':>7} | {'images':>6} | {'seconds':>7} | {'images/s':>8}")
    print(f"{'-' * 7}-+-{'-' * 6}-+-{'-' * 7}-+-{'-' * 8}")
    for workers, images, seconds in rows:
        print(f"{workers:>7} | {images:>6} | {seconds:>7.2f} | {images / seconds:>8.1f}")
    return rows


if __name__ == "__main__":
    main(tyro.cli(BenchmarkArgs))
