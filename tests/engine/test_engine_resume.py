"""An interrupted and resumed run ends bit for bit equal to the uninterrupted run (CPU).

Uses ENGINE-C's checkpoint hook and checkpoint_io through ``train(..., auto_resume=True)``.
The toy run has every source of state: BN statistics, dropout (global RNG), a shuffling loader
(resumed mid-epoch), SGD momentum, a warmup + step lr schedule, EMA with its epoch-end swap.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from engine_a_toys import ToyLoader, ToyNet, make_loss_fn, split, toy_data

from detfn.engine.events import Hook, Stage
from detfn.engine.hooks.checkpoint import CheckpointHookConfig
from detfn.engine.hooks.ema import EMAConfig
from detfn.engine.optim import SGDConfig
from detfn.engine.runner import RunnerConfig, train
from detfn.engine.schedules import StepSchedule


class Crash(Exception):
    """Stands for a killed process."""


CFG = RunnerConfig(
    max_epochs=3,
    optimizer=SGDConfig(lr=0.05, momentum=0.9, weight_decay=1e-3),
    lr=StepSchedule(step=(2,), warmup="linear", warmup_iters=3, warmup_ratio=0.1),
    ema=EMAConfig(momentum=0.2, warm_up=2),
    checkpoint=CheckpointHookConfig(interval=1, by_epoch=False),
    timer=None,
    text_logger=None,
)


def run(cfg, work_dir, crash_at=None):
    torch.manual_seed(0)
    model = ToyNet(bn=True, dropout=0.3)
    params, buffers = split(model)
    hooks = []
    if crash_at is not None:

        def crash(event):
            if event.stage is Stage.AFTER_TRAIN_ITER and event.state.iter == crash_at:
                raise Crash(f"killed after iteration {crash_at}")

        hooks.append(Hook("crash", crash, 95))  # after the checkpoint hook (NORMAL)
    torch.manual_seed(1234)  # the run's seed; a resumed run restores the saved RNG instead
    return train(
        cfg,
        params=params,
        buffers=buffers,
        loss_fn=make_loss_fn(model),
        train_loader=ToyLoader(toy_data(8), batch_size=2, seed=5),
        work_dir=work_dir,
        hooks=hooks,
    )


@pytest.mark.parametrize("crash_at", [5, 7])  # mid-epoch, and the last iteration of epoch 1
def test_interrupted_and_resumed_run_equals_uninterrupted_run_bit_for_bit(tmp_path, crash_at):
    full = run(CFG, tmp_path / "full")
    with pytest.raises(Crash):
        run(CFG, tmp_path / "cut", crash_at=crash_at)
    resumed = run(replace(CFG, auto_resume=True), tmp_path / "cut")
    assert (resumed.epoch, resumed.iter) == (full.epoch, full.iter) == (3, 12)
    for name, tensor in full.params.items():
        assert torch.equal(resumed.params[name], tensor), name
    for name, tensor in full.buffers.items():
        assert torch.equal(resumed.buffers[name], tensor), name
    for name, tensor in full.opt_state["momentum_buffer"].items():
        assert torch.equal(resumed.opt_state["momentum_buffer"][name], tensor), name
    for name, tensor in full.hooks["ema"]["params"].items():
        assert torch.equal(resumed.hooks["ema"]["params"][name], tensor), name
    assert resumed.lr == full.lr


def test_a_different_seed_changes_the_result(tmp_path):
    """Guards the test above: dropout and shuffling really depend on the saved RNG state."""
    full = run(CFG, tmp_path / "a")
    torch.manual_seed(0)
    model = ToyNet(bn=True, dropout=0.3)
    params, buffers = split(model)
    torch.manual_seed(99)
    other = train(CFG, params=params, buffers=buffers, loss_fn=make_loss_fn(model),
                  train_loader=ToyLoader(toy_data(8), batch_size=2, seed=5),
                  work_dir=tmp_path / "b")  # fmt: skip
    assert not torch.equal(other.params["fc.weight"], full.params["fc.weight"])


def test_load_from_takes_weights_only_and_starts_at_zero(tmp_path):
    first = run(replace(CFG, max_epochs=1), tmp_path / "first")
    cfg = replace(CFG, max_epochs=1, load_from=str(tmp_path / "first" / "iter_4.pth"), ema=None,
                  checkpoint=None)  # fmt: skip
    seen = []
    torch.manual_seed(0)
    model = ToyNet(bn=True, dropout=0.3)
    params, buffers = split(model)

    def probe_fn(event):
        if event.stage is Stage.BEFORE_RUN:  # copies: training updates the tensors in place
            state = event.state
            params = {k: v.clone() for k, v in state.params.items()}
            buffers = {k: v.clone() for k, v in state.buffers.items()}
            seen.append(replace(state, params=params, buffers=buffers))

    probe = Hook("probe", probe_fn)
    train(cfg, params=params, buffers=buffers, loss_fn=make_loss_fn(model),
          train_loader=ToyLoader(toy_data(8), 2, seed=5), hooks=[probe])  # fmt: skip
    start = seen[0]
    assert (start.epoch, start.iter) == (0, 0)
    assert "ema" not in start.hooks
    # at iteration 4 of the first run EMA was swapped in at the epoch end; the checkpoint at
    # after_train_iter (before the swap) holds the raw training weights
    for name in params:
        assert torch.equal(start.params[name], first.hooks["ema"]["raw"][name])
    assert torch.equal(start.buffers["bn.running_mean"], first.buffers["bn.running_mean"])
