"""mmdetection's ``faster_rcnn_r50_fpn_1x_coco`` train and test pipelines as config values."""

from __future__ import annotations

from detfn.data.transforms.base import TransformConfig
from detfn.data.transforms.flip import RandomFlipConfig
from detfn.data.transforms.loading import LoadImageConfig
from detfn.data.transforms.normalize import IMAGENET_MEAN, IMAGENET_STD, NormalizeConfig
from detfn.data.transforms.pad import PadConfig
from detfn.data.transforms.resize import ResizeConfig

__all__ = ["default_test_pipeline", "default_train_pipeline"]


def default_train_pipeline(
    scale: tuple[int, int] = (1333, 800), flip_prob: float = 0.5
) -> tuple[TransformConfig, ...]:
    """LoadImage, Resize(keep_ratio), RandomFlip, Normalize (ImageNet RGB), Pad(32)."""
    return (
        LoadImageConfig(),
        ResizeConfig(scale=(scale,), keep_ratio=True),
        RandomFlipConfig(prob=flip_prob),
        NormalizeConfig(mean=IMAGENET_MEAN, std=IMAGENET_STD, to_rgb=True),
        PadConfig(size_divisor=32),
    )


def default_test_pipeline(scale: tuple[int, int] = (1333, 800)) -> tuple[TransformConfig, ...]:
    """The train pipeline without the flip (mmdetection's MultiScaleFlipAug with flip=False)."""
    return (
        LoadImageConfig(),
        ResizeConfig(scale=(scale,), keep_ratio=True),
        NormalizeConfig(mean=IMAGENET_MEAN, std=IMAGENET_STD, to_rgb=True),
        PadConfig(size_divisor=32),
    )
