"""Training curves and timing from runs' ``metrics.jsonl`` (mmdetection's analyze_logs).

python -m experiments.analyze_logs plot work_dirs/a work_dirs/b --keys loss bbox_mAP --out c.png
python -m experiments.analyze_logs train-time work_dirs/a
"""

from __future__ import annotations

from typing import Literal

import tyro

from detfn.analysis.logs import available_keys, plot_curves, read_metrics, train_time


def plot(
    runs: tuple[str, ...],
    /,
    keys: tuple[str, ...] = ("loss",),
    out: str = "curves.png",
    x: Literal["iter", "epoch"] = "iter",
    legends: tuple[str, ...] | None = None,
    title: str | None = None,
) -> str:
    """Draw chosen keys of one or more runs (work dirs or metrics.jsonl files), one colour per run.

    Args:
        runs: work dirs or metrics.jsonl files.
        keys: values to draw, one panel each (e.g. loss loss_rpn_cls lr bbox_mAP).
        out: the PNG to write.
        x: horizontal axis: iterations done or epochs.
        legends: one name per run (default: the work dir names).
        title: figure title.
    """
    try:
        path = plot_curves(list(runs), list(keys), out, x=x, legends=legends, title=title)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(str(error)) from None
    print(f"wrote {path}")
    return str(path)


def train_time_cmd(runs: tuple[str, ...], /, include_outliers: bool = False) -> None:
    """Print the average seconds per iteration and the slowest and fastest epochs of each run.

    Args:
        runs: work dirs or metrics.jsonl files.
        include_outliers: count the first record (start-up) too.
    """
    for run in runs:
        try:
            print(train_time(read_metrics(run), include_outliers).format(run))
        except (FileNotFoundError, ValueError) as error:
            raise SystemExit(f"{run}: {error}") from None


def keys_cmd(run: str, /) -> None:
    """List the keys a run's metrics file holds."""
    print(" ".join(available_keys(read_metrics(run))))


if __name__ == "__main__":
    tyro.extras.subcommand_cli_from_dict(
        {"plot": plot, "train-time": train_time_cmd, "keys": keys_cmd}, description=__doc__
    )
