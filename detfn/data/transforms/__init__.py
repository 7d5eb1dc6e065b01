"""Transforms: pure ``(sample, generator) -> sample`` functions built from frozen configs."""

from detfn.data.transforms.base import Transform, TransformConfig, build_pipeline, compose
from detfn.data.transforms.crop import RandomCropConfig, crop_sample
from detfn.data.transforms.expand import ExpandConfig, expand_sample
from detfn.data.transforms.flip import RandomFlipConfig, flip_boxes, flip_sample
from detfn.data.transforms.loading import LoadImageConfig, load_image, read_rgb
from detfn.data.transforms.min_iou_crop import (
    MinIoURandomCropConfig,
    crop_to_patch,
    min_iou_crop,
)
from detfn.data.transforms.normalize import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    NormalizeConfig,
    normalize_image,
)
from detfn.data.transforms.pad import PadConfig, pad_image
from detfn.data.transforms.photometric import PhotoMetricDistortionConfig
from detfn.data.transforms.presets import default_test_pipeline, default_train_pipeline
from detfn.data.transforms.resize import ResizeConfig, rescale_size, resize_sample
from detfn.data.transforms.rng import item_generator

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ExpandConfig",
    "LoadImageConfig",
    "MinIoURandomCropConfig",
    "NormalizeConfig",
    "PadConfig",
    "PhotoMetricDistortionConfig",
    "RandomCropConfig",
    "RandomFlipConfig",
    "ResizeConfig",
    "Transform",
    "TransformConfig",
    "build_pipeline",
    "compose",
    "crop_sample",
    "crop_to_patch",
    "default_test_pipeline",
    "default_train_pipeline",
    "expand_sample",
    "flip_boxes",
    "flip_sample",
    "item_generator",
    "load_image",
    "min_iou_crop",
    "normalize_image",
    "pad_image",
    "read_rgb",
    "rescale_size",
    "resize_sample",
]
