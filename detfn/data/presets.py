"""Ready dataset configs for the bundled BCCD set (portable ``bundled://`` paths)."""

from __future__ import annotations

from typing import Literal

from detfn.data.bundled import BCCD_CLASSES, bccd_uris
from detfn.data.coco import CocoDatasetConfig
from detfn.data.transforms.base import TransformConfig
from detfn.data.transforms.presets import default_test_pipeline, default_train_pipeline

__all__ = ["bccd_dataset_config"]


def bccd_dataset_config(
    split: Literal["train", "val", "test", "trainval"] = "train",
    pipeline: tuple[TransformConfig, ...] | None = None,
    test_mode: bool | None = None,
) -> CocoDatasetConfig:
    """BCCD's COCO json for ``split``; train splits get the default train pipeline and
    filtering, val/test splits the test pipeline and ``test_mode``."""
    training = split in ("train", "trainval")
    if pipeline is None:
        pipeline = default_train_pipeline() if training else default_test_pipeline()
    ann_file, img_prefix = bccd_uris(split)
    return CocoDatasetConfig(
        ann_file=ann_file,
        img_prefix=img_prefix,
        classes=BCCD_CLASSES,
        pipeline=pipeline,
        test_mode=not training if test_mode is None else test_mode,
    )
