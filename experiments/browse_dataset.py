"""Write PNGs of dataset samples after the train pipeline, boxes and class names drawn.

    python -m experiments.browse_dataset --out-dir work_dirs/browse --num 8 --split train

Shows what the model sees: resized, flipped, padded images (normalization undone for display),
with instance masks as translucent fills when the dataset loads them. By default it browses the
bundled BCCD set; ``--dataset nuclei`` the bundled nuclei set with its masks;
``--dataset-config x.json`` any dataset config saved as JSON (with a ``"type"`` tag, or a bare
``CocoDatasetConfig``).
"""

from __future__ import annotations

import json
import pathlib
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
import tyro
from torchvision.io import write_png
from torchvision.utils import draw_bounding_boxes

from detfn.config import from_dict
from detfn.data import (
    CocoDatasetConfig,
    DatasetConfig,
    NormalizeConfig,
    Sample,
    bccd_dataset_config,
    default_train_pipeline,
    nuclei_dataset_config,
)
from detfn.registry import build
from detfn.visualization import draw_masks

__all__ = ["BrowseArgs", "main", "render"]

# Distinct colours for the first classes; later classes cycle through them.
PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c")


@dataclass(frozen=True)
class BrowseArgs:
    """Arguments of the dataset browser."""

    out_dir: pathlib.Path = pathlib.Path("work_dirs/browse")
    """folder the PNGs are written to"""
    num: int = 8
    """how many samples to write"""
    split: Literal["train", "val", "test", "trainval"] = "train"
    """split of the bundled set (ignored with --dataset-config; nuclei has train and val)"""
    dataset: Literal["bccd", "nuclei"] = "bccd"
    """bundled set to browse (ignored with --dataset-config)"""
    dataset_config: pathlib.Path | None = None
    """a dataset config JSON to browse instead of BCCD"""
    seed: int = 0
    """seed of the augmentation draws"""
    epoch: int = 0
    """epoch of the augmentation draws"""


def _dataset_config(args: BrowseArgs) -> DatasetConfig:
    if args.dataset_config is None and args.dataset == "nuclei":
        if args.split not in ("train", "val"):
            raise SystemExit(f"--split: the nuclei set has train and val, got {args.split!r}")
        return nuclei_dataset_config(args.split, test_mode=False)
    if args.dataset_config is None:
        return bccd_dataset_config(args.split, pipeline=default_train_pipeline(), test_mode=False)
    data = json.loads(args.dataset_config.read_text())
    return from_dict(data, DatasetConfig if "type" in data else CocoDatasetConfig)


def _normalize_of(cfg: DatasetConfig) -> NormalizeConfig | None:
    """The Normalize step of the (innermost) pipeline, to undo it for display."""
    inner = getattr(cfg, "dataset", None) or next(iter(getattr(cfg, "datasets", ())), None)
    if inner is not None:
        return _normalize_of(inner)
    steps = [t for t in getattr(cfg, "pipeline", ()) if isinstance(t, NormalizeConfig)]
    return steps[-1] if steps else None


def render(sample: Sample, class_names: tuple[str, ...], norm: NormalizeConfig | None):
    """Tensor[3, H, W] uint8 of the sample with its masks (translucent), boxes and class names
    drawn; masks cover the unpadded image, so they are drawn on its top-left ``img_shape``."""
    image = sample.image.to(torch.float32)
    if norm is not None:
        image = image * torch.tensor(norm.std).view(3, 1, 1) + torch.tensor(norm.mean).view(3, 1, 1)
        if not norm.to_rgb:
            image = image.flip(0)
    image = image.clamp(0, 255).round().to(torch.uint8)
    labels = sample.labels.tolist()
    names = [class_names[k] for k in labels]
    colors = [PALETTE[k % len(PALETTE)] for k in labels]
    if sample.masks is not None and len(labels):
        height, width = sample.masks.shape[1:]
        rgb = [tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in colors]
        image = image.clone()
        image[:, :height, :width] = draw_masks(image[:, :height, :width], sample.masks, rgb)
    drawn = draw_bounding_boxes(image, sample.boxes, labels=names, colors=colors, width=2)
    if len(sample.ignore_boxes):
        drawn = draw_bounding_boxes(drawn, sample.ignore_boxes, colors="#808080", width=1)
    return drawn


def main(args: BrowseArgs) -> list[pathlib.Path]:
    """Write ``args.num`` PNGs and return their paths."""
    cfg = _dataset_config(args)
    dataset = build(cfg, seed=args.seed)
    norm = _normalize_of(cfg)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(min(args.num, len(dataset))):
        sample = dataset.get(index, epoch=args.epoch)
        path = args.out_dir / f"{index:04d}_{pathlib.Path(sample.meta.file_name).stem}.png"
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its codecs for torchcodec
            warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
            write_png(render(sample, dataset.class_names, norm), str(path))
        written.append(path)
        masks = "" if sample.masks is None else f", {len(sample.masks)} masks"
        print(f"{path}  ({len(sample.boxes)} boxes{masks}, flip={sample.meta.flip_direction})")
    return written


if __name__ == "__main__":
    main(tyro.cli(BrowseArgs))
