"""Train Faster R-CNN: ``python -m experiments.faster_rcnn [--preset bccd|coco] [flags]``.

Presets:

* ``bccd`` (default): R-18-FPN from scratch on the bundled BCCD blood cells (3 classes), sized for
  about 15 minutes on a 2-core CPU; ends by printing the COCO metrics of the val split.
* ``coco``: mmdetection's ``faster_rcnn_r50_fpn_1x_coco`` exactly; give ``--data-root``.

Common knobs have flat flags (``--lr``, ``--batch-size``, ``--epochs``, ``--iters``, ``--work-dir``,
``--seed``, ``--device``, ``--wandb-project``, ``--no-wandb``); every config field is reachable by
its dotted flag (``--runner.optimizer.momentum 0.95``, ``--model.backbone.depth 50``); ``--help``
lists them all with the preset's defaults. ``--config run/config.json`` starts from a saved config
instead of the preset, ``--import my.module`` registers user components first, and
``torchrun --nproc_per_node N -m experiments.faster_rcnn ...`` trains data parallel
(``--launcher slurm`` under ``srun``).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Annotated

import tyro

from detfn.apis import (
    ExperimentConfig,
    bccd_cpu_preset,
    build_experiment,
    coco_preset,
    resolve_device,
    train_detector,
)
from detfn.apis.cli_errors import run_cli
from detfn.apis.cli_options import import_custom_modules, pop_option
from detfn.apis.evaluate_dist import evaluate_dataset_on_ranks
from detfn.config import load, override
from detfn.data import build_loader
from detfn.dist import get_rank, get_world_size, is_main_process
from detfn.dist.launch import distributed, pop_launcher
from detfn.engine import TrainState
from detfn.engine.hooks.wandb import WandbHookConfig
from detfn.models.functional import detector_predict_fn

PRESETS: dict[str, Callable[[], ExperimentConfig]] = {"bccd": bccd_cpu_preset, "coco": coco_preset}


def _pop_preset(argv: list[str]) -> tuple[str, list[str]]:
    """``--preset NAME`` (or ``--preset=NAME``) chooses the defaults tyro starts from."""
    rest, name, i = [], "bccd", 0
    while i < len(argv):
        if argv[i] == "--preset" and i + 1 < len(argv):
            name, i = argv[i + 1], i + 2
            continue
        if argv[i].startswith("--preset="):
            name = argv[i].split("=", 1)[1]
        else:
            rest.append(argv[i])
        i += 1
    if name not in PRESETS:
        raise SystemExit(f"--preset: unknown preset {name!r}; presets: {sorted(PRESETS)}")
    return name, rest


def make_cli(preset: ExperimentConfig) -> type:
    """A CLI dataclass: the flat knobs (defaults from ``preset``) plus every config field."""
    wandb = preset.runner.wandb

    @dataclasses.dataclass(frozen=True)
    class FasterRCNNCli:
        cfg: Annotated[ExperimentConfig, tyro.conf.arg(name="")] = preset
        lr: float = preset.runner.optimizer.lr
        """alias of --runner.optimizer.lr"""
        batch_size: int = preset.data.train_loader.batch_size
        """alias of --data.train-loader.batch-size (images per device)"""
        epochs: int | None = preset.runner.max_epochs
        """alias of --runner.max-epochs"""
        iters: int | None = preset.runner.max_iters
        """alias of --runner.max-iters (iteration-based training; clears --epochs)"""
        wandb_project: str | None = wandb.project if wandb is not None else None
        """alias of --runner.wandb.project"""
        no_wandb: Annotated[bool, tyro.conf.FlagCreatePairsOff] = False
        """do not log to wandb (by default runs log offline unless you are logged in)"""
        data_root: str | None = None
        """dataset root: for the coco preset, the folder with annotations/ train2017/ val2017/"""

    return FasterRCNNCli


def apply_flat_flags(cli, preset: ExperimentConfig, preset_name: str) -> ExperimentConfig:
    """Fold the flat knobs into the config; a knob left at the preset's value changes nothing,
    so a dotted flag given for the same field keeps its value."""
    cfg = cli.cfg
    if cli.data_root is not None:
        root_cfg = coco_preset(cli.data_root) if preset_name == "coco" else None
        if root_cfg is None:
            raise SystemExit("--data-root applies to --preset coco; use --data.train.ann-file ...")
        cfg = dataclasses.replace(cfg, data=root_cfg.data)
    if cli.lr != preset.runner.optimizer.lr:
        cfg = override(cfg, "runner.optimizer.lr", cli.lr)
    if cli.batch_size != preset.data.train_loader.batch_size:
        cfg = override(cfg, "data.train_loader.batch_size", cli.batch_size)
    if cli.iters is not None and cli.iters != preset.runner.max_iters:
        cfg = override(
            cfg, "runner", dataclasses.replace(cfg.runner, max_epochs=None, max_iters=cli.iters)
        )
    elif cli.epochs is not None and cli.epochs != preset.runner.max_epochs:
        cfg = override(
            cfg, "runner", dataclasses.replace(cfg.runner, max_epochs=cli.epochs, max_iters=None)
        )
    if cli.no_wandb:
        cfg = override(cfg, "runner.wandb", None)
    elif preset.runner.wandb is not None and cli.wandb_project != preset.runner.wandb.project:
        cfg = override(cfg, "runner.wandb.project", cli.wandb_project)
    elif preset.runner.wandb is None and cli.wandb_project is not None:
        cfg = override(cfg, "runner.wandb", WandbHookConfig(project=cli.wandb_project))
    return cfg


def parse(argv: Sequence[str] | None = None) -> ExperimentConfig:
    """The experiment config the command line describes."""
    name, rest = _pop_preset(list(sys.argv[1:] if argv is None else argv))
    config_files, rest = pop_option(rest, "--config")
    imports, rest = pop_option(rest, "--import")
    import_custom_modules(imports)
    preset = load(config_files[-1], ExperimentConfig) if config_files else PRESETS[name]()
    cli = tyro.cli(
        make_cli(preset),
        args=rest,
        description=__doc__,
        config=(tyro.conf.CascadeSubcommandArgs,),
    )
    return apply_flat_flags(cli, preset, name)


def final_metrics(cfg: ExperimentConfig, state: TrainState) -> dict:
    """COCO metrics of the final weights on the val split (class-wise table included)."""
    built = build_experiment(cfg, with_train=False)
    if built.val_set is None:
        return {}
    shard = {"rank": get_rank(), "world_size": get_world_size()}
    loader = build_loader(built.val_set, cfg.data.test_loader, **shard)
    predict = detector_predict_fn(built.model)
    return evaluate_dataset_on_ranks(
        predict,
        state.params,
        state.buffers,
        built.val_set,
        loader,
        device=built.device,
        classwise=True,
    )


def main(cfg: ExperimentConfig) -> dict:
    """Train, then print and return the COCO metrics of the val split."""
    state = train_detector(cfg)
    metrics = final_metrics(cfg, state)
    if metrics and is_main_process():
        print(f"\nCOCO bbox metrics of {cfg.name} on {getattr(cfg.data.val, 'ann_file', 'val')}:")
        print(metrics["bbox_summary"])
        print(metrics.get("bbox_classwise", ""))
        print("bbox_mAP_copypaste:", metrics["bbox_mAP_copypaste"])
    return metrics


def run() -> None:
    """Parse the command line and train, inside a process group when a launcher asks for one."""
    launcher, argv = pop_launcher(sys.argv[1:])
    config = parse(argv)
    with distributed(launcher, device=resolve_device(config.device)):
        main(config)


if __name__ == "__main__":
    run_cli(run)
