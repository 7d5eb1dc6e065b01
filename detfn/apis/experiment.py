"""The experiment config: model + data + runner (the presets live in :mod:`detfn.apis.presets`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from detfn.config import Config, check
from detfn.data import (
    CocoDatasetConfig,
    DatasetConfig,
    LoaderConfig,
)
from detfn.engine import RunnerConfig
from detfn.models.detectors import DetectorConfigs, TwoStageDetectorConfig

__all__ = ["AutoScaleLrConfig", "DataConfig", "ExperimentConfig", "eval_loader"]


def eval_loader() -> LoaderConfig:
    # mmdetection tests one image per GPU, in dataset order.
    return LoaderConfig(batch_size=1, num_workers=2, shuffle=False, group_by_aspect=False)


@dataclass(frozen=True)
class DataConfig(Config):
    """Datasets and loaders (mmdetection's ``data`` dict).

    Attributes:
        train / val / test: dataset configs; ``val`` is evaluated during training, ``test`` by
            ``experiments.test`` unless a flag names another.
        train_loader: batch size (images per GPU), workers, sampler.
        test_loader: the loader of val and test.
    """

    train: DatasetConfig = field(default_factory=CocoDatasetConfig)
    val: DatasetConfig | None = None
    test: DatasetConfig | None = None
    train_loader: LoaderConfig = field(default_factory=LoaderConfig)
    test_loader: LoaderConfig = field(default_factory=eval_loader)


@dataclass(frozen=True)
class AutoScaleLrConfig(Config):
    """mmdetection's ``auto_scale_lr``: with ``enable``, the optimizer's lr is scaled by
    ``world_size * images_per_gpu / base_batch_size`` (the linear scaling rule; the configs'
    lr is stated for 8 GPUs x 2 images = 16)."""

    enable: bool = False
    base_batch_size: int = 16

    def __post_init__(self) -> None:
        check(
            self,
            "base_batch_size",
            self.base_batch_size >= 1,
            f"must be >= 1, got {self.base_batch_size}",
        )


@dataclass(frozen=True)
class ExperimentConfig(Config):
    """One training run: what to train, on what, how, and where to write.

    Attributes:
        name: run name (work dir name and wandb run name).
        model: the detector: any detector config (the JSON ``type`` tag, or the module of
            ``experiments`` that trains it, chooses which).
        data: datasets and loaders.
        runner: optimizer, schedule, hooks, resume / load_from.
        work_dir: config.json, log, metrics.jsonl, checkpoints.
        seed: seeds torch, NumPy, Python and the data pipeline; None: rank 0 draws one from the
            OS's entropy and broadcasts it, and the config the run saves records it.
        device: "cpu", "cuda", "cuda:1" or "auto" (cuda when available).
        deterministic: mmdetection's ``--deterministic``: cuDNN deterministic, no cuDNN
            benchmark, torch's deterministic algorithms (ops without one warn: RoIAlign's CUDA
            backward accumulates atomically).
        auto_scale_lr: scale the lr with the total batch size (off by default, as mmdetection).
    """

    name: str = "faster_rcnn_r50_fpn_1x_coco"
    model: DetectorConfigs = field(default_factory=TwoStageDetectorConfig)
    data: DataConfig = field(default_factory=DataConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    work_dir: str = "work_dirs/faster_rcnn_r50_fpn_1x_coco"
    seed: int | None = 0
    device: str = "auto"
    deterministic: bool = False
    auto_scale_lr: AutoScaleLrConfig = field(default_factory=AutoScaleLrConfig)

    def __post_init__(self) -> None:
        check(self, "name", bool(self.name), "must not be empty")
        check(self, "seed", self.seed is None or self.seed >= 0, f"must be >= 0, got {self.seed}")
        check(
            self,
            "device",
            self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"),
            f"must be 'auto', 'cpu', 'cuda[:i]' or 'mps', got {self.device!r}",
        )
        classes = getattr(self.data.train, "classes", None)
        if classes is not None and len(classes) != self.model.num_classes:
            raise ValueError(
                f"ExperimentConfig.model.num_classes={self.model.num_classes} "
                f"but data.train.classes has {len(classes)} names {classes}: set them to agree"
            )
        names = self.model.class_names
        if classes is not None and names is not None and tuple(classes) != tuple(names):
            raise ValueError(
                f"ExperimentConfig.model.class_names={tuple(names)} differ from "
                f"data.train.classes={tuple(classes)}: the labels would mean other classes"
            )
