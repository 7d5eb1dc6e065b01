"""RunnerConfig.custom_hooks: registry-built hook configs ordered by their priorities (mmcv's
``custom_hooks`` / ``register_hook_from_cfg``), with the config's priority winning."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from engine_a_toys import ToyLoader, ToyNet, make_loss_fn, split, toy_data

from detfn.config import Config, from_json, to_json
from detfn.engine.events import Hook, Stage
from detfn.engine.hooks.evaluation import EarlyStoppingConfig
from detfn.engine.hooks.logger import TensorBoardHookConfig
from detfn.engine.runner import RunnerConfig, train
from detfn.registry import register, tag_of


@dataclass(frozen=True)
class RecordConfig(Config):
    """A test hook that appends its label to a list at every after_train_iter."""

    label: str = "a"
    priority: int | str = "NORMAL"


@register(RecordConfig, tag="TestRecordHook")
def build_record_hook(cfg: RecordConfig, *, calls: list[str]) -> Hook:
    def fn(event):
        if event.stage is Stage.AFTER_TRAIN_ITER:
            calls.append(cfg.label)

    # a builder that ignores the config's priority: the runner applies it
    return Hook(f"record_{cfg.label}", fn, 50)


@dataclass(frozen=True)
class NoPriorityConfig(Config):
    size: int = 1


register(NoPriorityConfig, tag="TestNoPriorityHook")(lambda cfg: None)


def _run(custom_hooks, calls, iters=2):
    torch.manual_seed(0)
    model = ToyNet()
    params, buffers = split(model)
    cfg = RunnerConfig(
        max_iters=iters, lr=None, checkpoint=None, text_logger=None, custom_hooks=custom_hooks
    )
    return train(
        cfg,
        params=params,
        buffers=buffers,
        loss_fn=make_loss_fn(model),
        train_loader=ToyLoader(toy_data(8), 4),
        hook_context={tag_of(RecordConfig): {"calls": calls}},
    )


def test_custom_hooks_run_in_priority_order_and_equal_priorities_keep_config_order():
    calls: list[str] = []
    hooks = (
        RecordConfig("low", priority="LOW"),  # 70
        RecordConfig("first", priority=5),
        RecordConfig("normal_1"),  # 50
        RecordConfig("high", priority="HIGH"),  # 30
        RecordConfig("normal_2", priority=50),
    )
    _run(hooks, calls)
    assert calls == ["first", "high", "normal_1", "normal_2", "low"] * 2


def test_custom_hooks_round_trip_through_json_with_their_type_tags():
    cfg = RunnerConfig(
        custom_hooks=(
            EarlyStoppingConfig("bbox_mAP", patience=3, priority="LOW"),
            TensorBoardHookConfig(interval=5),
            RecordConfig("x", priority=12),
        )
    )
    text = to_json(cfg)
    assert '"type": "EarlyStopping' in text and '"type": "TestRecordHook"' in text
    assert from_json(text, RunnerConfig) == cfg


def test_bad_custom_hooks_are_one_line():
    with pytest.raises(ValueError, match=r"RunnerConfig.custom_hooks \[0\] must be a hook config"):
        RunnerConfig(custom_hooks=(3,))
    with pytest.raises(ValueError, match=r"custom_hooks \[0\]: NoPriorityConfig has no priority"):
        RunnerConfig(custom_hooks=(NoPriorityConfig(),))
    with pytest.raises(ValueError, match=r"custom_hooks \[1\].priority is invalid"):
        RunnerConfig(custom_hooks=(RecordConfig(), RecordConfig(priority=101)))
