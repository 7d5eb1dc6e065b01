"""Does data loading keep up? Images/s of a preset's train loader against its training step.

    python -m experiments.benchmark_loader [--model faster_rcnn] [--preset bccd]
        [--batches 50] [--workers 0 2] [--train-steps 3]

The loader is the preset's own (``data.train`` and ``data.train_loader``: the Faster R-CNN
``bccd`` preset's 400x300 pipeline, 2 images per batch, its worker count), only
``num_workers`` varies per row.
Each row reports the seconds to the first batch (worker start-up and the first images; paid at
every epoch unless ``persistent_workers``) and then images/s over ``--batches`` batches. With 0
workers, images/s is what one core spends per image (decode, resize, flip, normalize, pad,
collate) - the CPU the workers take from the training step. ``--train-steps`` then times that
many training steps of the preset's model (forward, backward, optimizer update; after one
untimed step) on the loader's batches, in this process, so that the two rates are compared on
the same machine state. It prints tables; it is not a test.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass
from typing import Literal

import torch
import tyro

from detfn.apis import PRESETS, ExperimentConfig
from detfn.data import build_loader
from detfn.engine import initial_state, make_train_step
from detfn.models.functional import detector_loss_fn, norm_param_names, split
from detfn.registry import build

__all__ = ["BenchmarkArgs", "main", "time_loader", "time_train_steps"]


@dataclass(frozen=True)
class BenchmarkArgs:
    """Arguments of the loader benchmark."""

    model: Literal["faster_rcnn", "retinanet", "fcos", "atss"] = "faster_rcnn"
    preset: str = "bccd"
    batches: int = 50
    """timed batches per row (after the first)"""
    workers: tuple[int, ...] = (0, 2)
    """worker counts to compare (the preset's loader otherwise)"""
    threads: int = 1
    """torch threads of the main process"""
    train_steps: int = 3
    """training steps of the preset's model to time (0: loader only)"""


def preset_experiment(args: BenchmarkArgs) -> ExperimentConfig:
    presets = PRESETS[args.model]
    if args.preset not in presets:
        raise SystemExit(
            f"--preset: {args.model} has presets {sorted(presets)}, not {args.preset!r}"
        )
    return presets[args.preset]()


def time_loader(num_workers: int, args: BenchmarkArgs) -> tuple[int, float, float]:
    """(images, seconds, seconds to the first batch) of the preset's train loader with
    ``num_workers``: the first batch is timed apart, then ``args.batches`` batches."""
    data = preset_experiment(args).data
    dataset = build(data.train, seed=0)
    loader = build_loader(dataset, dataclasses.replace(data.train_loader, num_workers=num_workers))
    start = time.perf_counter()
    batches = iter(loader)
    next(batches)
    first = time.perf_counter() - start
    images, start = 0, time.perf_counter()
    for _, batch in zip(range(args.batches), batches):
        images += len(batch)
    return images, time.perf_counter() - start, first


def time_train_steps(args: BenchmarkArgs) -> tuple[int, list[float]]:
    """(images per batch, seconds per step) of ``args.train_steps`` training steps of the
    preset's model on its loader's first batches (0 workers), after one untimed step."""
    experiment = preset_experiment(args)
    dataset = build(experiment.data.train, seed=0)
    loader = build_loader(dataset, dataclasses.replace(experiment.data.train_loader, num_workers=0))
    model = build(experiment.model)
    model.train()
    params, buffers = split(model)
    runner = experiment.runner
    optimizer = build(runner.optimizer, params=params, norm_names=norm_param_names(model))
    state = initial_state(runner, optimizer, params, buffers)
    step = make_train_step(detector_loss_fn(model))
    seconds, batches = [], iter(loader)
    for i in range(args.train_steps + 1):
        batch = next(batches)
        start = time.perf_counter()
        out = step(state, batch)
        optimizer.update(out["grads"], state.opt_state, state.params, state.hyper)
        if i:
            seconds.append(time.perf_counter() - start)
    return len(batch), seconds


def main(args: BenchmarkArgs) -> list[tuple[int, int, float]]:
    """Print the tables and return the loader rows ``(workers, images, seconds)``."""
    torch.set_num_threads(args.threads)
    rows = [(w, *time_loader(w, args)) for w in args.workers]
    loader = preset_experiment(args).data.train_loader
    print(
        f"{args.model} preset {args.preset!r} train loader, batch {loader.batch_size}, "
        f"{args.batches} batches per row after the first, {args.threads} torch thread(s)"
    )
    print(
        f"{'workers':>7} | {'first batch s':>13} | {'images':>6} | {'seconds':>7} | {'images/s':>8}"
    )
    print(f"{'-' * 7}-+-{'-' * 13}-+-{'-' * 6}-+-{'-' * 7}-+-{'-' * 8}")
    for workers, images, seconds, first in rows:
        print(
            f"{workers:>7} | {first:>13.2f} | {images:>6} | {seconds:>7.2f} | "
            f"{images / seconds:>8.1f}"
        )
    if args.train_steps > 0:
        per_batch, seconds = time_train_steps(args)
        median = statistics.median(seconds)
        print(
            f"training step ({args.model}, {args.threads} torch thread(s)): median {median:.2f} s "
            f"per {per_batch} images over {len(seconds)} steps (min {min(seconds):.2f}, max "
            f"{max(seconds):.2f}) = {per_batch / median:.1f} images/s"
        )
    return [(w, n, s) for w, n, s, _ in rows]


if __name__ == "__main__":
    main(tyro.cli(BenchmarkArgs))
