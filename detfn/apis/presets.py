"""Experiment presets: each detector's mmdetection 1x COCO recipe and a CPU-sized BCCD run.

``coco`` presets are mmdetection 2.x's configs exactly (model, ``coco_detection``,
``schedule_1x``, ``default_runtime``): every default of the component configs is that recipe, so
a preset only names the model, the dataset paths and what the recipe itself overrides (RetinaNet's
lr 0.01). ``bccd`` presets derive from them, with :func:`detfn.config.override`, a from-scratch
run on the bundled BCCD blood cells sized for a 2-core CPU. :data:`PRESETS` maps each detector
to its presets, for ``experiments`` (one shared CLI).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from detfn.apis.experiment import DataConfig, ExperimentConfig, eval_loader
from detfn.config import override
from detfn.data import (
    BCCD_CLASSES,
    CocoDatasetConfig,
    LoaderConfig,
    NormalizeConfig,
    bccd_dataset_config,
)
from detfn.data.transforms.presets import default_test_pipeline, default_train_pipeline
from detfn.engine import RunnerConfig
from detfn.engine.hooks.checkpoint import CheckpointHookConfig
from detfn.engine.hooks.evaluation import EvaluationHookConfig
from detfn.engine.hooks.logger import TextLoggerHookConfig
from detfn.engine.hooks.optimizer import GradClipConfig
from detfn.engine.hooks.wandb import WandbHookConfig
from detfn.engine.optim import ParamGroupsConfig
from detfn.engine.schedules import StepSchedule
from detfn.models.dense_heads.fcos_targets import INF
from detfn.models.detectors import (
    ATSS_R50_FPN,
    FASTER_RCNN_R50_FPN,
    FCOS_R50_CAFFE_FPN_GN_HEAD,
    RETINANET_R50_FPN,
    DetectorConfig,
)
from detfn.models.losses import GIoULossConfig, SmoothL1LossConfig

__all__ = [
    "ATSS_R50_FPN_1X_COCO",
    "CAFFE_NORMALIZE",
    "FASTER_RCNN_R50_FPN_1X_COCO",
    "FCOS_R50_CAFFE_FPN_GN_HEAD_1X_COCO",
    "HALF_SIZE_REGRESS_RANGES",
    "PRESETS",
    "RETINANET_R50_FPN_1X_COCO",
    "bccd_cpu_preset",
    "bccd_data",
    "bccd_experiment",
    "bccd_runner",
    "coco_experiment",
    "atss_bccd_preset",
    "atss_coco_preset",
    "coco_preset",
    "fcos_bccd_preset",
    "fcos_coco_preset",
    "retinanet_bccd_preset",
    "retinanet_coco_preset",
]

# The backbone settings every bccd preset shares: ResNet-18 from scratch (no ImageNet weights can
# be downloaded here) with trainable BatchNorm (frozen statistics only suit pretrained weights)
# and torchvision's initialization rules, which train faster from scratch than mmdetection's.
_BCCD_BACKBONE = {
    "backbone.depth": 18,
    "backbone.norm_eval": False,
    "backbone.frozen_stages": -1,
    "backbone.zero_init_residual": False,
    "neck.conv_init": "lecun_uniform",
    "neck.in_channels": (64, 128, 256, 512),
    "neck.out_channels": 128,
    "num_classes": len(BCCD_CLASSES),
    "class_names": BCCD_CLASSES,
}


def coco_experiment(
    name: str, model: DetectorConfig, data_root: str = "data/coco", lr: float | None = None
) -> ExperimentConfig:
    """``model`` trained with mmdetection's 1x schedule on a COCO 2017 tree at ``data_root``;
    ``lr`` overrides schedule_1x's 0.02 where the recipe does."""
    root = data_root.rstrip("/")

    def coco_split(split: str, train: bool) -> CocoDatasetConfig:
        return CocoDatasetConfig(
            ann_file=f"{root}/annotations/instances_{split}2017.json",
            img_prefix=f"{root}/{split}2017",
            pipeline=default_train_pipeline() if train else default_test_pipeline(),
            test_mode=not train,
        )

    runner = RunnerConfig(
        evaluation=EvaluationHookConfig(interval=1, save_best="auto"),
        text_logger=TextLoggerHookConfig(interval=50),
        wandb=WandbHookConfig(project="detfn", mode="auto"),
    )
    if lr is not None:
        runner = override(runner, "optimizer.lr", lr)
    return ExperimentConfig(
        name=name,
        model=model,
        data=DataConfig(
            train=coco_split("train", True),
            val=coco_split("val", False),
            test=coco_split("val", False),
        ),
        runner=runner,
        work_dir=f"work_dirs/{name}",
    )


def coco_preset(data_root: str = "data/coco") -> ExperimentConfig:
    """mmdetection's ``faster_rcnn_r50_fpn_1x_coco`` on a COCO 2017 tree at ``data_root``."""
    return coco_experiment("faster_rcnn_r50_fpn_1x_coco", FASTER_RCNN_R50_FPN, data_root)


def retinanet_coco_preset(data_root: str = "data/coco") -> ExperimentConfig:
    """mmdetection's ``retinanet_r50_fpn_1x_coco`` (schedule_1x with lr 0.01)."""
    return coco_experiment("retinanet_r50_fpn_1x_coco", RETINANET_R50_FPN, data_root, lr=0.01)


# caffe-style (detectron) weights take BGR images minus the mean, unscaled
CAFFE_NORMALIZE = NormalizeConfig(
    mean=(102.9801, 115.9465, 122.7717), std=(1.0, 1.0, 1.0), to_rgb=False
)


def with_normalize(cfg: ExperimentConfig, normalize: NormalizeConfig) -> ExperimentConfig:
    """``cfg`` whose every dataset pipeline normalizes with ``normalize``."""
    updates = {}
    for split in ("train", "val", "test"):
        dataset = getattr(cfg.data, split)
        if dataset is not None:
            updates[f"data.{split}.pipeline"] = tuple(
                normalize if isinstance(t, NormalizeConfig) else t for t in dataset.pipeline
            )
    return override(cfg, updates)


def fcos_coco_preset(data_root: str = "data/coco") -> ExperimentConfig:
    """mmdetection's ``fcos_r50_caffe_fpn_gn-head_1x_coco``: lr 0.01 with biases at twice the lr
    and no weight decay, gradients clipped at norm 35, constant warmup 500 iterations at 1/3,
    caffe normalization (BGR, mean only)."""
    cfg = coco_experiment(
        "fcos_r50_caffe_fpn_gn-head_1x_coco", FCOS_R50_CAFFE_FPN_GN_HEAD, data_root, lr=0.01
    )
    return override(
        with_normalize(cfg, CAFFE_NORMALIZE),
        {
            "runner.optimizer.param_groups": ParamGroupsConfig(
                bias_lr_mult=2.0, bias_decay_mult=0.0
            ),
            "runner.optimizer_hook.grad_clip": GradClipConfig(max_norm=35.0, norm_type=2.0),
            "runner.lr.warmup": "constant",
            "runner.lr.warmup_ratio": 1.0 / 3.0,
        },
    )


def atss_coco_preset(data_root: str = "data/coco") -> ExperimentConfig:
    """mmdetection's ``atss_r50_fpn_1x_coco`` (schedule_1x with lr 0.01, no clipping)."""
    return coco_experiment("atss_r50_fpn_1x_coco", ATSS_R50_FPN, data_root, lr=0.01)


FASTER_RCNN_R50_FPN_1X_COCO = coco_preset()
RETINANET_R50_FPN_1X_COCO = retinanet_coco_preset()
FCOS_R50_CAFFE_FPN_GN_HEAD_1X_COCO = fcos_coco_preset()
ATSS_R50_FPN_1X_COCO = atss_coco_preset()


def bccd_data(scale: tuple[int, int] = (320, 240)) -> DataConfig:
    """The bundled BCCD splits at ``scale`` (half size by default), 2 images per batch."""
    return DataConfig(
        train=bccd_dataset_config("train", pipeline=default_train_pipeline(scale=scale)),
        val=bccd_dataset_config("val", pipeline=default_test_pipeline(scale=scale)),
        test=bccd_dataset_config("test", pipeline=default_test_pipeline(scale=scale)),
        train_loader=LoaderConfig(batch_size=2, num_workers=2),
        test_loader=dataclasses.replace(eval_loader(), batch_size=2),
    )


def bccd_runner(base: RunnerConfig, lr: float) -> RunnerConfig:
    """8 epochs (824 iterations of 2 images) at ``lr`` with a 100-iteration linear warmup and
    steps at epochs 6 and 7 (the 1x shape, 8/12 and 11/12, compressed)."""
    return dataclasses.replace(
        override(base, "optimizer.lr", lr),
        max_epochs=8,
        lr=StepSchedule(step=(6, 7), warmup="linear", warmup_iters=100, warmup_ratio=0.001),
        checkpoint=CheckpointHookConfig(interval=1, max_keep_ckpts=2),
        evaluation=EvaluationHookConfig(interval=4, save_best="auto"),
        text_logger=TextLoggerHookConfig(interval=10),
        wandb=WandbHookConfig(project="detfn", mode="auto"),
    )


def bccd_experiment(
    name: str, model: DetectorConfig, runner: RunnerConfig, data: DataConfig | None = None
) -> ExperimentConfig:
    """``model`` on ``data`` (default :func:`bccd_data`) with ``runner``, writing to
    ``work_dirs/<name>``."""
    data = bccd_data() if data is None else data
    return ExperimentConfig(
        name=name, model=model, data=data, runner=runner, work_dir=f"work_dirs/{name}"
    )


# The Faster R-CNN bccd preset's images: 5/8 of BCCD's 640x480. Chosen when its step became
# fast enough (2026-12-01, issue 12): one run each, seed 0, BCCD val bbox mAP 0.576 against 0.548
# at 320x240, with 1.4x the step time; 320x240 with a 256-channel FPN and adaptive RoIAlign
# sampling gave 0.556 at 1.9x, 480x360 gave 0.566.
BCCD_FASTER_RCNN_SCALE = (400, 300)


def bccd_cpu_preset() -> ExperimentConfig:
    """Faster R-CNN R-18-FPN from scratch on the bundled BCCD, sized for a 2-core CPU.

    Departures from the 1x recipe, each for the CPU budget or for training without ImageNet
    weights (none can be downloaded here):

    * ResNet-18-FPN with 128 channels (not 256) after the backbone, and trainable BatchNorm
      (``norm_eval=False``, ``frozen_stages=-1``): frozen statistics only suit pretrained weights;
    * torchvision's initialization instead of mmdetection's, which trains faster from scratch:
      residual blocks' last norm at 1 (``zero_init_residual=False``), FPN convs LeCun-uniform
      (``conv_init="lecun_uniform"``) and box head fcs with ``nn.Linear``'s default
      (``init="pytorch"``). BCCD val bbox mAP with seeds 0 and 1: 0.568 and 0.567, against
      0.548 and 0.534 with mmdetection's;
    * Smooth L1 (beta 1/9) box losses in both heads, as detectron2 and torchvision use
      (+0.018 bbox mAP on BCCD val against mmdetection 2.x's L1, one run each);
    * images at 5/8 size (400x300 of 640x480, ``BCCD_FASTER_RCNN_SCALE``); anchors of scale 4
      so that the smallest anchor (16 px) still covers platelets;
    * fewer proposals (train 1000 / 500, test 500 / 300), 256 sampled RoIs, and RoIAlign with 2x2
      samples per bin (torchvision's choice) instead of the adaptive count: the adaptive count
      makes RoIAlign's CPU backward the most expensive op of the step;
    * 8 epochs (824 iterations of 2 images), SGD lr 0.02 with a 100-iteration linear warmup and
      steps at epochs 6 and 7 (the 1x shape, 8/12 and 11/12, compressed).
    """
    base = FASTER_RCNN_R50_FPN_1X_COCO
    model = override(
        base.model,
        {
            **_BCCD_BACKBONE,
            "rpn_head.feat_channels": 128,
            "rpn_head.anchor_generator.scales": (4.0,),
            "rpn_head.train_proposal.nms_pre": 1000,
            "rpn_head.train_proposal.max_per_img": 500,
            "rpn_head.test_proposal.nms_pre": 500,
            "rpn_head.test_proposal.max_per_img": 300,
            "roi_head.bbox_roi_extractor.sampling_ratio": 2,
            "roi_head.bbox_head.init": "pytorch",
            "roi_head.sampler.num": 256,
            "rpn_head.loss_bbox": SmoothL1LossConfig(beta=1 / 9),
            "roi_head.bbox_head.loss_bbox": SmoothL1LossConfig(beta=1 / 9),
        },
    )
    runner = bccd_runner(base.runner, 0.02)
    data = bccd_data(scale=BCCD_FASTER_RCNN_SCALE)
    return bccd_experiment("faster_rcnn_r18_fpn_bccd_cpu", model, runner, data)


def retinanet_bccd_preset() -> ExperimentConfig:
    """RetinaNet R-18-FPN from scratch on the bundled BCCD, sized like :func:`bccd_cpu_preset`.

    The same backbone, neck width (128), batches and 8-epoch schedule as the Faster R-CNN preset,
    with images at half size (320x240; the Faster R-CNN preset's are 400x300); RetinaNet's own
    choices kept (P3-P7 with P6 on C5, 4-conv towers, focal loss, L1, no sampling) with:

    * 128-channel towers (the neck's width) with GroupNorm(32) after each conv (``norm="GN"``,
      mmdetection's ``norm_cfg`` of the head): trained from scratch without it, RetinaNet's
      classification loss barely moves in the 100 warmup iterations (1.13 -> 1.00) and the
      8 epochs end at 0.016 val mAP (torchvision's RetinaNet, trained the same way: 0.013);
      with it, the loss falls to 0.43 and the val mAP is 0.072 after those 100 iterations
      alone (2026-11-30, BCCD, seed 0);
    * octave base scale 2 instead of 4, so that the smallest anchors (16, 20, 25 px on stride
      8) still cover platelets in half-size images, as the Faster R-CNN preset's scale 4 does;
    * RetinaNet's half learning rate (0.01, as ``retinanet_r50_fpn_1x_coco`` halves
      schedule_1x's 0.02).
    """
    base = RETINANET_R50_FPN_1X_COCO
    model = override(
        base.model,
        {
            **_BCCD_BACKBONE,
            "bbox_head.feat_channels": 128,
            "bbox_head.norm": "GN",
            "bbox_head.anchor_generator.octave_base_scale": 2.0,
        },
    )
    return bccd_experiment("retinanet_r18_fpn_bccd_cpu", model, bccd_runner(base.runner, 0.01))


# mmdetection's FCOS regress ranges ((-1, 64), (64, 128), ... (512, inf)) halved, for images at
# half size (the bccd presets')
HALF_SIZE_REGRESS_RANGES = ((-1.0, 32.0), (32.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, INF))


def fcos_bccd_preset() -> ExperimentConfig:
    """FCOS R-18-FPN from scratch on the bundled BCCD, sized like :func:`bccd_cpu_preset`.

    The same backbone (pytorch style, trainable BatchNorm, ImageNet RGB normalization, as every
    bccd preset trains from scratch), neck width and schedule, with half-size images (320x240),
    as the RetinaNet and ATSS presets; FCOS's head with
    128-channel GN towers and the head settings of mmdetection's improved variant
    ``fcos_center-normbbox-centeronreg-giou`` (center sampling 1.5, distances in stride units,
    centerness on the regression tower, tower conv biases, GIoU, NMS 0.6; +2.1 COCO AP over the
    base config in mmdetection's table); the FCOS recipe's optimizer (biases at 2x lr without
    decay, clipping at 35, kept for training from scratch) and lr 0.01. With the base config's
    head this preset reached 0.359 BCCD val bbox mAP (seed 0, 2026-11-30) and no platelet.

    Regress ranges at half of mmdetection's, ``(-1, 32), (32, 64), ... (256, inf)``, for the
    half-size images, as the RetinaNet and ATSS bccd presets halve their anchors (the ranges are
    FCOS's anchor sizes): with COCO's ``(-1, 64)`` on P3, every platelet (~20 px here, farthest
    side <= 28 px) and every RBC (~52 px, <= 40 px) is regressed from P3, 17 RBC points to one
    platelet point on the train split, and the trained head drew platelet boxes 1.34x too large
    (median, val), so that 37% of val platelets had no box at IoU 0.5 even at score 0.001
    (platelet AP 0.092, RetinaNet's 0.296). Halved, P3 keeps the platelets and the RBC points
    nearest their centres (1201 platelet / 6583 RBC positives) and P4 takes the rest of the RBCs.
    Trained so (seed 0, 2026-11-30): 0.485 bbox mAP, platelets 0.312 (RBC 0.476, WBC 0.666), with
    platelet boxes 1.05x their size (median) and 88% of val platelets found at IoU 0.5 (58% with
    COCO's ranges).
    """
    base = FCOS_R50_CAFFE_FPN_GN_HEAD_1X_COCO
    model = override(
        base.model,
        {
            **_BCCD_BACKBONE,
            "backbone.style": "pytorch",
            "backbone.norm": "BN",
            "bbox_head.feat_channels": 128,
            "bbox_head.center_sampling": True,
            "bbox_head.center_sample_radius": 1.5,
            "bbox_head.norm_on_bbox": True,
            "bbox_head.centerness_on_reg": True,
            "bbox_head.conv_bias": True,
            "bbox_head.loss_bbox": GIoULossConfig(),
            "bbox_head.test_cfg.iou_threshold": 0.6,
            "bbox_head.regress_ranges": HALF_SIZE_REGRESS_RANGES,
        },
    )
    return bccd_experiment("fcos_r18_fpn_bccd_cpu", model, bccd_runner(base.runner, 0.01))


def atss_bccd_preset() -> ExperimentConfig:
    """ATSS R-18-FPN from scratch on the bundled BCCD, sized like :func:`bccd_cpu_preset`, with
    128-channel GN towers and anchors of octave base scale 4 (32 px on stride 8, half of
    ATSS's 8, as the RetinaNet bccd preset halves its scale for half-size images).

    Gradients clipped at norm 35, the FCOS recipe's value (``atss_r50_fpn_1x_coco`` clips
    nothing): unclipped, the classification loss spiked to 6.2 at the end of the warmup (10-step
    mean gradient norm 34, seed 0, 2026-11-30), leaving RBC classifier weights of norm 14.8
    (platelets 0.7; FCOS's and RetinaNet's runs 0.6-1.3), and the trained head scored 82 of 83
    val platelets higher as RBC than as platelet: platelet AP 0.000. Clipped: bbox mAP 0.490
    (was 0.310), platelet AP 0.350 (seed 0, 2026-11-30).
    """
    base = ATSS_R50_FPN_1X_COCO
    model = override(
        base.model,
        {
            **_BCCD_BACKBONE,
            "bbox_head.feat_channels": 128,
            "bbox_head.anchor_generator.octave_base_scale": 4.0,
        },
    )
    runner = override(
        bccd_runner(base.runner, 0.01),
        "optimizer_hook.grad_clip",
        GradClipConfig(max_norm=35.0, norm_type=2.0),
    )
    return bccd_experiment("atss_r18_fpn_bccd_cpu", model, runner)


# Each detector's presets by name, for the shared CLI of ``experiments``; a ``coco`` preset
# takes the dataset root.
PRESETS: dict[str, dict[str, Callable[..., ExperimentConfig]]] = {
    "faster_rcnn": {"bccd": bccd_cpu_preset, "coco": coco_preset},
    "retinanet": {"bccd": retinanet_bccd_preset, "coco": retinanet_coco_preset},
    "fcos": {"bccd": fcos_bccd_preset, "coco": fcos_coco_preset},
    "atss": {"bccd": atss_bccd_preset, "coco": atss_coco_preset},
}
