"""Training-step and inference time of detfn's Faster R-CNN next to torchvision's ``FasterRCNN``.

Both models get the same ResNet depth with FPN, the same image size and batch (synthetic images
and boxes, fixed seed), the same proposal counts (train 2000 per level -> 1000, test 1000 -> 1000),
the same RPN / R-CNN sample sizes and the same SGD (lr 0.02, momentum 0.9, wd 1e-4). A training
step is forward + backward + optimizer update; inference is forward + post-processing. Times are
medians after warm-up, with CUDA synchronised. Prints a table; it is not a test.

    python -m experiments.benchmark                         # CPU-sized defaults
    python -m experiments.benchmark --device cuda --height 800 --width 1344 --amp bf16
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import tyro

from detfn.apis import FASTER_RCNN_R50_FPN_1X_COCO
from detfn.apis.train import resolve_device
from detfn.config import override
from detfn.engine import RunnerConfig, initial_state, make_train_step
from detfn.engine.optim import SGDConfig, norm_param_names
from detfn.models.functional import detector_loss_fn, detector_predict_fn, split
from detfn.registry import build
from detfn.structures import Batch, ImageMeta

_RESNET_CHANNELS = {18: (64, 128, 256, 512), 34: (64, 128, 256, 512)}


@dataclass(frozen=True)
class BenchArgs:
    depth: Literal[18, 34, 50, 101] = 50
    height: int = 512
    width: int = 640
    batch_size: int = 2
    num_classes: int = 80
    boxes_per_image: int = 8
    iters: int = 5
    """timed iterations per measurement"""
    warmup: int = 2
    device: str = "auto"
    amp: Literal["none", "bf16"] = "none"
    """bf16 autocast of the forward (both models), CUDA only"""
    threads: int | None = None
    """torch CPU threads (default: torch's choice)"""
    sampling_ratio: int = 0
    """detfn's RoIAlign samples per bin side: 0 is mmdetection's adaptive count (the 1x recipe),
    2 is what torchvision's FasterRCNN uses"""


def synthetic_batch(args: BenchArgs, device: torch.device) -> Batch:
    """Random images and plausible random boxes, the same for both models."""
    g = torch.Generator().manual_seed(0)
    b, n = args.batch_size, args.boxes_per_image
    images = torch.randn(b, 3, args.height, args.width, generator=g)
    xy = torch.rand(b, n, 2, generator=g) * torch.tensor([args.width * 0.7, args.height * 0.7])
    wh = 24 + torch.rand(b, n, 2, generator=g) * torch.tensor([args.width * 0.3, args.height * 0.3])
    boxes = torch.cat([xy, xy + wh], dim=-1)
    labels = torch.randint(0, args.num_classes, (b, n), generator=g)
    shape = (args.height, args.width)
    metas = tuple(ImageMeta(f"synthetic_{i}", i, shape, shape, shape) for i in range(b))
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


def timed(fn: Callable[[], object], args: BenchArgs, device: torch.device) -> float:
    """Median wall time of ``fn`` in milliseconds."""
    for _ in range(args.warmup):
        fn()
    times = []
    for _ in range(args.iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def autocast(args: BenchArgs, device: torch.device):
    enabled = args.amp == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def detfn_times(args: BenchArgs, batch: Batch, device: torch.device) -> tuple[float, float]:
    cfg = override(FASTER_RCNN_R50_FPN_1X_COCO.model, "backbone.depth", args.depth)
    if args.depth in _RESNET_CHANNELS:
        cfg = override(cfg, "neck.in_channels", _RESNET_CHANNELS[args.depth])
    cfg = override(
        cfg,
        {
            "num_classes": args.num_classes,
            "roi_head.bbox_roi_extractor.sampling_ratio": args.sampling_ratio,
        },
    )
    model = build(cfg).to(device)
    params, buffers = split(model)
    runner = RunnerConfig(optimizer=SGDConfig(lr=0.02, momentum=0.9, weight_decay=1e-4))
    optimizer = build(runner.optimizer, params=params, norm_names=norm_param_names(model))
    state = initial_state(runner, optimizer, params, buffers)
    dtype = torch.bfloat16 if args.amp == "bf16" else None
    step = make_train_step(detector_loss_fn(model), autocast_dtype=dtype, device_type=device.type)

    def train_step():
        out = step(state, batch)
        optimizer.update(out["grads"], state.opt_state, state.params, state.hyper)

    predict = detector_predict_fn(model)

    def infer():
        with autocast(args, device):
            predict(state.params, state.buffers, batch.images, batch.metas)

    return timed(train_step, args, device), timed(infer, args, device)


def torchvision_times(args: BenchArgs, batch: Batch, device: torch.device) -> tuple[float, float]:
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    backbone = resnet_fpn_backbone(
        backbone_name=f"resnet{args.depth}", weights=None, trainable_layers=3
    )
    model = FasterRCNN(
        backbone,
        num_classes=args.num_classes + 1,
        min_size=min(args.height, args.width),
        max_size=max(args.height, args.width),
        rpn_pre_nms_top_n_train=2000,
        rpn_post_nms_top_n_train=1000,
        rpn_pre_nms_top_n_test=1000,
        rpn_post_nms_top_n_test=1000,
        rpn_batch_size_per_image=256,
        box_batch_size_per_image=512,
        box_score_thresh=0.05,
        box_detections_per_img=100,
    ).to(device)
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.02, momentum=0.9, weight_decay=1e-4
    )
    # torchvision normalises inside the model; feed the same tensors (already normalised-like).
    images = list(batch.images)
    targets = [
        {
            "boxes": batch.boxes[i][batch.box_mask[i]],
            "labels": batch.labels[i][batch.box_mask[i]] + 1,
        }
        for i in range(len(batch))
    ]

    def train_step():
        model.train()
        with autocast(args, device):
            losses = model(images, targets)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()

    @torch.no_grad()
    def infer():
        model.eval()
        with autocast(args, device):
            model(images)

    return timed(train_step, args, device), timed(infer, args, device)


def main(args: BenchArgs) -> None:
    device = resolve_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.amp != "none" and device.type != "cuda":
        raise SystemExit("--amp bf16 is measured on CUDA only")
    batch = synthetic_batch(args, device)
    torch.manual_seed(0)
    ours = detfn_times(args, batch, device)
    torch.manual_seed(0)
    theirs = torchvision_times(args, batch, device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU x{torch.get_num_threads()}"
    )
    print(
        f"Faster R-CNN R-{args.depth}-FPN, batch {args.batch_size} x {args.height}x{args.width}, "
        f"{device} ({name}), amp={args.amp}, detfn RoIAlign sampling_ratio={args.sampling_ratio}, "
        f"torch {torch.__version__}"
    )
    print(f"{'model':<24}{'train step (ms)':>18}{'inference (ms)':>18}")
    print(f"{'detfn':<24}{ours[0]:>18.1f}{ours[1]:>18.1f}")
    print(f"{'torchvision FasterRCNN':<24}{theirs[0]:>18.1f}{theirs[1]:>18.1f}")
    print(
        f"{'ratio detfn/torchvision':<24}{ours[0] / theirs[0]:>18.2f}{ours[1] / theirs[1]:>18.2f}"
    )


if __name__ == "__main__":
    main(tyro.cli(BenchArgs))
