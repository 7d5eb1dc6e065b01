"""Hooks a training run gets from the apis layer: the log header, ``curves.png`` in the work dir,
and richer wandb logging (sample val predictions, the curves, the best checkpoint, the final
metrics).

The log header (:func:`env_header_hook`, HIGHEST priority: it comes first): on ``before_run``,
rank 0 logs the environment, the experiment's seed and its config as JSON, as mmdetection's
``tools/train.py`` opens every log.

Both act on the events that carry evaluation ``metrics`` and run at the LOWEST priority, after
the text logger (VERY_LOW) has appended the val record to ``metrics.jsonl``. The wandb part uses
the run the engine's wandb hook started (``wandb.run``), or one a test injects.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from detfn.analysis.logs import METRICS_FILE, available_keys, plot_curves, read_metrics
from detfn.config import to_json
from detfn.data import collate
from detfn.data.transforms.loading import read_rgb
from detfn.dist.comm import is_main_process
from detfn.dist.env_info import collect_env, env_header
from detfn.engine.combinators import only_at, when
from detfn.engine.events import Event, Hook, Priority, Stage
from detfn.structures import ImageDetections

__all__ = [
    "CURVES_FILE",
    "WandbMedia",
    "curve_keys",
    "curves_hook",
    "env_header_hook",
    "training_hooks",
    "wandb_boxes",
    "wandb_media_hook",
]

CURVES_FILE = "curves.png"
_log = logging.getLogger("detfn")


def env_header_hook() -> Hook:
    """The log header (see the module docstring), on rank 0."""

    def log_env_header(event: Event) -> None:
        cfg = getattr(event.run, "cfg", None)
        text = to_json(cfg) if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type) else None
        event.run.logger.info(env_header(collect_env(), text, getattr(cfg, "seed", None)))

    logs = lambda event: is_main_process() and getattr(event.run, "logger", None)  # noqa: E731
    fn = only_at(Stage.BEFORE_RUN, when(logs, log_env_header))
    return Hook("env_header", fn, int(Priority.HIGHEST))


def curve_keys(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """What ``curves.png`` shows: the total loss, the lr and every mAP the run evaluates."""
    keys = available_keys(records)
    chosen = [k for k in ("loss", "lr") if k in keys]
    return chosen + [k for k in keys if k.endswith("mAP")]


def write_curves(work_dir: str | Path) -> Path | None:
    """Draw ``work_dir/curves.png`` from its metrics file; None when there is nothing yet."""
    work_dir = Path(work_dir)
    if not (work_dir / METRICS_FILE).is_file():
        return None
    keys = curve_keys(read_metrics(work_dir))
    if not keys:
        return None
    return plot_curves([work_dir], keys, work_dir / CURVES_FILE, legends=[work_dir.name])


def _has_metrics(event: Event) -> bool:
    return bool(event.outputs.metrics)


def curves_hook() -> Hook:
    """Rewrite ``curves.png`` at every evaluation (a failed drawing is logged, never fatal)."""

    def fn(event: Event):
        work_dir = getattr(event.run, "work_dir", None)
        if work_dir is None or not _has_metrics(event):
            return None
        try:
            write_curves(work_dir)
        except (OSError, ValueError) as error:
            _log.warning("curves.png not written: %s", error)
        return None

    return Hook("curves", fn, int(Priority.LOWEST), reads_optional=("metrics",))


def wandb_boxes(
    dets: ImageDetections,
    class_names: Sequence[str],
    score_thr: float = 0.3,
) -> dict[str, Any]:
    """wandb's box data (``{"box_data": [...], "class_labels": {...}}``) in pixels."""
    keep = dets.scores >= score_thr if dets.scores is not None else slice(None)
    boxes = dets.boxes[keep].tolist()
    labels = dets.labels[keep].tolist()
    scores = dets.scores[keep].tolist() if dets.scores is not None else [None] * len(boxes)
    data = []
    for (x1, y1, x2, y2), label, score in zip(boxes, labels, scores):
        item: dict[str, Any] = {
            "position": {"minX": x1, "minY": y1, "maxX": x2, "maxY": y2},
            "domain": "pixel",
            "class_id": int(label),
            "box_caption": class_names[label] + ("" if score is None else f" {score:.2f}"),
        }
        if score is not None:
            item["scores"] = {"score": float(score)}
        data.append(item)
    return {"box_data": data, "class_labels": dict(enumerate(class_names))}


@dataclass(frozen=True)
class WandbMedia:
    """What :func:`wandb_media_hook` logs.

    Attributes:
        num_images: val images in the sample table (the first ones of the val set).
        score_thr: predicted boxes drawn above this score.
        log_checkpoint: upload each new best checkpoint as a ``model`` artifact.
    """

    num_images: int = 8
    score_thr: float = 0.3
    log_checkpoint: bool = False


def _current_wandb_run() -> Any:
    import sys

    wandb = sys.modules.get("wandb")  # the engine's hook imported it when it started a run
    return getattr(wandb, "run", None) if wandb is not None else None


def wandb_media_hook(
    predict: Callable[..., list[ImageDetections]],
    val_set: Any,
    device: torch.device | str,
    media: WandbMedia = WandbMedia(),
    get_run: Callable[[], Any] = _current_wandb_run,
    wandb_module: Any = None,
) -> Hook:
    """At each evaluation: a ``val/samples`` table of images with predicted and ground-truth
    boxes, ``val/curves`` (``curves.png``), the metrics in the run summary, and optionally the
    new best checkpoint as an artifact. Does nothing while no wandb run is live."""
    count = min(media.num_images, len(val_set))
    logged_best: dict[str, str] = {}

    def fn(event: Event):
        run = get_run()
        if run is None or not _has_metrics(event):
            return None
        wandb = wandb_module
        if wandb is None:
            import wandb
        state = event.state
        samples = [val_set.sample(i, torch.Generator().manual_seed(0)) for i in range(count)]
        batch = collate(samples)
        dets = predict(state.params, state.buffers, batch.images.to(device), batch.metas)
        names = list(val_set.class_names)
        table = wandb.Table(columns=["image_id", "file", "detections"])
        records = {r.image_id: r for r in val_set.records[:count]}  # a skipped image is absent
        for meta, det in zip(batch.metas, dets):
            record = records[meta.image_id]
            truth = ImageDetections(record.boxes, None, record.labels)
            boxes = {
                "predictions": wandb_boxes(det.to("cpu"), names, media.score_thr),
                "ground_truth": wandb_boxes(truth, names),
            }
            image = wandb.Image(read_rgb(meta.file_name).permute(1, 2, 0).numpy(), boxes=boxes)
            table.add_data(meta.image_id, Path(meta.file_name).name, image)
        metrics = {k: v for k, v in event.outputs.metrics.items() if isinstance(v, float)}
        payload: dict[str, Any] = {"val/samples": table}
        work_dir = getattr(event.run, "work_dir", None)
        curves = Path(work_dir) / CURVES_FILE if work_dir is not None else None
        if curves is not None and curves.is_file():
            payload["val/curves"] = wandb.Image(str(curves))
        run.log(payload)  # at the step of the engine's val record, logged just before
        run.summary.update({f"val/{k}": v for k, v in metrics.items()})
        if media.log_checkpoint and work_dir is not None:
            _log_best(run, wandb, Path(work_dir), logged_best)
        return None

    return Hook("wandb_media", fn, int(Priority.LOWEST), reads_optional=("metrics",))


def _log_best(run: Any, wandb: Any, work_dir: Path, logged: dict[str, str]) -> None:
    best = sorted(work_dir.glob("best_*.pth"), key=lambda p: p.stat().st_mtime)
    if not best or logged.get("name") == best[-1].name:
        return
    artifact = wandb.Artifact(f"{getattr(run, 'id', 'run')}-best", type="model")
    artifact.add_file(str(best[-1]))
    run.log_artifact(artifact)
    logged["name"] = best[-1].name


def training_hooks(cfg: Any, built: Any, predict: Callable[..., Any] | None = None) -> list[Hook]:
    """The hooks ``train_detector`` adds: curves always; wandb media when wandb is configured
    and there is a val set."""
    hooks = [curves_hook()]
    if getattr(cfg.runner, "wandb", None) is not None and built.val_set is not None:
        if predict is None:
            from detfn.models.functional import detector_predict_fn

            predict = detector_predict_fn(built.model)
        hooks.append(wandb_media_hook(predict, built.val_set, built.device))
    return hooks
