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
    python -m experiments.compare_torchvision --model retinanet

``--model retinanet`` trains torchvision's ``RetinaNet`` the way ``retinanet_bccd_preset`` trains
detfn's: ResNet-18 from scratch, FPN with 128 channels on C3-C5 and P6 from C5, P7 from P6,
octave anchors 16-25 px on stride 8 (3 scales x 3 ratios), 4-conv heads, focal loss, SGD 0.01.
torchvision differs by design in its ReLU before P7 and its rounded anchor sizes.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Literal

import torch
import tyro
from torch import nn

from detfn.apis import bccd_cpu_preset, build_experiment, retinanet_bccd_preset
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
    model: Literal["faster_rcnn", "retinanet"] = "faster_rcnn"
    """which detector and bccd preset to compare"""


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


def torchvision_retinanet(num_classes: int) -> nn.Module:
    """torchvision's RetinaNet sized as the ``retinanet_bccd_preset``."""
    from torchvision.models import resnet18
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    body = resnet18(weights=None, norm_layer=nn.BatchNorm2d)
    layers = {"layer2": "0", "layer3": "1", "layer4": "2"}
    extra = LastLevelP6P7(512, 128)  # in != out channels: P6 from C5, as the preset's on_input
    backbone = BackboneWithFPN(body, layers, [128, 256, 512], 128, extra_blocks=extra)
    sizes = tuple((x, int(x * 2 ** (1 / 3)), int(x * 2 ** (2 / 3))) for x in (16, 32, 64, 128, 256))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)
    return RetinaNet(
        backbone,
        num_classes,
        min_size=240,
        max_size=320,
        image_mean=[0.0, 0.0, 0.0],
        image_std=[1.0, 1.0, 1.0],
        anchor_generator=anchors,
        detections_per_img=100,
    )


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


def train(
    model: nn.Module,
    loader,
    epochs: int,
    log_interval: int,
    base_lr: float = 0.02,
    label_offset: int = 1,
    steps: tuple[int, ...] = (6, 7),
) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=base_lr, momentum=0.9, weight_decay=1e-4)
    iteration, start, window = 0, time.time(), []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        model.train()
        for batch in loader:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(iteration, epoch, base_lr, steps)
            images, targets = images_and_targets(batch, label_offset)
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


def main(args: CompareArgs) -> dict:
    retina = args.model == "retinanet"
    preset = retinanet_bccd_preset() if retina else bccd_cpu_preset()
    cfg = dataclasses.replace(preset, seed=args.seed)  # data order and init
    built = build_experiment(cfg)
    torch.manual_seed(args.seed)
    num_classes = cfg.model.num_classes
    model = torchvision_retinanet(num_classes) if retina else torchvision_model(num_classes)
    offset = 0 if retina else 1  # RetinaNet has no background class
    loader = build_loader(built.train_set, cfg.data.train_loader)
    train(model, loader, args.epochs, args.log_interval, cfg.runner.optimizer.lr, offset)
    val_loader = build_loader(built.val_set, cfg.data.test_loader)
    metrics = evaluate(model, built.val_set, val_loader, offset)
    print(metrics["bbox_summary"])
    print("torchvision bbox_mAP_copypaste:", metrics["bbox_mAP_copypaste"])
    return metrics


if __name__ == "__main__":
    main(tyro.cli(CompareArgs))
