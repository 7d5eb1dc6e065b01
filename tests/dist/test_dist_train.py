"""Two gloo ranks train the toy model: equal to one process on the combined batches, only rank 0
writes files, one rank's error stops both with that error (no hang); distributed COCO
evaluation on tiny/bccd8 equals the single-process one.

All scenarios run in one pair of spawned processes (a module fixture): starting two Python
processes that import torch costs more than the runs.
"""

from __future__ import annotations

import json

import pytest
import torch
from dist_workers import run_ranks, run_scenarios
from eval_dp import evaluate_shards, evaluate_single
from toy_dp import train_reference, train_toy

SCENARIOS = {
    "overlap": (train_toy, {"overlap": True}),
    "after_backward": (train_toy, {"overlap": False}),
    "accumulate": (train_toy, {"cumulative_iters": 2}),
    "func_backend": (train_toy, {"grad_backend": "func"}),
    "loss_error": (train_toy, {"fail_rank": 1}),
    "loader_error": (train_toy, {"loader_fail_rank": 1}),
    "after_errors": (train_toy, {"overlap": True}),  # the group still works after failures
    "evaluation": (evaluate_shards, {}),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist_toy")
    records = run_ranks(run_scenarios, out, scenarios=SCENARIOS)
    for record in records:
        assert record["ok"], record.get("trace")
    return out, [record["result"] for record in records]


def _assert_equal_to_reference(per_rank, reference):
    for record in per_rank:
        assert record["ok"], record.get("trace")
        params = record["result"]["params"]
        assert set(params) == set(reference)
        for name, value in reference.items():
            torch.testing.assert_close(torch.tensor(params[name]), value, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["overlap", "after_backward", "func_backend", "after_errors"])
def test_two_ranks_equal_one_process_on_the_combined_batches(runs, tmp_path, name):
    out, ranks = runs
    backend = SCENARIOS[name][1].get("grad_backend", "autograd")
    reference = train_reference(tmp_path / "reference", grad_backend=backend)
    _assert_equal_to_reference([r[name] for r in ranks], reference)
    result = ranks[0][name]["result"]
    # one all-reduce per bucket and update, not one per tensor
    assert 1 < result["buckets"] < len(reference)
    assert result["calls"] == result["buckets"] * result["updates"]
    # only rank 0 wrote files
    assert (out / name / "work_rank0" / "metrics.jsonl").is_file()
    assert list((out / name / "work_rank0").glob("epoch_*.pth"))
    assert not (out / name / "work_rank1").exists()


def _train_losses(work_dir):
    lines = (work_dir / "metrics.jsonl").read_text().splitlines()
    return [r["loss_cls"] for r in map(json.loads, lines) if r["mode"] == "train"]


def test_rank_0_logs_the_jobs_mean_loss(runs, tmp_path):
    # cross-entropy is a mean over equal per-rank batches, so the mean over the ranks of each
    # iteration's loss is the 1-process loss on the combined batch (rank 0's own loss is not)
    out, _ = runs
    train_reference(tmp_path / "reference")
    expected = _train_losses(tmp_path / "reference")
    logged = _train_losses(out / "overlap" / "work_rank0")
    assert len(logged) == len(expected) == 8
    assert logged == pytest.approx(expected, abs=1e-5)


def test_accumulation_communicates_only_on_updates(runs, tmp_path):
    _, ranks = runs
    reference = train_reference(tmp_path / "reference", cumulative_iters=2)
    _assert_equal_to_reference([r["accumulate"] for r in ranks], reference)
    result = ranks[0]["accumulate"]["result"]
    assert result["updates"] == 4  # 8 iterations
    assert result["calls"] == result["buckets"] * result["updates"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("loss_error", "ValueError: deliberate failure on rank 1"),
        ("loader_error", "OSError: deliberate loader failure on rank 1"),
    ],
)
def test_an_error_on_rank_1_stops_both_ranks_with_it(runs, name, message):
    _, ranks = runs
    other, failing = ranks[0][name], ranks[1][name]
    assert not failing["ok"] and failing["message"] == message.split(": ", 1)[1]
    # rank 0 stopped at its next agreement point with rank 1's error, not at a timeout
    assert not other["ok"] and other["type"] == "RankFailedError", other["trace"]
    assert f"rank 1 failed with {message}" in other["message"]


def test_distributed_evaluation_equals_single_process(runs):
    _, ranks = runs
    single = evaluate_single()
    rank0, rank1 = (r["evaluation"] for r in ranks)
    assert rank0["ok"] and rank1["ok"], rank0.get("trace") or rank1.get("trace")
    # the score reached every rank (save_best and early stopping agree)
    assert rank0["result"] == rank1["result"] == single
    assert 0.2 < single["bbox_mAP"] < 0.9  # a metric a lost or misplaced detection changes
