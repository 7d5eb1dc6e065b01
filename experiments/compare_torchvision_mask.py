"""Train torchvision's ``MaskRCNN`` the way the ``nuclei`` preset of ``experiments.mask_rcnn``
trains detfn's Mask R-CNN, and evaluate both the same way (bbox and segm). Slow (one full
training run); not a test.

Same as the preset: ResNet-18 from scratch with the preset's norm (GroupNorm, 32 groups), FPN with
128 channels, the preset's anchors (one size per level, 3 ratios), RPN proposals train 1000 -> 500 /
test 500 -> 300, 256 sampled RoIs, RoIAlign 7x7 / 14x14 with 2x2 samples, a mask head of 4 convs of
128, the very batches of detfn's loader (random crops of the enlarged nuclei train images, flips;
torchvision's own resize is skipped in training and is the identity in evaluation), SGD 0.01 / 0.9 /
1e-4 with the preset's warmup, steps and gradient clipping (L2 norm 35), and pycocotools on nuclei
val (masks: probabilities > 0.5 in the original image, torchvision's rule). torchvision's own
initialization is kept.

    python -m experiments.compare_torchvision_mask          # prints bbox and segm metric lines
    python -m experiments.mask_rcnn --seed 0                # the detfn side
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
import tyro
from torch import nn

from detfn.apis import build_experiment, mask_rcnn_nuclei_preset
from detfn.config import override
from detfn.data import build_loader
from detfn.data.presets import NUCLEI_SCALE
from detfn.evaluation.segm import coco_evaluate_instances, detections_to_segm_results
from detfn.models.backbones.norm import make_norm
from detfn.models.detectors import TwoStageDetectorConfig
from detfn.structures import ImageDetections
from experiments.compare_torchvision import images_and_targets, train
from experiments.torchvision_models import TWO_STAGE_SETTINGS, fed_as_is


@dataclass(frozen=True)
class CompareMaskArgs:
    epochs: int = 24
    """must match the detfn run being compared"""
    log_interval: int = 10
    seed: int = 0
    """seeds the data order and the initialization, as ``--seed`` of experiments.mask_rcnn"""
    lr: float | None = None
    """the preset's SGD lr when None; else as ``--lr`` of experiments.mask_rcnn"""


def torchvision_mask_model(cfg: TwoStageDetectorConfig, test_scale: tuple[int, int]) -> nn.Module:
    """torchvision's MaskRCNN sized as ``cfg`` (the ``nuclei`` preset's model), for images that
    detfn's pipeline has already resized: evaluation images at ``test_scale`` (w, h) pass
    torchvision's resize unchanged, and training skips it (the crops are smaller)."""
    from torchvision.models import resnet18
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    width = cfg.neck.out_channels
    anchor = cfg.rpn_head.anchor_generator
    (scale,) = anchor.scales
    sizes = tuple((int(scale * stride),) for stride in anchor.strides)
    body = resnet18(weights=None, norm_layer=partial(make_norm, cfg.backbone.norm))
    layers = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}
    backbone = BackboneWithFPN(body, layers, [64, 128, 256, 512], out_channels=width)
    levels = ["0", "1", "2", "3"]
    return MaskRCNN(
        backbone,
        num_classes=None,  # given by the predictors (a custom mask predictor requires it)
        **fed_as_is(*test_scale),
        _skip_resize=True,  # torchvision's training-time resize (its reference scripts' LSJ flag)
        rpn_anchor_generator=AnchorGenerator(sizes, (tuple(anchor.ratios),) * len(sizes)),
        **TWO_STAGE_SETTINGS,
        box_roi_pool=MultiScaleRoIAlign(levels, 7, 2),
        mask_roi_pool=MultiScaleRoIAlign(levels, 14, 2),
        box_predictor=FastRCNNPredictor(1024, cfg.num_classes + 1),
        mask_head=MaskRCNNHeads(width, (width,) * 4, 1),
        mask_predictor=MaskRCNNPredictor(width, width, cfg.num_classes + 1),
    )


@torch.no_grad()
def evaluate_masks(model: nn.Module, dataset, loader) -> dict:
    """bbox and segm metrics; masks resized to the original image, then ``> 0.5``."""
    model.eval()
    detections, image_ids = [], []
    for batch in loader:
        images, _ = images_and_targets(batch)
        for out, meta in zip(model(images), batch.metas):
            scale = torch.tensor(meta.scale_factor)
            probs = F.interpolate(out["masks"], size=meta.ori_shape, mode="bilinear")
            detections.append(
                ImageDetections(
                    out["boxes"] / scale, out["scores"], out["labels"] - 1, probs[:, 0] > 0.5
                )
            )
            image_ids.append(meta.image_id)
    results = detections_to_segm_results(detections, image_ids, dataset.label_to_cat_id)
    return coco_evaluate_instances(dataset.coco, results, img_ids=dataset.image_ids)


def main(args: CompareMaskArgs) -> dict:
    cfg = dataclasses.replace(mask_rcnn_nuclei_preset(), seed=args.seed)  # data order and init
    if args.lr is not None:
        cfg = override(cfg, "runner.optimizer.lr", args.lr)
    built = build_experiment(cfg)
    torch.manual_seed(args.seed)
    model = torchvision_mask_model(cfg.model, NUCLEI_SCALE)
    loader = build_loader(built.train_set, cfg.data.train_loader)
    clip = cfg.runner.optimizer_hook.grad_clip
    train(
        model,
        loader,
        args.epochs,
        args.log_interval,
        steps=cfg.runner.lr.step,
        sgd=cfg.runner.optimizer,
        max_grad_norm=None if clip is None else clip.max_norm,
    )
    metrics = evaluate_masks(
        model, built.val_set, build_loader(built.val_set, cfg.data.test_loader)
    )
    print(metrics["bbox_summary"])
    print(metrics["segm_summary"])
    print("torchvision bbox_mAP_copypaste:", metrics["bbox_mAP_copypaste"])
    print("torchvision segm_mAP_copypaste:", metrics["segm_mAP_copypaste"])
    return metrics


if __name__ == "__main__":
    main(tyro.cli(CompareMaskArgs))
