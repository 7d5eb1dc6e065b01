"""Text logger: JSON-lines records, mmcv's interval rule, averaging, ETA and progress bar."""

from __future__ import annotations

import dataclasses
import json
import logging
import types

import pytest
import torch

from detfn import registry
from detfn.engine.events import Event, Outputs, Stage
from detfn.engine.hooks.logger import (
    TextLoggerHookConfig,
    eta_seconds,
    log_due,
    progress_bar,
)
from detfn.engine.state import TrainState


def should_log(state, interval, by_epoch, ignore_last):
    return log_due(interval, by_epoch, ignore_last)(Event(Stage.AFTER_TRAIN_ITER, state))


class ListHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def make_run(tmp_path):
    logger = logging.getLogger(f"test_logger_hook.{tmp_path.name}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = ListHandler()
    logger.addHandler(handler)
    return types.SimpleNamespace(cfg=None, work_dir=tmp_path, logger=logger), handler


def make_state(**changes):
    state = TrainState(
        params={"w": torch.zeros(1)},
        buffers={},
        opt_state=None,
        max_epochs=2,
        iters_per_epoch=5,
        hyper={"lr": (0.02, 0.01), "momentum": (0.95, 0.9)},
    )
    return dataclasses.replace(state, **changes)


def run_iters(hook, state, run, count, *, lr_of=None, loss_of=float, time=2.0):
    """Feed ``count`` train iterations like the loop (counters advance after the event)."""
    for _ in range(count):
        if state.inner_iter == 0:
            state = hook.fn(Event(Stage.BEFORE_TRAIN_EPOCH, state, Outputs(), run)) or state
        if lr_of is not None:
            state = dataclasses.replace(state, hyper={**state.hyper, "lr": lr_of(state.iter)})
        value = loss_of(state.iter + 1)
        outputs = Outputs(
            loss=torch.tensor(value),
            losses={"loss_cls": torch.tensor(value / 2), "loss_bbox": torch.tensor(value / 2)},
            grad_norm=torch.tensor(3.0),
            data_time=0.5,
            time=time,
        )
        state = hook.fn(Event(Stage.AFTER_TRAIN_ITER, state, outputs, run)) or state
        state = dataclasses.replace(state, iter=state.iter + 1, inner_iter=state.inner_iter + 1)
        if state.inner_iter == state.iters_per_epoch:
            state = hook.fn(Event(Stage.AFTER_TRAIN_EPOCH, state, Outputs(), run)) or state
            state = dataclasses.replace(state, epoch=state.epoch + 1, inner_iter=0)
    return state


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_interval_one_logs_lr_and_momentum_of_every_group_each_iteration(tmp_path):
    hook = registry.build(TextLoggerHookConfig(interval=1))
    assert (hook.name, hook.priority) == ("text_logger", 90)
    run, _ = make_run(tmp_path)
    state = hook.fn(Event(Stage.BEFORE_RUN, make_state(), Outputs(), run))
    lrs = lambda i: (0.02 * 0.9**i, 0.01 * 0.9**i)  # noqa: E731
    run_iters(hook, state, run, 10, lr_of=lrs)
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert len(records) == 10
    for i, record in enumerate(records):
        assert record["mode"] == "train"
        assert (record["epoch"], record["iter"], record["global_iter"]) == (
            i // 5 + 1,
            i % 5 + 1,
            i + 1,
        )
        assert record["lr"] == pytest.approx(0.02 * 0.9**i, rel=1e-12)
        assert record["lr_groups"] == pytest.approx([0.02 * 0.9**i, 0.01 * 0.9**i], rel=1e-12)
        assert record["momentum"] == 0.95 and record["momentum_groups"] == [0.95, 0.9]
        assert record["loss"] == pytest.approx(i + 1)
        assert record["loss_cls"] == pytest.approx((i + 1) / 2)
        assert record["grad_norm"] == 3.0
        assert (record["data_time"], record["time"]) == (0.5, 2.0)
    assert list(records[0])[:10] == [
        "mode",
        "epoch",
        "iter",
        "global_iter",
        "lr",
        "momentum",
        "lr_groups",
        "momentum_groups",
        "data_time",
        "time",
    ]


@pytest.mark.parametrize(
    "ignore_last, expected", [(True, [(3, 2.0)]), (False, [(3, 2.0), (5, 4.5)])]
)
def test_interval_rule_and_averaging_match_mmcv(tmp_path, ignore_last, expected):
    hook = registry.build(TextLoggerHookConfig(interval=3, ignore_last=ignore_last))
    run, _ = make_run(tmp_path)
    state = hook.fn(Event(Stage.BEFORE_RUN, make_state(max_epochs=1), Outputs(), run))
    run_iters(hook, state, run, 5)
    records = read_jsonl(tmp_path / "metrics.jsonl")
    # losses 1..5: the first record averages iterations 1-3, the end-of-epoch one 4-5
    assert [(r["iter"], r["loss"]) for r in records] == [(i, pytest.approx(v)) for i, v in expected]


def test_should_log_counts_in_epoch_or_globally():
    state = make_state(iter=7, inner_iter=2, iters_per_epoch=5)
    assert should_log(state, 3, by_epoch=True, ignore_last=True)  # inner 3
    assert not should_log(state, 3, by_epoch=False, ignore_last=True)  # global 8
    assert should_log(state, 4, by_epoch=False, ignore_last=True)  # global 8
    last = make_state(iter=9, inner_iter=4, iters_per_epoch=5)
    assert not should_log(last, 3, by_epoch=True, ignore_last=True)
    assert should_log(last, 3, by_epoch=True, ignore_last=False)


def test_console_line_eta_and_progress_bar(tmp_path):
    hook = registry.build(TextLoggerHookConfig(interval=3, bar_width=10, json_file=False))
    run, lines = make_run(tmp_path)
    state = hook.fn(Event(Stage.BEFORE_RUN, make_state(), Outputs(), run))
    run_iters(hook, state, run, 3)
    # 3 iterations of 2.0 s done, 10 - 3 = 7 left: 14 s
    assert lines.lines == [
        "Epoch [1][3/5]  [######----]  lr: 2.000e-02, eta: 0:00:14, data_time: 0.500, "
        "time: 2.000, loss_cls: 1.0000, loss_bbox: 1.0000, loss: 2.0000, grad_norm: 3.0000"
    ]
    assert not (tmp_path / "metrics.jsonl").exists()
    assert eta_seconds(10.0, 4, 30) == 75.0 and eta_seconds(0.0, 0, 5) == 0.0
    assert progress_bar(0, 4, 8) == "[--------]" and progress_bar(4, 4, 8) == "[########]"
    assert progress_bar(3, 4, 0) == ""


def test_eta_uses_only_this_process_after_a_resume(tmp_path):
    hook = registry.build(TextLoggerHookConfig(interval=1, by_epoch=False, json_file=False))
    run, lines = make_run(tmp_path)
    stale = {"text_logger": {"buffer": {}, "time_sum": 1000.0, "timed": 1}}
    state = make_state(
        max_epochs=None, max_iters=10, iters_per_epoch=10, iter=6, inner_iter=6, hooks=stale
    )
    state = hook.fn(Event(Stage.BEFORE_RUN, state, Outputs(), run))
    run_iters(hook, state, run, 1, time=1.5)
    assert lines.lines[0].startswith(
        "Iter [7/10]  [#####################---------]  lr: 2.000e-02, eta: 0:00:04,"
    )


def test_val_records_after_epoch_and_val_phase(tmp_path):
    hook = registry.build(TextLoggerHookConfig(interval=10))
    run, lines = make_run(tmp_path)
    state = hook.fn(Event(Stage.BEFORE_RUN, make_state(), Outputs(), run))
    done = make_state(iter=5, inner_iter=5)
    hook.fn(
        Event(
            Stage.AFTER_TRAIN_EPOCH,
            done,
            Outputs(metrics={"bbox_mAP": 0.5, "bbox_mAP_50": 0.75}),
            run,
        )
    )
    val_phase = dataclasses.replace(done, epoch=1, inner_iter=0)
    hook.fn(
        Event(
            Stage.AFTER_VAL_EPOCH, val_phase, Outputs(metrics={"bbox_mAP": torch.tensor(0.25)}), run
        )
    )
    assert read_jsonl(tmp_path / "metrics.jsonl") == [
        {"mode": "val", "epoch": 1, "global_iter": 5, "bbox_mAP": 0.5, "bbox_mAP_50": 0.75},
        {"mode": "val", "epoch": 1, "global_iter": 5, "bbox_mAP": 0.25},
    ]
    assert lines.lines[0] == "Epoch(val) [1]  bbox_mAP: 0.5000, bbox_mAP_50: 0.7500"
    assert state.hooks["text_logger"]["timed"] == 0


def test_jsonl_without_any_directory_is_a_clear_error():
    hook = registry.build(TextLoggerHookConfig())
    run = types.SimpleNamespace(work_dir=None)
    with pytest.raises(
        ValueError, match="TextLoggerHook: out_dir is None and the run has no work_dir"
    ):
        hook.fn(Event(Stage.BEFORE_RUN, make_state(), Outputs(), run))
    with pytest.raises(ValueError, match="TextLoggerHookConfig.interval"):
        TextLoggerHookConfig(interval=0)
