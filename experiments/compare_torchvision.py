"""Train torchvision's ``FasterRCNN`` the way the ``bccd`` preset trains detfn's, and evaluate both
the same way: a reference for detfn's accuracy. Slow (one full training run); not a test.

Same as the preset: ResNet-18 from scratch with trainable BatchNorm, FPN with 128 channels,
anchors 16-256 px (3 ratios), RPN proposals train 1000 -> 500 / test 500 -> 300, 256 sampled RoIs,
RoIAlign 7x7 with 2x2 samples, the very batches of detfn's loader (BCCD train, 320x240, flip 0.5),
SGD 0.02 / 0.9 / 1e-4 with mmcv's linear warmup and step schedule, and pycocotools on BCCD val.
torchvision's own initialization is kept (the preset uses the same rules, drawn by detfn).

With equal weights and samplers that keep every candidate, the two implementations give the same
losses, gradients and detections (tests/models/test_faster_rcnn_vs_torchvision.py), so what this
comparison measures beyond seed noise is the remaining design choices (RoIAlign ``aligned``).

    python -m experiments.compare_torchvision            # prints both metric lines
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch
import tyro
from torch import nn

from detfn.apis import bccd_cpu_preset, build_experiment
from detfn.data import build_loader
from detfn.evaluation import coco_evaluate, detections_to_coco_results
from detfn.structures import ImageDetections


@dataclass(frozen=True)
class CompareArgs:
    epochs: int = 8
    """must match the detfn run being compared"""
    log_interval: int = 10
    seed: int = 0
    """seeds the data order and the initialization, as ``--seed`` of experiments.faster_rcnn"""


def torchvision_model(num_classes: int, ratios: tuple[float, ...] = (0.5, 1.0, 2.0)) -> nn.Module:
    """torchvision's FasterRCNN sized as the ``bccd`` preset; ``ratios`` are the anchor ratios."""
    from torchvision.models import resnet18
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops import MultiScaleRoIAlign

    body = resnet18(weights=None, norm_layer=nn.BatchNorm2d)
    layers = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}
    backbone = BackboneWithFPN(body, layers, [64, 128, 256, 512], out_channels=128)
    anchors = AnchorGenerator(((16,), (32,), (64,), (128,), (256,)), (ratios,) * 5)
    return FasterRCNN(
        backbone,
        num_classes=num_classes + 1,
        # the images come resized and normalized by detfn's pipeline: no second transform
        min_size=240,
        max_size=320,
        image_mean=[0.0, 0.0, 0.0],
        image_std=[1.0, 1.0, 1.0],
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=1000,
        rpn_post_nms_top_n_train=500,
        rpn_pre_nms_top_n_test=500,
        rpn_post_nms_top_n_test=300,
        box_batch_size_per_image=256,
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2),
    )


def lr_at(iteration: int, epoch: int, base: float = 0.02, steps: tuple[int, ...] = (6, 7)) -> float:
    """The preset's schedule: linear warmup 100 iters from 0.001, x0.1 at epochs ``steps``."""
    regular = base * 0.1 ** sum(epoch >= s for s in steps)
    if iteration < 100:
        return regular * (1 - (1 - iteration / 100) * (1 - 0.001))
    return regular


def images_and_targets(batch):
    images, targets = [], []
    for i, meta in enumerate(batch.metas):
        h, w = meta.img_shape
        images.append(batch.images[i, :, :h, :w])
        keep = batch.box_mask[i]
        targets.append({"boxes": batch.boxes[i][keep], "labels": batch.labels[i][keep] + 1})
        if batch.masks is not None:  # torchvision's MaskRCNN: uint8 [N, H, W] per image
            targets[-1]["masks"] = batch.masks[i].to(torch.uint8)
    return images, targets


def train(
    model: nn.Module, loader, epochs: int, log_interval: int, steps: tuple[int, ...] = (6, 7)
) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.02, momentum=0.9, weight_decay=1e-4)
    iteration, start, window = 0, time.time(), []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        model.train()
        for batch in loader:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(iteration, epoch, steps=steps)
            images, targets = images_and_targets(batch)
            loss = sum(model(images, targets).values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
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
def evaluate(model: nn.Module, dataset, loader) -> dict:
    model.eval()
    detections, image_ids = [], []
    for batch in loader:
        images, _ = images_and_targets(batch)
        for out, meta in zip(model(images), batch.metas):
            scale = torch.tensor(meta.scale_factor)
            detections.append(
                ImageDetections(out["boxes"] / scale, out["scores"], out["labels"] - 1)
            )
            image_ids.append(meta.image_id)
    results = detections_to_coco_results(detections, image_ids, dataset.label_to_cat_id)
    return coco_evaluate(dataset.coco, results, img_ids=dataset.image_ids)


def main(args: CompareArgs) -> dict:
    cfg = dataclasses.replace(bccd_cpu_preset(), seed=args.seed)  # data order and init
    built = build_experiment(cfg)
    torch.manual_seed(args.seed)
    model = torchvision_model(cfg.model.num_classes)
    train(
        model, build_loader(built.train_set, cfg.data.train_loader), args.epochs, args.log_interval
    )
    metrics = evaluate(model, built.val_set, build_loader(built.val_set, cfg.data.test_loader))
    print(metrics["bbox_summary"])
    print("torchvision bbox_mAP_copypaste:", metrics["bbox_mAP_copypaste"])
    return metrics


if __name__ == "__main__":
    main(tyro.cli(CompareArgs))
