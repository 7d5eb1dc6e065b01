"""Timer hook: data_time and time from an injected clock."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from detfn import registry
from detfn.engine.events import Event, Outputs, Stage
from detfn.engine.hooks.logger import TimerHookConfig
from detfn.engine.state import TrainState


class FakeClock:
    def __init__(self, readings):
        self.readings = list(readings)

    def __call__(self):
        return self.readings.pop(0)


def test_data_time_and_time_per_iteration():
    # epoch start 10.0; iter 0: data ready 10.5, done 12.0; iter 1: data ready 12.25, done 13.0
    clock = FakeClock([10.0, 10.5, 12.0, 12.25, 13.0])
    hook = registry.build(TimerHookConfig(), clock=clock)
    assert (hook.name, hook.priority) == ("timer", 70)
    state = TrainState(params={"w": torch.zeros(1)}, buffers={}, opt_state=None)
    seen = []
    state = hook.fn(Event(Stage.BEFORE_TRAIN_EPOCH, state)) or state
    for i in range(2):
        state = hook.fn(Event(Stage.BEFORE_TRAIN_ITER, dataclasses.replace(state, iter=i))) or state
        outputs = Outputs(loss=torch.tensor(1.0))
        state = hook.fn(Event(Stage.AFTER_TRAIN_ITER, state, outputs)) or state
        seen.append((outputs.data_time, outputs.time))
    assert seen == [(0.5, 2.0), (0.25, 1.0)]
    assert state.hooks["timer"] == {"last": 13.0, "data_time": 0.0}
    assert clock.readings == []


def test_other_stages_leave_the_state_alone_and_bad_priority_fails():
    hook = registry.build(TimerHookConfig(priority="lowest"), clock=FakeClock([]))
    assert hook.priority == 100
    state = TrainState(params={}, buffers={}, opt_state=None)
    assert hook.fn(Event(Stage.AFTER_TRAIN_EPOCH, state)) is None
    with pytest.raises(ValueError, match="TimerHookConfig.priority is invalid"):
        TimerHookConfig(priority="sometimes")
