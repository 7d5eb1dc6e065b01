"""The thin engine's contracts: any hyperparameter is scheduled by the same code (weight decay
with a cosine schedule, checked against torch.optim.SGD), the start-up check of the typed
outputs, and an engine that imports nothing of the models or the data."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from math import cos, pi

import pytest
import torch
from engine_a_toys import ToyLoader, ToyNet, make_loss_fn, split, toy_data

from detfn.engine.driver import check_outputs, drive, order_hooks
from detfn.engine.events import Hook, Outputs, Stage
from detfn.engine.loop import RunContext, train_loop
from detfn.engine.optim import SGDConfig
from detfn.engine.runner import RunnerConfig, train
from detfn.engine.schedules import CosineSchedule
from detfn.engine.state import TrainState

QUIET = dict(lr=None, checkpoint=None, timer=None, text_logger=None, nan_guard=None)
REPO = pathlib.Path(__file__).resolve().parents[2]


def test_weight_decay_follows_a_cosine_schedule_and_drives_the_update():
    """6 iterations of SGD whose weight decay anneals from 0.05 to 0.005 (min_ratio 0.1);
    the reference is torch.optim.SGD with its group's weight_decay set to the closed form."""
    torch.manual_seed(0)
    model = ToyNet(bn=False)
    params, buffers = split(model)
    data = toy_data(12)
    seen = []
    record = Hook(
        "record", lambda e: seen.append(e.state.hyper["weight_decay"][0])
        if e.stage is Stage.BEFORE_TRAIN_ITER else None, 50,
    )  # fmt: skip
    cfg = RunnerConfig(
        max_iters=6,
        optimizer=SGDConfig(lr=0.1, momentum=0.9, weight_decay=0.05),
        weight_decay=CosineSchedule(by_epoch=False, min_ratio=0.1),
        sampler_seed=None,
        **QUIET,
    )
    loader = ToyLoader(data, 2, shuffle=False)
    final = train(cfg, params=params, buffers=buffers, loss_fn=make_loss_fn(model),
                  train_loader=loader, hooks=[record])  # fmt: skip
    expected = [0.005 + 0.5 * (0.05 - 0.005) * (1 + cos(pi * t / 6)) for t in range(6)]
    assert seen == pytest.approx(expected, rel=1e-12, abs=0)
    assert final.base["weight_decay"] == (0.05,)  # the base stays; hyper is what was used

    reference = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.05)
    for t, batch in enumerate(ToyLoader(data, 2, shuffle=False)):
        reference.param_groups[0]["weight_decay"] = expected[t]
        reference.zero_grad()
        loss, _ = make_loss_fn(model)(dict(model.named_parameters()), buffers, batch)
        loss.backward()
        reference.step()
    for name, p in model.named_parameters():
        torch.testing.assert_close(final.params[name], p.detach(), rtol=1e-6, atol=1e-7)


def _reader(name: str, priority: int, **declared) -> Hook:
    return Hook(name, lambda e: None, priority, **declared)


def test_a_hook_reading_an_output_nobody_writes_fails_at_start_up():
    logger = _reader("my_logger", 90, reads=("loss", "grad_norm"))
    with pytest.raises(ValueError, match="hook 'my_logger' reads the output 'grad_norm', but no "
                       "hook writes it"):  # fmt: skip
        check_outputs(order_hooks([logger]))
    # written by a hook that runs later: the message names both priorities
    writer = _reader("clipper", 95, writes=("grad_norm",))
    with pytest.raises(ValueError, match=r"'clipper' \(priority 95\) writes it later than this "
                       "hook's priority 90"):  # fmt: skip
        check_outputs(order_hooks([logger, writer]))
    check_outputs(order_hooks([logger, _reader("clipper", 40, writes=("grad_norm",))]))
    # optional reads pass without a writer, but not with a later one
    check_outputs(order_hooks([_reader("quiet", 90, reads_optional=("time",))]))
    with pytest.raises(ValueError, match="reads the output 'time'"):
        check_outputs(
            order_hooks(
                [
                    _reader("quiet", 90, reads_optional=("time",)),
                    _reader("timer", 95, writes=("time",)),
                ]
            )
        )
    # the loop writes metrics in val phases, yet an evaluation hook after the logger is an error
    log, late = (
        _reader("log", 90, reads_optional=("metrics",)),
        _reader("eval", 95, writes=("metrics",)),
    )
    with pytest.raises(ValueError, match=r"'eval' \(priority 95\) writes it later"):
        check_outputs(order_hooks([log, late]))
    with pytest.raises(ValueError, match="names an unknown output 'gradnorm'"):
        check_outputs(order_hooks([_reader("typo", 90, reads=("gradnorm",))]))


def test_drive_refuses_the_run_before_any_event_and_writes_are_owned():
    events = []
    state = TrainState(params={}, buffers={}, opt_state=None, max_iters=2)
    run = RunContext(train_loader=[0, 1], train_step=lambda s, b: {"loss": torch.tensor(1.0)})
    spy = Hook("spy", lambda e: events.append(e.stage), 0)
    bad = _reader("needs_norm", 90, reads=("grad_norm",))
    with pytest.raises(ValueError, match="'needs_norm' reads the output 'grad_norm'"):
        drive(train_loop(state, run), [spy, bad])
    assert events == []

    def thief(event):
        if event.stage is Stage.AFTER_TRAIN_ITER:
            event.outputs.grad_norm = torch.tensor(0.0)

    with pytest.raises(AttributeError, match="hook 'thief' may not write the step output "
                       "'grad_norm': it declares writes=\\['time'\\]"):  # fmt: skip
        drive(train_loop(state, run), [Hook("thief", thief, 50, writes=("time",))])
    outputs = Outputs()
    outputs.grad_norm = torch.tensor(1.0)  # outside a dispatch nothing is locked


def test_import_detfn_engine_loads_no_models_and_no_data():
    code = (
        "import sys, detfn.engine\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('detfn.models', 'detfn.data',"
        " 'detfn.apis')))\n"
        "print(bad)\n"
        "assert not bad, bad\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "[]"
