"""The one command line of every training entry point (``experiments.faster_rcnn``,
``experiments.retinanet``, ...): presets, flat knobs, every config field, train, final metrics.

``python -m experiments.<detector> [--preset bccd|coco] [flags]``:

* ``--preset``: the detector's presets from :data:`detfn.apis.PRESETS`, the first one by
  default (``bccd``: a from-scratch run on the bundled BCCD blood cells sized for a 2-core CPU;
  ``nuclei`` for the mask models; ``coco``: mmdetection's 1x recipe exactly, give
  ``--data-root``);
* flat knobs ``--lr``, ``--batch-size``, ``--epochs``, ``--iters``, ``--work-dir``, ``--seed``,
  ``--device``, ``--wandb-project``, ``--no-wandb``;
* every config field by its dotted flag (``--runner.optimizer.momentum 0.95``,
  ``--model.backbone.depth 50``); ``--help`` lists them all with the preset's defaults.

An entry point module is three lines: ``parse, main = entry_point("retinanet", __doc__)`` and
``if __name__ == "__main__": run(parse, main)``; :func:`run` reports a bad input in one line.
"""

# No "from __future__ import annotations": tyro resolves the CLI class's local types at runtime.

import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Annotated

import tyro

from detfn.apis import PRESETS, ExperimentConfig, build_experiment, train_detector
from detfn.apis.cli_errors import run_cli
from detfn.apis.cli_options import import_custom_modules, pop_option
from detfn.apis.train import evaluate_experiment, resolve_device
from detfn.config import load, override
from detfn.dist import is_main_process
from detfn.dist.launch import distributed, pop_launcher
from detfn.engine.hooks.wandb import WandbHookConfig

__all__ = ["apply_flat_flags", "entry_point", "main", "make_cli", "parse", "pop_preset", "run"]


def pop_preset(argv: list[str], presets: Sequence[str]) -> tuple[str, list[str]]:
    """``--preset NAME`` (or ``--preset=NAME``) chooses the defaults tyro starts from; the
    detector's first preset by default."""
    rest, name, i = [], next(iter(presets)), 0
    while i < len(argv):
        if argv[i] == "--preset" and i + 1 < len(argv):
            name, i = argv[i + 1], i + 2
            continue
        if argv[i].startswith("--preset="):
            name = argv[i].split("=", 1)[1]
        else:
            rest.append(argv[i])
        i += 1
    if name not in presets:
        raise SystemExit(f"--preset: unknown preset {name!r}; presets: {sorted(presets)}")
    return name, rest


# Fields typed by a union of configs whose preset member is fixed on the command line: the
# detector (chosen by the entry point), a single-stage detector's head, and a two-stage
# detector's RoI head (standard or cascade) with its mask branch. Their fields become plain flags
# (``--model.bbox-head.stacked-convs``, ``--model.roi-head.mask-branch.mask-thr-binary``)
# instead of members of a subcommand; other unions (the backbone) keep their subcommands.
NARROWED = {"model": {"bbox_head": {}, "roi_head": {"mask_branch": {}}}}


def _narrowed(value, fields: dict):
    """``value`` as an instance of a dynamic subclass whose ``fields`` are typed by the exact
    classes of their current values (recursively), so that tyro needs no subcommand for them."""
    own = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    annotations, defaults = {}, {}
    for name, inner in fields.items():
        if name in own and dataclasses.is_dataclass(own[name]):
            own[name] = _narrowed(own[name], inner)
            annotations[name], defaults[name] = type(own[name]), own[name]
    base = type(value)
    namespace = {"__annotations__": annotations, **defaults, "_cli_base": base}
    cls = dataclasses.dataclass(frozen=True)(type(base.__name__, (base,), namespace))
    return cls(**own)


def _widened(value):
    """Undo :func:`_narrowed`: the same values as instances of the original config classes."""
    base = getattr(type(value), "_cli_base", None)
    if base is None:
        return value
    own = {f.name: _widened(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return base(**own)


def make_cli(preset: ExperimentConfig) -> type:
    """A CLI dataclass: the flat knobs (defaults from ``preset``) plus every config field."""
    wandb = preset.runner.wandb
    cfg_default = _narrowed(preset, NARROWED)
    cfg_type = type(cfg_default)

    @dataclasses.dataclass(frozen=True)
    class Cli:
        cfg: Annotated[cfg_type, tyro.conf.arg(name="")] = cfg_default
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

    return Cli


def apply_flat_flags(
    cli, preset: ExperimentConfig, coco: Callable[[str], ExperimentConfig] | None
) -> ExperimentConfig:
    """Fold the flat knobs into the config; a knob left at the preset's value changes nothing,
    so a dotted flag given for the same field keeps its value. ``coco`` builds the coco preset
    of a data root (None when the chosen preset is not a coco one)."""
    cfg = _widened(cli.cfg)
    if cli.data_root is not None:
        if coco is None:
            raise SystemExit("--data-root applies to --preset coco; use --data.train.ann-file ...")
        cfg = dataclasses.replace(cfg, data=coco(cli.data_root).data)
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


def parse(
    detector: str, argv: Sequence[str] | None = None, description: str | None = None
) -> ExperimentConfig:
    """The experiment config a command line describes, for ``detector``'s presets.

    ``--config path.json`` starts from a saved config instead of a preset (the last one given
    wins), with every other flag applied on top; ``--import my.module`` imports a module first so
    that the config types it registers can be named (mmdetection's ``custom_imports``).
    """
    presets = PRESETS[detector]
    name, rest = pop_preset(list(sys.argv[1:] if argv is None else argv), list(presets))
    config_files, rest = pop_option(rest, "--config")
    imports, rest = pop_option(rest, "--import")
    import_custom_modules(imports)
    preset = load(config_files[-1], ExperimentConfig) if config_files else presets[name]()
    cli = tyro.cli(
        make_cli(preset),
        args=rest,
        description=description,
        config=(tyro.conf.CascadeSubcommandArgs,),
    )
    return apply_flat_flags(cli, preset, presets[name] if name.startswith("coco") else None)


def main(cfg: ExperimentConfig) -> dict:
    """Train, then print and return the COCO metrics of the final weights on the val split."""
    built = build_experiment(cfg)
    state = train_detector(built.cfg, built=built)
    metrics = evaluate_experiment(built, state.params, state.buffers, classwise=True)
    if metrics and is_main_process():
        print(f"\nCOCO bbox metrics of {cfg.name} on {getattr(cfg.data.val, 'ann_file', 'val')}:")
        print(metrics["bbox_summary"])
        print(metrics.get("bbox_classwise", ""))
        print("bbox_mAP_copypaste:", metrics["bbox_mAP_copypaste"])
        if "segm_mAP" in metrics:
            print(f"\nCOCO segm metrics of {cfg.name}:")
            print(metrics["segm_summary"])
            print(metrics.get("segm_classwise", ""))
            print("segm_mAP_copypaste:", metrics["segm_mAP_copypaste"])
    return metrics


def entry_point(
    detector: str, description: str | None
) -> tuple[Callable[..., ExperimentConfig], Callable[[ExperimentConfig], dict]]:
    """``(parse, main)`` of ``python -m experiments.<detector>``."""

    def parse_detector(argv: Sequence[str] | None = None) -> ExperimentConfig:
        return parse(detector, argv, description)

    return parse_detector, main


def run(
    parse_fn: Callable[[Sequence[str]], ExperimentConfig],
    main_fn: Callable[[ExperimentConfig], dict],
) -> None:
    """Parse the command line and run, inside a process group when ``--launcher`` (or torchrun's
    environment) asks for one; a detfn input error prints one line and exits 2."""

    def body() -> None:
        launcher, argv = pop_launcher(sys.argv[1:])
        cfg = parse_fn(argv)
        with distributed(launcher, device=resolve_device(cfg.device)):
            main_fn(cfg)

    run_cli(body)
