"""Read a run's ``metrics.jsonl``, draw chosen keys against iteration or epoch, time the training.

mmdetection's ``tools/analysis_tools/analyze_logs.py`` as functions. A run is a work dir (or its
``metrics.jsonl``): train records carry ``mode="train"``, ``epoch`` (1-based), ``iter`` (in the
epoch when training by epoch), ``global_iter`` (iterations done), lr, losses and ``time``; val
records carry ``mode="val"``, ``epoch`` (epochs done), ``global_iter`` and the metrics.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "METRICS_FILE",
    "TrainTime",
    "available_keys",
    "metrics_path",
    "plot_curves",
    "read_metrics",
    "series",
    "train_time",
]

METRICS_FILE = "metrics.jsonl"
Axis = Literal["iter", "epoch"]
Record = Mapping[str, Any]


def metrics_path(run: str | os.PathLike[str]) -> Path:
    """``run`` itself when it is a file, else ``run/metrics.jsonl``."""
    path = Path(run)
    return path / METRICS_FILE if path.is_dir() else path


def read_metrics(run: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record of a run's metrics file, in order.

    Raises:
        FileNotFoundError / ValueError: one line naming the file (and the line number).
    """
    path = metrics_path(run)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such metrics file (give a work dir or a .jsonl file)")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not a JSON line ({error.msg})") from None
        if not isinstance(record, dict) or "mode" not in record:
            raise ValueError(f"{path}:{number}: a record must be an object with a 'mode' key")
        records.append(record)
    return records


def available_keys(records: Sequence[Record]) -> list[str]:
    """Numeric keys that can be plotted (bookkeeping keys left out)."""
    skip = {"mode", "epoch", "iter", "global_iter"}
    keys: dict[str, None] = {}
    for record in records:
        for key, value in record.items():
            if key not in skip and isinstance(value, (int, float)) and not isinstance(value, bool):
                keys[key] = None
    return list(keys)


def _iters_per_epoch(records: Sequence[Record]) -> float | None:
    """Iterations of one epoch, from the train records of an epoch-based run (None otherwise)."""
    train = [r for r in records if r["mode"] == "train" and "iter" in r and "global_iter" in r]
    if not train or all(r["iter"] == r["global_iter"] for r in train):
        return None
    full = [r for r in train if r["epoch"] > 1]
    if full:  # global_iter = (epoch - 1) * per_epoch + iter in any later epoch
        r = full[0]
        return (r["global_iter"] - r["iter"]) / (r["epoch"] - 1)
    return float(max(r["iter"] for r in train))  # a single (maybe partial) epoch


def series(
    records: Sequence[Record], key: str, x: Axis = "iter"
) -> tuple[list[float], list[float]]:
    """``(xs, ys)`` of ``key`` over the run, against iterations done or (fractional) epochs.

    Val records sit at the iteration / epoch their evaluation followed; train records of an
    epoch-based run at ``global_iter / iters_per_epoch`` epochs.
    """
    per_epoch = _iters_per_epoch(records) if x == "epoch" else None
    xs, ys = [], []
    for record in records:
        value = record.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if x == "iter":
            position = record.get("global_iter", record.get("iter"))
        elif record["mode"] == "val" or per_epoch is None:
            position = record.get("epoch")
        else:
            position = record["global_iter"] / per_epoch
        if position is not None:
            xs.append(float(position))
            ys.append(float(value))
    return xs, ys


def plot_curves(
    runs: Sequence[str | os.PathLike[str]],
    keys: Sequence[str],
    out: str | os.PathLike[str],
    x: Axis = "iter",
    legends: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """One panel per key, one colour per run (the same colour in every panel), as a PNG.

    Raises:
        ValueError: a key no run has (the message lists the keys there are), or legends that do
            not match the runs.
    """
    from detfn.analysis.plotting import new_figure, save_figure  # matplotlib only when drawing

    if not runs or not keys:
        raise ValueError("plot_curves needs at least one run and one key")
    names = list(legends) if legends is not None else [_run_name(r) for r in runs]
    if len(names) != len(runs):
        raise ValueError(f"{len(names)} legends for {len(runs)} runs: give one per run")
    all_records = [read_metrics(r) for r in runs]
    for key in keys:
        if not any(series(records, key, x)[0] for records in all_records):
            known = sorted({k for records in all_records for k in available_keys(records)})
            raise ValueError(f"key {key!r} is in no run's metrics; keys there: {known}")
    figure = new_figure(6.4, 2.4 * len(keys))
    axes = figure.subplots(len(keys), 1, squeeze=False)[:, 0]
    for ax, key in zip(axes, keys):
        for index, (records, name) in enumerate(zip(all_records, names)):
            xs, ys = series(records, key, x)
            if xs:
                marker = "o" if len(xs) < 30 else None
                ax.plot(xs, ys, color=f"C{index % 10}", marker=marker, ms=3, label=name)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    axes[-1].set_xlabel("iteration" if x == "iter" else "epoch")
    if title:
        figure.suptitle(title)
    return save_figure(figure, out)


def _run_name(run: str | os.PathLike[str]) -> str:
    path = Path(run)
    return (path if path.is_dir() else path.parent).name or str(path)


@dataclass(frozen=True)
class TrainTime:
    """Seconds per iteration of a run (mmdetection's ``cal_train_time``).

    Attributes:
        mean: average seconds per iteration over every timed record.
        per_epoch: epoch -> average seconds per iteration in it.
        slowest / fastest: ``(epoch, seconds per iteration)``.
        std: standard deviation of the per-epoch averages (0 for one epoch).
    """

    mean: float
    per_epoch: dict[int, float]
    slowest: tuple[int, float]
    fastest: tuple[int, float]
    std: float

    def format(self, name: str = "") -> str:
        """The report mmdetection prints, one value per line."""
        head = f"-----Analyze train time of {name}-----\n" if name else ""
        return (
            f"{head}slowest epoch {self.slowest[0]}, average time is {self.slowest[1]:.4f} s/iter\n"
            f"fastest epoch {self.fastest[0]}, average time is {self.fastest[1]:.4f} s/iter\n"
            f"time std over epochs is {self.std:.4f}\n"
            f"average iter time: {self.mean:.4f} s/iter"
        )


def train_time(records: Sequence[Record], include_outliers: bool = False) -> TrainTime:
    """Timing of the train records' ``time`` values.

    The first record of the run is left out unless ``include_outliers``: it carries start-up
    work (worker spawn, first allocations) that is no property of the training speed.

    Raises:
        ValueError: no train record has a ``time``.
    """
    timed = [r for r in records if r["mode"] == "train" and isinstance(r.get("time"), float)]
    if not include_outliers and len(timed) > 1:
        timed = timed[1:]
    if not timed:
        raise ValueError("no train record has a 'time' value (was the timer hook off?)")
    by_epoch: dict[int, list[float]] = {}
    for record in timed:
        by_epoch.setdefault(int(record.get("epoch", 1)), []).append(record["time"])
    per_epoch = {epoch: statistics.fmean(times) for epoch, times in by_epoch.items()}
    slowest = max(per_epoch.items(), key=lambda item: item[1])
    fastest = min(per_epoch.items(), key=lambda item: item[1])
    spread = statistics.pstdev(per_epoch.values()) if len(per_epoch) > 1 else 0.0
    mean = statistics.fmean(r["time"] for r in timed)
    return TrainTime(mean, per_epoch, slowest, fastest, spread)
