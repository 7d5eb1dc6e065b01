"""Train torchvision's ``FasterRCNN`` the way the ``bccd`` preset trains detfn's, and evaluate both
the same way: a reference for detfn's accuracy. Slow (one full training run); not a test.

Same as the preset: ResNet-18 from scratch with trainable BatchNorm, FPN with 128 channels,
anchors 16-256 px (3 ratios), RPN proposals train 1000 -> 500 / test 500 -> 300, 256 sampled RoIs,
RoIAlign 7x7 with 2x2 samples, the very batches of detfn's loader (BCCD train, 400x300, flip 0.5),
SGD 0.02 / 0.9 / 1e-4 with mmcv's linear warmup and step schedule, and pycocotools on BCCD val.
torchvision's own initialization is kept (the preset uses the same rules, drawn by detfn).

With equal weights and samplers that keep every candidate, the two implementations give the same
losses, gradients and detections (tests/models/test_faster_rcnn_vs_torchvision.py), so what this
comparison measures beyond seed noise is the remaining design choices (RoIAlign ``aligned``).

    python -m experiments.compare_torchvision            # prints both metric lines
    python -m experiments.compare_torchvision --model retinanet
    python -m experiments.compare_torchvision --model fcos

``--model retinanet`` trains torchvision's ``RetinaNet`` the way ``retinanet_bccd_preset`` trains
detfn's: ResNet-18 from scratch, FPN with 128 channels on C3-C5 and P6 from C5, P7 from P6,
octave anchors 16-25 px on stride 8 (3 scales x 3 ratios), 4-conv heads, focal loss, SGD 0.01.
torchvision differs by design in its ReLU before P7 and its rounded anchor sizes.

``--model fcos`` trains torchvision's ``FCOS`` built from ``fcos_bccd_preset``'s config
(:func:`experiments.torchvision_models.torchvision_fcos_bccd`). Matched: ResNet-18 from scratch,
FPN with 128 channels on C3-C5, P6 from P5 and a ReLU before P7; 4-conv GN towers of 128 with
conv biases, normal(0.01) init and the 0.01 prior bias (a preset without tower conv biases gets
torchvision's held at zero and frozen); points at the nominal strides 8-128 with offset 0.5 (a
point generator replaces torchvision's, which puts them at offset 0 and derives strides by
integer division: 106 for P7 of a 320-wide image); center sampling with radius 1.5 (an infinite
radius turns torchvision's off when the preset has none); the preset's regress ranges (0, 32) ...
(256, inf), which torchvision expresses as (4 a, 8 a) of one box side a = s / 2 per level;
ReLU distances in stride units (``norm_on_bbox``) and centerness on the regression tower, both
as the preset (mmdetection's ``center-normbbox-centeronreg-giou`` head); focal loss (0.25, 2)
and centerness BCE averaged over the positives; SGD 0.01 / 0.9 / 1e-4 with conv biases at 2x lr
without decay (norms keep theirs), gradients clipped at L2 norm 35, the same warmup and steps;
at test a score threshold of 0.05, 1000 candidates per level, NMS 0.6 and 100 per image. Where
torchvision has no option for the preset's choice the two necessarily differ
(:data:`~experiments.torchvision_models.FCOS_DIFFERENCES` holds the detfn settings that compute
torchvision's way, and ``tests/experiments/test_compare_torchvision.py`` checks with equal
weights on BCCD images that they are the only differences):

* per-level learnable scales on the regression output: the preset has them (starting at 1),
  torchvision has none, and its distances are in units of its box side a = s / 2 (torchvision
  ties the regress range, the centre radius, 3 a here, and the distance unit to that one side),
  so for the same boxes its regression output is twice the preset's;
* box loss: torchvision's GIoU loss (eps 1e-7) averaged over the positives; the preset's GIoU
  (eps 1e-6) weighted by the centerness targets and divided by their sum;
* test scores: torchvision thresholds, takes the per-level top-k by, and reports
  ``sqrt(cls * centerness)``; the preset thresholds and takes the top-k by ``cls`` and reports
  ``cls * centerness`` (the square root keeps the order, so NMS and AP rank alike: only which
  candidates enter differs);
* regress-range bounds: strict in torchvision, inclusive in the preset. Frequent here: box sides
  and points lie on a 0.5 px grid (with mmdetection's ranges, 7 of the 594 positives of one
  bccd8 image sat on a bound).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import tyro
from torch import nn

from detfn.apis import (
    ExperimentConfig,
    bccd_cpu_preset,
    build_experiment,
    fcos_bccd_preset,
    retinanet_bccd_preset,
)
from detfn.config import override
from detfn.data import build_loader
from detfn.engine.optim import SGDConfig, make_param_groups
from detfn.evaluation import coco_evaluate, detections_to_coco_results
from detfn.models.functional import norm_param_names
from detfn.structures import ImageDetections
from experiments.torchvision_models import (
    preset_image_size,
    torchvision_fcos_bccd,
    torchvision_model,
    torchvision_retinanet_bccd,
)


@dataclass(frozen=True)
class CompareArgs:
    epochs: int = 8
    """must match the detfn run being compared"""
    log_interval: int = 10
    seed: int = 0
    """seeds the data order and the initialization, as ``--seed`` of experiments.faster_rcnn"""
    model: Literal["faster_rcnn", "retinanet", "fcos"] = "faster_rcnn"
    """which detector and bccd preset to compare"""
    max_iters: int | None = None
    """stop training after this many iterations (smoke runs; the schedule is unchanged)"""
    data_root: Path | None = None
    """a BCCD-style folder (instances.json, JPEGImages/) to train and evaluate on instead of the
    bundled splits (smoke runs)"""


@dataclass(frozen=True)
class Comparison:
    """A detfn preset, its torchvision twin, and torchvision's label of detfn's class 0."""

    preset: Callable[[], ExperimentConfig]
    twin: Callable[[ExperimentConfig], nn.Module]
    label_offset: int  # 1 where torchvision's class 0 is the background


COMPARISONS = {
    "faster_rcnn": Comparison(
        bccd_cpu_preset,
        lambda cfg: torchvision_model(cfg.model.num_classes, image_size=preset_image_size(cfg)),
        1,
    ),
    "retinanet": Comparison(
        retinanet_bccd_preset,
        lambda cfg: torchvision_retinanet_bccd(
            cfg.model.num_classes, cfg.model.bbox_head.norm, image_size=preset_image_size(cfg)
        ),
        0,
    ),
    "fcos": Comparison(fcos_bccd_preset, torchvision_fcos_bccd, 0),
}


def lr_at(iteration: int, epoch: int, base: float = 0.02, steps: tuple[int, ...] = (6, 7)) -> float:
    """The preset's schedule: linear warmup 100 iters from 0.001, x0.1 at epochs ``steps``."""
    regular = base * 0.1 ** sum(epoch >= s for s in steps)
    if iteration < 100:
        return regular * (1 - (1 - iteration / 100) * (1 - 0.001))
    return regular


def images_and_targets(batch, label_offset: int = 1):
    images, targets = [], []
    for i, meta in enumerate(batch.metas):
        h, w = meta.img_shape
        images.append(batch.images[i, :, :h, :w])
        keep = batch.box_mask[i]
        labels = batch.labels[i][keep] + label_offset
        targets.append({"boxes": batch.boxes[i][keep], "labels": labels})
        if batch.masks is not None:  # torchvision's MaskRCNN: uint8 [N, H, W] per image
            targets[-1]["masks"] = batch.masks[i].to(torch.uint8)
    return images, targets


def sgd_like(model: nn.Module, sgd: SGDConfig) -> torch.optim.SGD:
    """torch's SGD over ``model``'s trainable parameters with ``sgd``'s lr, momentum, weight
    decay and mmcv's per-parameter multipliers (bias lr and decay, norm decay) by detfn's own
    grouping rules; each group keeps its unscheduled lr as ``base_lr``."""
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    groups = make_param_groups(
        named,
        sgd.param_groups,
        lr=sgd.lr,
        weight_decay=sgd.weight_decay,
        momentum=sgd.momentum,
        norm_names=norm_param_names(model),
    )
    return torch.optim.SGD(
        [
            {
                "params": [named[n] for n in g.names],
                "lr": g.lr,
                "base_lr": g.lr,
                "weight_decay": g.weight_decay,
            }
            for g in groups
        ],
        lr=sgd.lr,
        momentum=sgd.momentum,
        nesterov=sgd.nesterov,
    )


def train(
    model: nn.Module,
    loader,
    epochs: int,
    log_interval: int,
    base_lr: float = 0.02,
    label_offset: int = 1,
    steps: tuple[int, ...] = (6, 7),
    *,
    sgd: SGDConfig | None = None,
    max_grad_norm: float | None = None,
    max_iters: int | None = None,
) -> None:
    """Train ``model`` on ``loader``'s batches with the bccd schedule (:func:`lr_at`).

    ``sgd``: the preset's optimizer (None: SGD at ``base_lr``, momentum 0.9, decay 1e-4);
    ``max_grad_norm``: clip the global L2 norm of the gradients; ``max_iters``: stop early.
    """
    optimizer = sgd_like(model, sgd or SGDConfig(lr=base_lr, momentum=0.9, weight_decay=1e-4))
    params = [p for group in optimizer.param_groups for p in group["params"]]
    iteration, start, window = 0, time.time(), []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        model.train()
        for batch in loader:
            if max_iters is not None and iteration >= max_iters:
                return
            for group in optimizer.param_groups:
                group["lr"] = lr_at(iteration, epoch, group["base_lr"], steps)
            images, targets = images_and_targets(batch, label_offset)
            loss = sum(model(images, targets).values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            iteration += 1
            window.append(loss.item())
            if iteration % log_interval == 0:
                # the mean over the interval, as detfn's text logger reports it
                print(
                    f"epoch {epoch + 1} iter {iteration} loss {sum(window) / len(window):.4f} "
                    f"({time.time() - start:.0f} s)",
                    flush=True,
                )
                window = []


@torch.no_grad()
def evaluate(model: nn.Module, dataset, loader, label_offset: int = 1) -> dict:
    model.eval()
    detections, image_ids = [], []
    for batch in loader:
        images, _ = images_and_targets(batch)
        for out, meta in zip(model(images), batch.metas):
            scale = torch.tensor(meta.scale_factor)
            detections.append(
                ImageDetections(out["boxes"] / scale, out["scores"], out["labels"] - label_offset)
            )
            image_ids.append(meta.image_id)
    results = detections_to_coco_results(detections, image_ids, dataset.label_to_cat_id)
    return coco_evaluate(dataset.coco, results, img_ids=dataset.image_ids)


def with_data_root(cfg: ExperimentConfig, root: Path) -> ExperimentConfig:
    """``cfg`` training and evaluating on the COCO json and images under ``root``."""
    files = {"ann_file": str(root / "instances.json"), "img_prefix": str(root / "JPEGImages")}
    return override(cfg, {f"data.{s}.{k}": v for s in ("train", "val") for k, v in files.items()})


def main(args: CompareArgs) -> dict:
    comparison = COMPARISONS[args.model]
    cfg = dataclasses.replace(comparison.preset(), seed=args.seed)  # data order and init
    if args.data_root is not None:
        cfg = with_data_root(cfg, args.data_root)
    built = build_experiment(cfg)
    torch.manual_seed(args.seed)
    model = comparison.twin(cfg)
    offset = comparison.label_offset
    loader = build_loader(built.train_set, cfg.data.train_loader)
    clip = cfg.runner.optimizer_hook.grad_clip
    if clip is not None and clip.norm_type != 2.0:
        raise ValueError(f"compare_torchvision: grad_clip.norm_type {clip.norm_type}: only 2")
    train(
        model,
        loader,
        args.epochs,
        args.log_interval,
        label_offset=offset,
        steps=cfg.runner.lr.step,
        sgd=cfg.runner.optimizer,
        max_grad_norm=None if clip is None else clip.max_norm,
        max_iters=args.max_iters,
    )
    val_loader = build_loader(built.val_set, cfg.data.test_loader)
    metrics = evaluate(model, built.val_set, val_loader, offset)
    print(metrics["bbox_summary"])
    print("torchvision bbox_mAP_copypaste:", metrics["bbox_mAP_copypaste"])
    return metrics


if __name__ == "__main__":
    main(tyro.cli(CompareArgs))
