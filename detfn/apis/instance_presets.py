"""Experiment presets of Mask R-CNN, Cascade R-CNN and Cascade Mask R-CNN.

``coco`` presets are mmdetection 2.x's ``mask_rcnn_r50_fpn_1x_coco``,
``cascade_rcnn_r50_fpn_1x_coco`` and ``cascade_mask_rcnn_r50_fpn_1x_coco`` exactly: the model
presets of :mod:`detfn.models.detectors.presets`, schedule_1x, and for the mask models
``coco_instance`` (``LoadAnnotations(with_mask=True)``: ``CocoDatasetConfig.with_mask``) with
bbox + segm evaluation. ``nuclei`` presets train from scratch on the bundled DSB2018 nuclei
(1 class, COCO polygons), sized for a 2-core CPU like the BCCD presets, and keep the best
``segm_mAP`` (box models: ``bbox_mAP``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from detfn.apis.experiment import DataConfig, ExperimentConfig, eval_loader
from detfn.apis.presets import _BCCD_BACKBONE, bccd_runner, coco_experiment
from detfn.config import override
from detfn.data import NUCLEI_CLASSES, LoaderConfig, nuclei_dataset_config
from detfn.data.presets import NUCLEI_SCALE
from detfn.data.transforms import RandomCropConfig, RandomFlipConfig, TransformConfig
from detfn.data.transforms.presets import default_test_pipeline, default_train_pipeline
from detfn.engine.hooks.evaluation import EvaluationHookConfig
from detfn.engine.hooks.optimizer import GradClipConfig
from detfn.models.detectors import (
    CASCADE_MASK_RCNN_R50_FPN,
    CASCADE_RCNN_R50_FPN,
    MASK_RCNN_R50_FPN,
    TwoStageDetectorConfig,
)
from detfn.models.losses import SmoothL1LossConfig
from detfn.models.roi_heads import CascadeRoIHeadConfig

__all__ = [
    "INSTANCE_PRESETS",
    "NUCLEI_CROP",
    "cascade_coco_preset",
    "cascade_nuclei_preset",
    "mask_rcnn_coco_preset",
    "mask_rcnn_nuclei_preset",
    "nuclei_data",
    "nuclei_model",
    "nuclei_train_pipeline",
]

# The nuclei at NUCLEI_SCALE, twice the images' own size (256x256 and 320x256 -> 512x512 and
# 640x512): the median nucleus is 15 px across at its own size, 3.75 px on P2, too few for a 7x7
# RoI and a 28x28 mask. Training crops 320x320 windows of the enlarged image, so an iteration
# costs about what a whole image at its own size did; evaluation sees the whole enlarged image.
NUCLEI_CROP = (320, 320)
# Interleaved with the BCCD Faster R-CNN preset (824 iterations, about 15 min), a Mask R-CNN
# nuclei iteration took 1.1x as long (2-core CPU shared with other jobs): about 720 iterations.
NUCLEI_EPOCHS = 24
NUCLEI_LR = 0.01


def _with_mask(exp: ExperimentConfig) -> ExperimentConfig:
    """``coco_instance``: every split loads instance masks."""
    return override(
        exp, {"data.train.with_mask": True, "data.val.with_mask": True, "data.test.with_mask": True}
    )


def mask_rcnn_coco_preset(data_root: str = "data/coco") -> ExperimentConfig:
    """mmdetection's ``mask_rcnn_r50_fpn_1x_coco`` on a COCO 2017 tree at ``data_root``."""
    return _with_mask(coco_experiment("mask_rcnn_r50_fpn_1x_coco", MASK_RCNN_R50_FPN, data_root))


def cascade_coco_preset(data_root: str = "data/coco", mask: bool = False) -> ExperimentConfig:
    """``cascade_rcnn_r50_fpn_1x_coco`` (``mask``: ``cascade_mask_rcnn_r50_fpn_1x_coco``)."""
    if not mask:
        return coco_experiment("cascade_rcnn_r50_fpn_1x_coco", CASCADE_RCNN_R50_FPN, data_root)
    return _with_mask(
        coco_experiment("cascade_mask_rcnn_r50_fpn_1x_coco", CASCADE_MASK_RCNN_R50_FPN, data_root)
    )


def nuclei_train_pipeline(
    scale: tuple[int, int] = NUCLEI_SCALE, crop: tuple[int, int] = NUCLEI_CROP
) -> tuple[TransformConfig, ...]:
    """Resize to ``scale``, a random ``crop`` (h, w) window that keeps a nucleus, and a flip in
    any of the three directions with probability 3/4 (a microscope image has no up or left)."""
    load, resize, _flip, normalize, pad = default_train_pipeline(scale)
    return (
        load,
        resize,
        RandomCropConfig(crop_size=(float(crop[0]), float(crop[1]))),
        RandomFlipConfig(prob=0.75, direction=("horizontal", "vertical", "diagonal")),
        normalize,
        pad,
    )


def nuclei_data(scale: tuple[int, int] = NUCLEI_SCALE) -> DataConfig:
    """The bundled nuclei train (:func:`nuclei_train_pipeline`) and val (whole images at
    ``scale``; val also as test) splits, 2 images per batch."""
    val = nuclei_dataset_config("val", pipeline=default_test_pipeline(scale))
    return DataConfig(
        train=nuclei_dataset_config("train", pipeline=nuclei_train_pipeline(scale)),
        val=val,
        test=val,
        train_loader=LoaderConfig(batch_size=2, num_workers=2),
        test_loader=dataclasses.replace(eval_loader(), batch_size=2),
    )


def _stage_overrides(prefix: str, with_mask: bool) -> dict:
    out = {
        f"{prefix}bbox_roi_extractor.sampling_ratio": 2,
        f"{prefix}bbox_head.init": "pytorch",
        f"{prefix}sampler.num": 256,
    }
    if with_mask:
        out[f"{prefix}mask_branch.roi_extractor.sampling_ratio"] = 2
        out[f"{prefix}mask_branch.mask_head.conv_out_channels"] = 128
    return out


def nuclei_model(base: TwoStageDetectorConfig) -> TwoStageDetectorConfig:
    """``base`` (a Mask R-CNN or cascade preset) made CPU-sized for the nuclei.

    The BCCD presets' departures (ResNet-18 from scratch, torchvision's initialization,
    128-channel FPN and RPN, RoIAlign with 2x2 samples per bin, 256 sampled RoIs, fewer
    proposals, Smooth L1 in the RPN) and: GroupNorm (32 groups) in the backbone instead of
    BatchNorm, as mmdetection's from-scratch recipes (``*_gn-all_scratch_*``) do. The nuclei
    images come from several microscopes and stains (dark fluorescence, bright stained tissue):
    BatchNorm's running statistics, averaged over them, fit none, and a BatchNorm model that
    found 82 % of the val nuclei among its proposals with batch statistics found 23 % with the
    running ones (the first preset, seed 0, 2026-11-30). Anchors of scale 4 (16 px on P2: the median
    nucleus is about 30 px across at :data:`NUCLEI_SCALE`, 8 % are under 16 px), mask heads
    of 128 channels. The
    cascade keeps its stage IoUs, stds, class-agnostic regression and loss weights.
    """
    values = {
        **_BCCD_BACKBONE,
        "backbone.norm": "GN",
        "num_classes": len(NUCLEI_CLASSES),
        "class_names": NUCLEI_CLASSES,
        "rpn_head.feat_channels": 128,
        "rpn_head.anchor_generator.scales": (4.0,),
        "rpn_head.train_proposal.nms_pre": 1000,
        "rpn_head.train_proposal.max_per_img": 500,
        "rpn_head.test_proposal.nms_pre": 500,
        "rpn_head.test_proposal.max_per_img": 300,
        "rpn_head.loss_bbox": SmoothL1LossConfig(beta=1 / 9),
    }
    roi = base.roi_head
    if isinstance(roi, CascadeRoIHeadConfig):
        for i, stage in enumerate(roi.stages):
            values.update(_stage_overrides(f"roi_head.stages.{i}.", stage.mask_branch is not None))
    else:
        values.update(_stage_overrides("roi_head.", roi.mask_branch is not None))
        values["roi_head.bbox_head.loss_bbox"] = SmoothL1LossConfig(beta=1 / 9)
    return override(base, values)


def _nuclei_experiment(name: str, base: TwoStageDetectorConfig, mask: bool) -> ExperimentConfig:
    # lr 0.01: with the GroupNorm backbone, 0.02 trained unstably (seed 0, 2026-11-30: val segm
    # mAP 0.003 after 8 epochs against 0.268 at 0.01; torchvision's twin at 0.02 spiked to a
    # loss of 148 and ended at 0.000).
    runner = bccd_runner(coco_experiment(name, base).runner, NUCLEI_LR)
    runner = dataclasses.replace(
        runner,
        max_epochs=NUCLEI_EPOCHS,
        evaluation=EvaluationHookConfig(interval=8, save_best="segm_mAP" if mask else "bbox_mAP"),
    )
    # Without clipping, the first run of this preset (BatchNorm, lr 0.02, seed 0, 2026-11-30)
    # blew up at iteration 43, in the warmup (lr 0.009): loss_cls 0.3 -> 1.8 -> inf;
    # torchvision's MaskRCNN trained the same way turned NaN by iteration 90. Nuclei images hold
    # up to ~100 small instances; a global L2 clip at 35 (mmdetection's usual value) bounds the
    # spike that starts it.
    runner = override(
        runner, {"lr.step": (16, 22), "optimizer_hook.grad_clip": GradClipConfig(35.0)}
    )
    return ExperimentConfig(
        name=name,
        model=nuclei_model(base),
        data=nuclei_data(),
        runner=runner,
        work_dir=f"work_dirs/{name}",
    )


def mask_rcnn_nuclei_preset() -> ExperimentConfig:
    """Mask R-CNN R-18-FPN from scratch on the bundled nuclei, about 15 minutes on 2 CPU cores
    (:func:`nuclei_model`; 24 epochs of 30 iterations, SGD lr 0.01, 100-iteration warmup,
    steps at epochs 16 and 22 (the 1x shape), gradients clipped at L2 norm 35; val segm mAP
    every 8 epochs, best kept)."""
    return _nuclei_experiment("mask_rcnn_r18_fpn_nuclei_cpu", MASK_RCNN_R50_FPN, True)


def cascade_nuclei_preset(mask: bool = False) -> ExperimentConfig:
    """Cascade (``mask``: Cascade Mask) R-CNN R-18-FPN from scratch on the bundled nuclei,
    with the Mask R-CNN nuclei preset's settings and schedule."""
    if mask:
        return _nuclei_experiment(
            "cascade_mask_rcnn_r18_fpn_nuclei_cpu", CASCADE_MASK_RCNN_R50_FPN, True
        )
    return _nuclei_experiment("cascade_rcnn_r18_fpn_nuclei_cpu", CASCADE_RCNN_R50_FPN, False)


# Presets of experiments.mask_rcnn and experiments.cascade_rcnn (the first is the default).
INSTANCE_PRESETS: dict[str, dict[str, Callable[..., ExperimentConfig]]] = {
    "mask_rcnn": {"nuclei": mask_rcnn_nuclei_preset, "coco": mask_rcnn_coco_preset},
    "cascade_rcnn": {
        "nuclei": cascade_nuclei_preset,
        "nuclei-mask": lambda: cascade_nuclei_preset(mask=True),
        "coco": cascade_coco_preset,
        "coco-mask": lambda data_root="data/coco": cascade_coco_preset(data_root, mask=True),
    },
}
