"""metrics.jsonl reading, curves, train time; curves.png written by training itself."""

from __future__ import annotations

import json

import pytest

from detfn.analysis.logs import plot_curves, read_metrics, series, train_time
from experiments import analyze_logs
from tests.analysis.conftest import assert_png


def write_run(path, per_epoch=4, epochs=2, time0=0.5):
    """An epoch-based run: train records every iteration, one val record per epoch."""
    path.mkdir(parents=True, exist_ok=True)
    lines = []
    for e in range(1, epochs + 1):
        for i in range(1, per_epoch + 1):
            g = (e - 1) * per_epoch + i
            lines.append(
                {
                    "mode": "train",
                    "epoch": e,
                    "iter": i,
                    "global_iter": g,
                    "loss": 1.0 / g,
                    "lr": 0.01,
                    "time": time0 * e + 0.01 * i,
                }
            )
        lines.append({"mode": "val", "epoch": e, "global_iter": e * per_epoch, "bbox_mAP": 0.1 * e})
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    return path


def test_series_against_iterations_and_epochs(tmp_path):
    records = read_metrics(write_run(tmp_path / "a"))
    xs, ys = series(records, "loss", "iter")
    assert xs == [1, 2, 3, 4, 5, 6, 7, 8] and ys[2] == pytest.approx(1 / 3)
    xs, _ = series(records, "loss", "epoch")
    assert xs == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0])
    assert series(records, "bbox_mAP", "epoch") == ([1.0, 2.0], [0.1, 0.2])
    assert series(records, "bbox_mAP", "iter") == ([4.0, 8.0], [0.1, 0.2])


def test_train_time_by_hand(tmp_path):
    records = read_metrics(write_run(tmp_path / "a"))
    timing = train_time(records)  # first record left out
    epoch1 = (0.52 + 0.53 + 0.54) / 3
    epoch2 = (1.01 + 1.02 + 1.03 + 1.04) / 4
    assert timing.per_epoch == pytest.approx({1: epoch1, 2: epoch2})
    assert timing.slowest == (2, pytest.approx(epoch2)) and timing.fastest[0] == 1
    assert timing.mean == pytest.approx((0.52 + 0.53 + 0.54 + 1.01 + 1.02 + 1.03 + 1.04) / 7)
    assert timing.std == pytest.approx(abs(epoch2 - epoch1) / 2)
    assert train_time(records, include_outliers=True).per_epoch[1] == pytest.approx(0.525)


def test_bad_inputs_name_the_file_line_and_key(tmp_path):
    run = write_run(tmp_path / "a")
    with pytest.raises(ValueError, match="'nope' is in no run's metrics; keys there: .*bbox_mAP"):
        plot_curves([run], ["nope"], tmp_path / "x.png")
    (run / "metrics.jsonl").write_text('{"mode": "train"}\n{broken\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a JSON line"):
        read_metrics(run)
    with pytest.raises(FileNotFoundError, match="no such metrics file"):
        read_metrics(tmp_path / "missing")


def test_plot_two_runs(tmp_path):
    a, b = write_run(tmp_path / "a"), write_run(tmp_path / "b", time0=0.2)
    out = analyze_logs.plot(
        (str(a), str(b)), keys=("loss", "bbox_mAP"), out=str(tmp_path / "c.png"), x="epoch"
    )
    assert_png(out)


def test_training_writes_curves_png(tiny_run, tmp_path, capsys):
    _, work_dir = tiny_run
    assert_png(work_dir / "curves.png")
    out = analyze_logs.plot(
        (str(work_dir),), keys=("loss", "lr", "bbox_mAP"), out=str(tmp_path / "t.png")
    )
    assert_png(out)
    analyze_logs.train_time_cmd((str(work_dir),))
    assert "average iter time" in capsys.readouterr().out
