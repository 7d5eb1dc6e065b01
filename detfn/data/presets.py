"""Ready dataset configs for the bundled BCCD and nuclei sets (portable ``bundled://`` paths)."""

from __future__ import annotations

from typing import Literal

from detfn.data.bundled import BCCD_CLASSES, NUCLEI_CLASSES, bccd_uris, nuclei_uris
from detfn.data.coco import CocoDatasetConfig
from detfn.data.transforms.base import TransformConfig
from detfn.data.transforms.presets import default_test_pipeline, default_train_pipeline

__all__ = ["NUCLEI_SCALE", "bccd_dataset_config", "nuclei_dataset_config"]

# The nuclei images are 256x256 and 320x256; twice that keeps the many small nuclei (median
# 168 px) above the stride-4 level while a CPU still trains on it.
NUCLEI_SCALE = (640, 512)


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


def nuclei_dataset_config(
    split: Literal["train", "val"] = "train",
    pipeline: tuple[TransformConfig, ...] | None = None,
    test_mode: bool | None = None,
    rle: bool = False,
    scale: tuple[int, int] = NUCLEI_SCALE,
) -> CocoDatasetConfig:
    """The bundled DSB2018 nuclei subset with instance masks (``with_mask=True``).

    ``train`` gets the default train pipeline at ``scale`` and filtering, ``val`` the test
    pipeline and ``test_mode``. ``rle`` reads the RLE json instead of the polygon json.
    """
    training = split == "train"
    if pipeline is None:
        pipeline = default_train_pipeline(scale) if training else default_test_pipeline(scale)
    ann_file, img_prefix = nuclei_uris(split, rle)
    return CocoDatasetConfig(
        ann_file=ann_file,
        img_prefix=img_prefix,
        classes=NUCLEI_CLASSES,
        pipeline=pipeline,
        test_mode=not training if test_mode is None else test_mode,
        with_mask=True,
    )
