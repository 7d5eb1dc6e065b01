"""detfn against torchvision on equal work: train-step time, inference time, peak memory.

Both models get the same weights (torchvision's seeded initialization, mapped to detfn's names by
experiments.torchvision_weights), the same synthetic batch and the settings that make them
compute the same thing (aligned=False RoIAlign with the same ``--sampling-ratio``, anchors with
whole-pixel corners, FrozenBatchNorm with layer1 and the stem frozen, 1x proposal counts, 512
RoIs per image, SGD 0.02 / 0.9 / 1e-4, torchvision's small-box filters: RPN boxes under 1e-3
px and, before the final NMS, boxes under 1e-2 px dropped on both sides). ``--model
retinanet`` / ``fcos``: torchvision's RetinaNet / FCOS assembly (P6 from P5, ReLU before P7,
FrozenBatchNorm), detfn's unrounded anchors copied into torchvision's RetinaNet, detfn's FCOS
head under ``torchvision_fcos_head()`` and class logits re-drawn so that scores pass the test
threshold. Before every step both models are restored to those weights, so the proposals never
collapse as they do after a few updates on random data.

Each step prints, per side, its work per image: Faster R-CNN's proposals kept and RoIs sampled
(train), a dense detector's positive anchors or points (train), and the detection candidates
entering the final NMS (inference); when they differ, the benchmark reports no ratio for that
measurement. The dense detectors want sizes that divide by 128 (torchvision derives each
level's stride by integer division, so other sizes shift its top-level anchors). The two
models' steps alternate in one process (order swapped every pair), so a slow spell on a shared
machine hits both; the ratio reported is the median of per-pair ratios, with the lowest and
highest. Peak memory is the torch tensor memory
allocated during one step above what was live before it, from torch.profiler's memory events
(CPU) or ``torch.cuda.max_memory_allocated`` (CUDA). Results also go to a JSON file.

    python -m experiments.benchmark --depth 18 --sampling-ratio 0
    python -m experiments.benchmark --model retinanet --depth 18 --size 256 384 --iters 2
    python -m experiments.benchmark --device cuda --size 800 1344 --amp bf16
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import tyro

from detfn.apis.train import resolve_device
from detfn.structures import Batch, ImageMeta
from experiments.benchmark_models import PAIRS, BenchSettings, Side


@dataclass(frozen=True)
class BenchArgs:
    model: Literal["faster_rcnn", "retinanet", "fcos"] = "faster_rcnn"
    depth: Literal[18, 34, 50, 101] = 50
    size: tuple[int, int] = (512, 640)
    """image height and width (multiples of 32: no padding)"""
    batch: int = 2
    num_classes: int = 80
    boxes_per_image: int = 8
    iters: int = 5
    """timed pairs per measurement"""
    warmup: int = 1
    sampling_ratio: int = 0
    """RoIAlign samples per bin side on both sides: 0 is adaptive (mmdetection's 1x)"""
    device: str = "auto"
    amp: Literal["none", "bf16"] = "none"
    """bf16 autocast of both forwards, CUDA only"""
    threads: int | None = None
    """torch CPU threads (default: torch's choice)"""
    measure: tuple[Literal["train", "inference"], ...] = ("train", "inference")
    """which steps to time (one alone halves a run on a busy machine)"""
    layout: Literal["as-shipped", "both-nhwc", "both-nchw"] = "as-shipped"
    """activation layouts: each library's own (detfn channels-last on the CPU where its norm
    layers allow, torchvision NCHW), or the same on both sides"""
    memory: bool = True
    """measure peak memory (one extra step per side, untimed)"""
    output: Path | None = None
    """JSON results file (default work_dirs/benchmark/<model>_r<depth>_<H>x<W>_sr<s>.json)"""


def synthetic_batch(args: BenchArgs, device: torch.device) -> Batch:
    """Random images and plausible random boxes, the same for both models."""
    g = torch.Generator().manual_seed(0)
    b, n = args.batch, args.boxes_per_image
    height, width = args.size
    images = torch.randn(b, 3, height, width, generator=g)
    xy = torch.rand(b, n, 2, generator=g) * torch.tensor([width * 0.7, height * 0.7])
    wh = 24 + torch.rand(b, n, 2, generator=g) * torch.tensor([width * 0.3, height * 0.3])
    boxes = torch.cat([xy, xy + wh], dim=-1)
    labels = torch.randint(0, args.num_classes, (b, n), generator=g)
    metas = tuple(ImageMeta(f"synthetic_{i}", i, args.size, args.size, args.size) for i in range(b))
    empty = torch.zeros(b, 0, 4)
    batch = Batch(
        images,
        boxes,
        labels,
        torch.ones(b, n, dtype=torch.bool),
        empty,
        torch.zeros(b, 0, dtype=torch.bool),
        metas,
    )
    return batch.to(device)


def _timed(side: Side, which: str, device: torch.device) -> tuple[float, dict[str, list[int]]]:
    """Restore (untimed), run one step, return (ms, work counts)."""
    side.restore()
    side.probe.reset()
    fn = side.train_step if which == "train" else side.infer
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1e3, dict(side.probe.counts)


def _format_counts(counts: dict[str, list[int]]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(counts.items()))


def interleaved(ours: Side, theirs: Side, which: str, args: BenchArgs, device) -> dict:
    """Alternate the two sides' steps; per-pair ratios, equal-work check per pair."""
    rows, equal = [], True
    for i in range(args.warmup + args.iters):
        order = [("detfn", ours), ("torchvision", theirs)]
        if i % 2:
            order.reverse()
        result = {name: _timed(side, which, device) for name, side in order}
        (t_ours, c_ours), (t_theirs, c_theirs) = result["detfn"], result["torchvision"]
        same = c_ours == c_theirs
        tag = "warmup" if i < args.warmup else f"pair {i - args.warmup}"
        print(
            f"  {which} {tag}: detfn {t_ours:.0f} ms [{_format_counts(c_ours)}] | torchvision "
            f"{t_theirs:.0f} ms [{_format_counts(c_theirs)}]{'' if same else '  WORK DIFFERS'}",
            flush=True,
        )
        if i >= args.warmup:
            equal &= same
            rows.append((t_ours, t_theirs))
    ratios = [a / b for a, b in rows]
    return {
        "detfn_ms": statistics.median(a for a, _ in rows),
        "torchvision_ms": statistics.median(b for _, b in rows),
        "equal_work": equal,
        "ratio_median": statistics.median(ratios) if equal else None,
        "ratio_min": min(ratios) if equal else None,
        "ratio_max": max(ratios) if equal else None,
    }


def peak_memory_mb(side: Side, which: str, device: torch.device) -> float:
    """Peak tensor memory allocated during one step, above what was live before it (MiB)."""
    side.restore()
    fn = side.train_step if which == "train" else side.infer
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # an op's own allocations (its total repeats its children's) and the frees ("[memory]"
    # events), in time order, give the live-memory timeline
    deltas = sorted(
        (e.time_range.start, e.self_cpu_memory_usage)
        for e in prof.events()
        if e.self_cpu_memory_usage
    )
    live = peak = 0
    for _, delta in deltas:
        live += delta
        peak = max(peak, live)
    return peak / 2**20


def describe_layout(pair, layout: str, device: torch.device) -> str:
    """What each side's features run in, training and inference (``--layout``)."""
    if layout == "both-nhwc":
        return "NHWC on both sides"
    if layout == "both-nchw":
        return "NCHW on both sides"
    model = pair.detfn.model
    was_training, modes = model.training, []
    for training in (True, False):
        model.train(training)
        modes.append(_detfn_layout(model, device))
    model.train(was_training)
    return f"detfn {modes[0]} (train) / {modes[1]} (inference), torchvision NCHW"


def _detfn_layout(model, device: torch.device) -> str:
    if model.uses_channels_last(device):
        return "NHWC"
    if model.uses_channels_last(device, (model.backbone, model.neck)):
        return "NHWC backbone and neck, NCHW heads"
    return "NCHW"


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def run(args: BenchArgs) -> dict:
    device = resolve_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.amp != "none" and device.type != "cuda":
        raise SystemExit("benchmark: --amp bf16 is measured on CUDA only")
    settings = BenchSettings(
        depth=args.depth,
        num_classes=args.num_classes,
        image_size=tuple(args.size),
        sampling_ratio=args.sampling_ratio,
        device=device,
        autocast_dtype=torch.bfloat16 if args.amp == "bf16" else None,
        layout=args.layout,
    )
    batch = synthetic_batch(args, device)
    pair = PAIRS[args.model](settings, batch)
    print(f"activation layout: {describe_layout(pair, args.layout, device)}", flush=True)
    print(
        f"{pair.title}, batch {args.batch} x {args.size[0]}x{args.size[1]}, "
        + (
            f"RoIAlign sampling_ratio={args.sampling_ratio}, "
            if args.model == "faster_rcnn"
            else ""
        )
        + f"{device} ({_machine(device)}), "
        f"torch {torch.__version__}",
        flush=True,
    )
    results: dict[str, dict] = {}
    for which in dict.fromkeys(args.measure):
        results[which] = interleaved(pair.detfn, pair.torchvision, which, args, device)
        if args.memory:
            for name in ("detfn", "torchvision"):
                side = getattr(pair, name)
                results[which][f"{name}_peak_mb"] = peak_memory_mb(side, which, device)
    report = {
        "model": args.model,
        "title": pair.title,
        "machine": _machine(device),
        "device": str(device),
        "torch": torch.__version__,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(args).items()},
        "memory_source": "cuda max_memory_allocated"
        if device.type == "cuda"
        else "torch.profiler CPU memory events (tensor allocations during the step)",
        "results": results,
    }
    print_table(report)
    path = args.output or Path(
        f"work_dirs/benchmark/{args.model}_r{args.depth}_{args.size[0]}x{args.size[1]}"
        f"_sr{args.sampling_ratio}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"results written to {path}")
    return report


def _cell(value: float | None, fmt: Callable[[float], str]) -> str:
    return "n/a (unequal work)" if value is None else fmt(value)


def print_table(report: dict) -> None:
    res = report["results"]
    print(f"\n{'':<22}{'detfn':>12}{'torchvision':>14}{'detfn/tv (min-max)':>26}")
    for which, label in (("train", "train step (ms)"), ("inference", "inference (ms)")):
        if which not in res:
            continue
        r = res[which]
        spread = _cell(
            r["ratio_median"],
            lambda m, r=r: f"{m:.2f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})",
        )
        print(f"{label:<22}{r['detfn_ms']:>12.0f}{r['torchvision_ms']:>14.0f}{spread:>26}")
    for which in res:
        r = res[which]
        if "detfn_peak_mb" in r:
            ratio = r["detfn_peak_mb"] / max(r["torchvision_peak_mb"], 1e-9)
            label = f"peak mem {which} (MiB)"
            print(
                f"{label:<22}{r['detfn_peak_mb']:>12.0f}{r['torchvision_peak_mb']:>14.0f}"
                f"{ratio:>26.2f}"
            )


def main(args: BenchArgs) -> dict:
    return run(args)


if __name__ == "__main__":
    main(tyro.cli(BenchArgs))
