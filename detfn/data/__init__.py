"""Datasets, transforms, batching and sampling.

Importing this package registers every data config with :mod:`detfn.registry`:
``build(CocoDatasetConfig(...), seed=0)`` gives a dataset, ``build_loader(dataset, LoaderConfig())``
a loader of :class:`Batch`.
"""

from detfn.data import bundled
from detfn.data.bundled import (
    BCCD_CLASSES,
    NUCLEI_CLASSES,
    bccd_paths,
    bccd_uris,
    bccd_voc_paths,
    bundled_root,
    nuclei_uris,
    resolve_path,
)
from detfn.data.coco import CocoDataset, CocoDatasetConfig, load_coco_json, parse_coco
from detfn.data.collate import collate
from detfn.data.dataset import DatasetConfig, DetectionDataset, coco_from_dict
from detfn.data.errors import AnnotationError, BadImageError, DataWarning, Skipped
from detfn.data.group_sampler import plan_batches
from detfn.data.loader import DetectionLoader, LoaderConfig, build_loader
from detfn.data.masks import decode_masks, masks_to_boxes
from detfn.data.presets import bccd_dataset_config, nuclei_dataset_config
from detfn.data.records import ImageRecord
from detfn.data.sample import Sample
from detfn.data.transforms import *  # noqa: F403 - the transforms' public names
from detfn.data.transforms import __all__ as _transform_names
from detfn.data.voc import VOC_CLASSES, VOCDataset, VOCDatasetConfig
from detfn.data.wrappers import (
    ConcatDataset,
    ConcatDatasetConfig,
    RepeatDataset,
    RepeatDatasetConfig,
)

__all__ = [
    "BCCD_CLASSES",
    "NUCLEI_CLASSES",
    "VOC_CLASSES",
    "AnnotationError",
    "BadImageError",
    "CocoDataset",
    "CocoDatasetConfig",
    "ConcatDataset",
    "ConcatDatasetConfig",
    "DataWarning",
    "DatasetConfig",
    "DetectionDataset",
    "DetectionLoader",
    "ImageRecord",
    "LoaderConfig",
    "RepeatDataset",
    "RepeatDatasetConfig",
    "Sample",
    "Skipped",
    "VOCDataset",
    "VOCDatasetConfig",
    "bccd_dataset_config",
    "bccd_paths",
    "bccd_uris",
    "bccd_voc_paths",
    "build_loader",
    "bundled",
    "bundled_root",
    "coco_from_dict",
    "decode_masks",
    "masks_to_boxes",
    "nuclei_dataset_config",
    "nuclei_uris",
    "collate",
    "load_coco_json",
    "parse_coco",
    "plan_batches",
    "resolve_path",
    *_transform_names,
]
