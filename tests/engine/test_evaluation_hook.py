"""Evaluation hook: mmcv's schedule, rule inference, best checkpoint across a resume, EMA."""

from __future__ import annotations

import dataclasses
import types

import pytest
import torch

from detfn import registry
from detfn.engine.checkpoint_io import load_checkpoint, save_checkpoint, state_from_checkpoint
from detfn.engine.events import Event, Outputs, Stage
from detfn.engine.hooks.evaluation import (
    EvaluationHookConfig,
    evaluation_due,
    infer_rule,
    is_better,
)
from detfn.engine.state import TrainState


def should_evaluate(cfg, stage, state):
    return evaluation_due(cfg)(Event(stage, state))


class ScriptedEvaluator:
    """Returns the next scripted metrics and records the weights it was given."""

    def __init__(self, scores, key="bbox_mAP"):
        self.scores = list(scores)
        self.key = key
        self.seen = []

    def __call__(self, state):
        self.seen.append({k: v.clone() for k, v in state.params.items()})
        return {self.key: self.scores.pop(0), "bbox_mAP_50": torch.tensor(0.5)}


def make_state(**changes):
    state = TrainState(
        params={"w": torch.zeros(2)}, buffers={}, opt_state=None, max_epochs=6, iters_per_epoch=2
    )
    return dataclasses.replace(state, **changes)


def run_epochs(hook, state, run, epochs):
    """Epoch ends as the loop yields them; returns the state and each epoch's outputs."""
    outputs_seen = []
    for _ in range(epochs):
        state = dataclasses.replace(state, iter=state.iter + state.iters_per_epoch)
        outputs = Outputs()
        state = hook.fn(Event(Stage.AFTER_TRAIN_EPOCH, state, outputs, run)) or state
        outputs_seen.append(outputs)
        state = dataclasses.replace(state, epoch=state.epoch + 1, inner_iter=0)
    return state, outputs_seen


def best_files(path):
    return sorted(p.name for p in path.glob("best_*.pth"))


@pytest.mark.parametrize(
    "start, interval, expected",
    [
        (None, 1, [1, 2, 3, 4, 5, 6]),
        (None, 2, [2, 4, 6]),
        (3, 2, [3, 5]),
        (0, 2, [2, 4, 6]),
        (1, 3, [1, 4]),
    ],
)
def test_schedule_by_epoch_matches_mmcv(start, interval, expected):
    cfg = EvaluationHookConfig(start=start, interval=interval)
    due = [
        e + 1
        for e in range(6)
        if should_evaluate(cfg, Stage.AFTER_TRAIN_EPOCH, make_state(epoch=e, iter=2 * (e + 1)))
    ]
    assert due == expected
    # only start=0 evaluates the initial weights, and only at the very start of the run
    assert should_evaluate(cfg, Stage.BEFORE_TRAIN_EPOCH, make_state()) == (start == 0)
    assert not should_evaluate(cfg, Stage.BEFORE_TRAIN_EPOCH, make_state(epoch=3, iter=6))


def test_schedule_by_iteration():
    cfg = EvaluationHookConfig(by_epoch=False, interval=4)
    due = [
        i + 1 for i in range(10) if should_evaluate(cfg, Stage.AFTER_TRAIN_ITER, make_state(iter=i))
    ]
    assert due == [4, 8]
    assert not should_evaluate(cfg, Stage.AFTER_TRAIN_EPOCH, make_state(epoch=3))


def test_rule_inference_like_mmcv():
    assert infer_rule("bbox_mAP", "auto") == "greater"
    assert infer_rule("AR@100", "auto") == "greater"
    assert infer_rule("acc", "auto") == "greater"
    assert infer_rule("val_loss", "auto") == "less"
    assert infer_rule("loss", "greater") == "greater"
    with pytest.raises(ValueError, match="cannot infer whether a greater or a smaller 'fps'"):
        infer_rule("fps", "auto")
    with pytest.raises(ValueError, match="EvaluationHookConfig.rule cannot infer"):
        EvaluationHookConfig(save_best="fps")
    EvaluationHookConfig(save_best="fps", rule="greater")
    assert (
        is_better(0.3, None, "less")
        and is_better(0.2, 0.3, "less")
        and not is_better(0.3, 0.3, "greater")
    )
    assert not is_better(float("nan"), None, "greater")


def test_best_checkpoint_is_kept_replaced_and_survives_a_resume(tmp_path):
    cfg = EvaluationHookConfig(save_best="auto")
    evaluator = ScriptedEvaluator([0.1, 0.3, 0.2, 0.25, 0.4])
    run = types.SimpleNamespace(cfg=None, work_dir=tmp_path, evaluate=evaluator)
    hook = registry.build(cfg)
    assert (hook.name, hook.priority) == ("evaluation", 70)
    state = hook.fn(Event(Stage.BEFORE_RUN, make_state(), {}, run))
    state, outputs = run_epochs(hook, state, run, 2)
    assert outputs[1].metrics == {"bbox_mAP": 0.3, "bbox_mAP_50": 0.5}
    assert best_files(tmp_path) == ["best_bbox_mAP_epoch_2.pth"]
    mine = state.hooks["evaluation"]
    assert mine == {
        "best_score": 0.3,
        "best_ckpt": "best_bbox_mAP_epoch_2.pth",
        "key": "bbox_mAP",
        "rule": "greater",
    }
    best = load_checkpoint(tmp_path / "best_bbox_mAP_epoch_2.pth")["state"]
    assert best["epoch"] == 2 and best["hooks"]["evaluation"]["best_score"] == 0.3

    # save as a periodic checkpoint would, then resume in a new process with a new hook
    path = save_checkpoint(tmp_path / "epoch_2.pth", dataclasses.replace(state))
    resumed = state_from_checkpoint(load_checkpoint(path), make_state())
    hook = registry.build(cfg)
    resumed = hook.fn(Event(Stage.BEFORE_RUN, resumed, Outputs(), run)) or resumed
    assert resumed.hooks["evaluation"]["best_score"] == 0.3
    resumed, _ = run_epochs(hook, resumed, run, 2)  # 0.2 and 0.25 do not beat the stored 0.3
    assert best_files(tmp_path) == ["best_bbox_mAP_epoch_2.pth"]
    resumed, _ = run_epochs(hook, resumed, run, 1)  # 0.4 does
    assert best_files(tmp_path) == ["best_bbox_mAP_epoch_5.pth"]
    assert resumed.hooks["evaluation"]["best_score"] == 0.4


def test_a_resume_with_another_key_starts_a_new_best(tmp_path):
    stored = {
        "best_score": 0.9,
        "best_ckpt": "best_bbox_mAP_epoch_1.pth",
        "key": "bbox_mAP",
        "rule": "greater",
    }
    (tmp_path / "best_bbox_mAP_epoch_1.pth").write_bytes(b"old")
    evaluator = ScriptedEvaluator([0.2], key="segm_mAP")
    run = types.SimpleNamespace(cfg=None, work_dir=tmp_path, evaluate=evaluator)
    hook = registry.build(EvaluationHookConfig(save_best="segm_mAP"))
    state = hook.fn(Event(Stage.BEFORE_RUN, make_state(hooks={"evaluation": stored}), {}, run))
    assert state is None
    state, _ = run_epochs(hook, make_state(epoch=1, iter=2, hooks={"evaluation": stored}), run, 1)
    assert state.hooks["evaluation"]["best_score"] == 0.2
    assert best_files(tmp_path) == ["best_segm_mAP_epoch_2.pth"]


def test_less_rule_by_iteration_and_metrics_in_outputs(tmp_path):
    cfg = EvaluationHookConfig(by_epoch=False, interval=2, save_best="val_loss")
    evaluator = ScriptedEvaluator([0.5, 0.7, 0.4], key="val_loss")
    run = types.SimpleNamespace(cfg=None, work_dir=tmp_path, evaluate=evaluator)
    hook = registry.build(cfg)
    state = hook.fn(Event(Stage.BEFORE_RUN, make_state(), {}, run))
    for i in range(6):
        outputs = Outputs(loss=torch.tensor(1.0))
        state = (
            hook.fn(Event(Stage.AFTER_TRAIN_ITER, dataclasses.replace(state, iter=i), outputs, run))
            or state
        )
        assert (outputs.metrics is not None) == ((i + 1) % 2 == 0)
    assert best_files(tmp_path) == ["best_val_loss_iter_6.pth"]
    assert (
        state.hooks["evaluation"]["rule"] == "less"
        and state.hooks["evaluation"]["best_score"] == 0.4
    )


def test_initial_evaluation_and_ema_weights(tmp_path):
    evaluator = ScriptedEvaluator([0.1, 0.2])
    run = types.SimpleNamespace(cfg=None, work_dir=tmp_path, evaluate=evaluator)
    hook = registry.build(EvaluationHookConfig(start=0))
    ema = {"ema": {"params": {"w": torch.full((2,), 7.0)}}}
    state = hook.fn(Event(Stage.BEFORE_RUN, make_state(hooks=ema), {}, run)) or make_state(
        hooks=ema
    )
    outputs = Outputs()
    hook.fn(Event(Stage.BEFORE_TRAIN_EPOCH, state, outputs, run))
    assert outputs.metrics["bbox_mAP"] == 0.1
    assert torch.equal(evaluator.seen[0]["w"], torch.full((2,), 7.0))
    raw = registry.build(EvaluationHookConfig(use_ema=False))
    raw.fn(Event(Stage.AFTER_TRAIN_EPOCH, state, Outputs(), run))
    assert torch.equal(evaluator.seen[1]["w"], torch.zeros(2))
    assert best_files(tmp_path) == []


def test_missing_evaluate_and_unknown_key_are_clear(tmp_path):
    hook = registry.build(EvaluationHookConfig(save_best="segm_mAP"))
    with pytest.raises(ValueError, match="run context has no evaluate"):
        hook.fn(Event(Stage.BEFORE_RUN, make_state(), {}, types.SimpleNamespace(work_dir=tmp_path)))
    run = types.SimpleNamespace(cfg=None, work_dir=tmp_path, evaluate=ScriptedEvaluator([0.1]))
    state = hook.fn(Event(Stage.BEFORE_RUN, make_state(), {}, run))
    with pytest.raises(ValueError, match="save_best key 'segm_mAP' is not a number in the metrics"):
        hook.fn(Event(Stage.AFTER_TRAIN_EPOCH, state, Outputs(), run))
    with pytest.raises(ValueError, match="EvaluationHookConfig.start"):
        EvaluationHookConfig(start=-1)
