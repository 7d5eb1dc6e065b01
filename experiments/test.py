"""Evaluate a checkpoint: ``python -m experiments.test --config <work_dir>/config.json --checkpoint <file>``.

Works for every detector from its saved config. Evaluates on the dataset the config names
(``data.test``, else ``data.val``), or on a COCO-format set given by ``--ann-file`` /
``--img-prefix``, mapping the model's classes to the set's categories by name; prints
pycocotools' table, writes the results json (original category ids) with ``--out``, and draws
predictions as PNGs with ``--show-dir``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from detfn.apis import load_detector, resolve_device
from detfn.apis.cli_errors import run_cli
from detfn.apis.evaluate_dist import evaluate_dataset_on_ranks
from detfn.apis.tta import predict_fn_for
from detfn.data import CocoDatasetConfig, build_loader
from detfn.data.transforms.loading import LoadImageConfig, read_rgb
from detfn.dist import get_rank, get_world_size, is_main_process
from detfn.dist.launch import default_launcher, distributed
from detfn.registry import build
from detfn.structures import Batch, ImageDetections
from detfn.visualization import draw_detections, save_png


@dataclass(frozen=True)
class TestArgs:
    config: str
    """the run's config.json"""
    checkpoint: str
    """a checkpoint file (epoch_N.pth, latest.pth, best_*.pth)"""
    split: Literal["test", "val"] = "test"
    """which dataset of the config to evaluate (test falls back to val)"""
    ann_file: str | None = None
    """evaluate on this COCO json instead (with --img-prefix)"""
    img_prefix: str | None = None
    """image folder of --ann-file"""
    out: str | None = None
    """write the COCO results json here"""
    show_dir: str | None = None
    """draw predictions of every image as PNGs into this folder"""
    show_score_thr: float = 0.3
    """score threshold for drawn boxes"""
    classwise: bool = True
    """print the per-class AP table"""
    device: str = "auto"
    launcher: Literal["none", "pytorch", "slurm"] = "none"
    """how processes join (torchrun: pytorch); each evaluates a shard, rank 0 prints"""
    batch_size: int = 1
    num_workers: int = 2
    tta: bool = False
    """test-time augmentation: flip (and the pipeline's TestTimeAugConfig scales), merged"""


def dataset_config(args: TestArgs, detector) -> CocoDatasetConfig:
    """The config of the set to evaluate, with the training run's test pipeline."""
    data = detector.cfg.data
    base = (data.test or data.val) if args.split == "test" else (data.val or data.test)
    if args.ann_file is None:
        if base is None:
            raise SystemExit(
                f"{args.config}: the config names no test or val dataset; give --ann-file"
            )
        return base
    if args.img_prefix is None:
        raise SystemExit("--ann-file needs --img-prefix (the folder of its images)")
    pipeline = (LoadImageConfig(), *detector.pipeline)
    # The evaluation maps the model's classes by name, so the set keeps all its categories;
    # a model saved without names falls back to the training config's classes.
    classes = None
    if detector.cfg.model.class_names is None and base is not None:
        classes = getattr(base, "classes", None)
    return CocoDatasetConfig(
        ann_file=args.ann_file,
        img_prefix=args.img_prefix,
        classes=classes,
        pipeline=pipeline,
        test_mode=True,
    )


def drawer(show_dir: Path, class_names, score_thr: float):
    """A callback that writes one PNG per image with its predictions in original pixels."""

    def draw(batch: Batch, dets: list[ImageDetections]) -> None:
        for meta, det in zip(batch.metas, dets):
            image = read_rgb(meta.file_name)
            drawn = draw_detections(
                image, det.boxes, det.labels, det.scores, class_names, score_thr, masks=det.masks
            )
            save_png(drawn, show_dir / f"{Path(meta.file_name).stem}.png")

    return draw


def main(args: TestArgs) -> dict:
    launcher = args.launcher if args.launcher != "none" else default_launcher()
    with distributed(launcher, device=resolve_device(args.device)):
        return evaluate_checkpoint(args)


def evaluate_checkpoint(args: TestArgs) -> dict:
    """Evaluate on this process's shard; rank 0 prints the metrics every rank returns."""
    detector = load_detector(args.config, args.checkpoint, args.device)
    cfg = dataset_config(args, detector)
    dataset = build(cfg, seed=detector.cfg.seed)
    loader_cfg = dataclasses.replace(
        detector.cfg.data.test_loader, batch_size=args.batch_size, num_workers=args.num_workers
    )
    on_batch = None
    if args.show_dir is not None:
        on_batch = drawer(Path(args.show_dir), detector.class_names, args.show_score_thr)
    metrics = evaluate_dataset_on_ranks(
        predict_fn_for(detector.model, cfg.pipeline, args.tta),
        detector.params,
        detector.buffers,
        dataset,
        build_loader(dataset, loader_cfg, rank=get_rank(), world_size=get_world_size()),
        class_names=detector.cfg.model.class_names,
        device=detector.device,
        classwise=args.classwise,
        results_json=args.out,
        on_batch=on_batch,
    )
    if not is_main_process():
        return metrics
    print(metrics["bbox_summary"])
    if args.classwise:
        print(metrics.get("bbox_classwise", ""))
    print("bbox_mAP_copypaste:", metrics["bbox_mAP_copypaste"])
    return metrics


if __name__ == "__main__":
    run_cli(lambda: main(tyro.cli(TestArgs)))
