"""The config a tool reads: a run's ``config.json``, or a training preset by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from detfn.apis import ExperimentConfig
from detfn.apis.results import Evaluated, results_of
from detfn.config import load


def presets() -> dict:
    """Preset name -> function building its config: ``<detector>.<preset>`` for every detector
    (``retinanet.bccd``, ``fcos.coco``, ...), and Faster R-CNN's by their short names."""
    from detfn.apis import PRESETS

    named = {f"{det}.{name}": fn for det, table in PRESETS.items() for name, fn in table.items()}
    return {**PRESETS["faster_rcnn"], **named}


def resolve_config(config: str | None, preset: str | None) -> ExperimentConfig:
    """``config`` (a config.json) when given, else the named preset."""
    if config is not None:
        if preset is not None:
            raise SystemExit("give either --config or --preset, not both")
        return load(config, ExperimentConfig)
    known = presets()
    name = preset or "bccd"
    if name not in known:
        raise SystemExit(f"--preset: unknown preset {name!r}; presets: {sorted(known)}")
    return known[name]()


@dataclass(frozen=True)
class DetectionsArgs:
    """Where a tool's detections come from: a checkpoint run over the config's dataset, or a
    results file of that dataset."""

    config: str
    """the run's config.json (names the dataset and classes)"""
    checkpoint: str | None = None
    """weights to run over the dataset (or give --results)"""
    results: str | None = None
    """a COCO results json of the same dataset (e.g. experiments.test --out)"""
    split: Literal["val", "test"] = "val"
    device: str = "auto"


def detections_of(args: DetectionsArgs) -> Evaluated:
    """The dataset and its COCO results; a bad input ends the command with one line."""
    try:
        return results_of(args.config, args.checkpoint, args.results, args.split, args.device)
    except (ValueError, KeyError, FileNotFoundError) as error:
        raise SystemExit(str(error)) from None
