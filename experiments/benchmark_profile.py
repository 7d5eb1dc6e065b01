"""Where the time goes: torch.profiler of one train step and one inference, both libraries.

Same models, weights and batch as ``experiments.benchmark`` (equal work; the counts are
printed). After one untimed warm-up step per side, one step of each is profiled and the ops are
ranked by self CPU time (CUDA time too on a GPU), with a share of the step.

    python -m experiments.benchmark_profile --depth 18 --sampling-ratio 0
"""

from __future__ import annotations

import tyro
from torch.profiler import ProfilerActivity, profile

from detfn.apis.train import resolve_device
from experiments.benchmark import BenchArgs, synthetic_batch
from experiments.benchmark_models import PAIRS, BenchSettings, Side


def ranked_ops(side: Side, which: str, cuda: bool, rows: int, warmup: bool) -> str:
    """Profile one step of ``side`` (after a warm-up step) and rank its ops by self time."""
    fn = side.train_step if which == "train" else side.infer
    if warmup:
        side.restore()
        fn()
    side.restore()
    side.probe.reset()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        fn()
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    counts = " ".join(f"{k}={v}" for k, v in sorted(side.probe.counts.items()))
    table = prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=48)
    return f"work: {counts}\n{table}"


def main(args: BenchArgs, rows: int = 15) -> None:
    """``args.warmup > 0`` runs one untimed step per side before profiling."""
    device = resolve_device(args.device)
    settings = BenchSettings(
        args.depth, args.num_classes, tuple(args.size), args.sampling_ratio, device, None
    )
    pair = PAIRS[args.model](settings, synthetic_batch(args, device))
    for which in ("train", "inference"):
        for name in ("detfn", "torchvision"):
            print(f"\n=== {pair.title} {args.size[0]}x{args.size[1]} x{args.batch}: {name} {which}")
            side = getattr(pair, name)
            table = ranked_ops(side, which, device.type == "cuda", rows, args.warmup > 0)
            print(table, flush=True)


if __name__ == "__main__":
    main(tyro.cli(BenchArgs))
