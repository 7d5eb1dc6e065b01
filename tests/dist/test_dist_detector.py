"""Faster R-CNN R-18-FPN data parallel on 2 gloo ranks, and distributed COCO evaluation equal to
the single-process one on tests/assets/tiny/bccd8."""

from __future__ import annotations

import json

import pytest
from detector_dp import evaluate_sharded, tiny_config, train_tiny_detector
from dist_workers import run_ranks

from detfn.apis import load_detector


# The fixture took 36 s on the 2-core CPU shared with other jobs (load average 8): two forked
# ranks build R-18-FPN, train 2 iterations, evaluate twice.


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist_detector")
    records = run_ranks(train_tiny_detector, out)
    for record in records:
        assert record["ok"], record.get("trace")
    return out, [record["result"] for record in records]


def test_ranks_train_the_same_detector_and_only_rank_0_writes(ranks):
    out, (rank0, rank1) = ranks
    assert rank0["iters"] == rank1["iters"] == 2  # 8 images / (2 ranks x 2 images)
    assert rank0["checksum"] == rank1["checksum"]  # identical weights on both ranks
    work = out / "work"
    names = {p.name for p in work.iterdir()}
    assert {"config.json", "metrics.jsonl", "epoch_1.pth", "latest.json"} <= names
    assert any(n.startswith("best_bbox_mAP") for n in names)
    assert not (out / "work_rank1").exists()
    lines = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in lines if r["mode"] == "train"] == [1, 2]


def test_distributed_evaluation_equals_single_process(ranks):
    out, (rank0, rank1) = ranks
    cfg = tiny_config(out / "work")
    detector = load_detector(out / "work" / "config.json", out / "work" / "epoch_1.pth", "cpu")
    single = evaluate_sharded(cfg, detector.params, detector.buffers)  # no group: one process
    assert rank0["metrics"] == rank1["metrics"] == pytest.approx(single, abs=1e-12)
    assert len(single) >= 6 and single["bbox_mAP_50"] > 0.0
    # the evaluation hook during training saw the same numbers on rank 0
    lines = [json.loads(line) for line in (out / "work" / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in lines if r["mode"] == "val"][-1]
    assert val["bbox_mAP"] == pytest.approx(single["bbox_mAP"], abs=1e-12)


def test_experiments_test_runs_on_ranks(ranks):
    out, (rank0, rank1) = ranks
    # experiments.test inside the 2-rank group: the same metrics on both ranks, equal to the
    # sharded evaluation of the same weights; the results json is written by rank 0 only
    assert rank0["test_cli"] == rank1["test_cli"]
    assert rank0["test_cli"]["bbox_mAP"] == pytest.approx(rank0["metrics"]["bbox_mAP"], abs=1e-12)
    assert (out / "results_rank0.json").is_file() and not (out / "results_rank1.json").exists()
