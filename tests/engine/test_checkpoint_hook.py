"""Checkpoint hook: mmcv's file names and keep rule, resume of the kept list, crash safety."""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass

import pytest
import torch

from detfn import registry
from detfn.config import Config, from_json
from detfn.engine import checkpoint_io
from detfn.engine.checkpoint_io import find_latest, load_checkpoint, state_from_checkpoint
from detfn.engine.events import Event, Outputs, Stage
from detfn.engine.hooks.checkpoint import CheckpointHookConfig, redundant_steps
from detfn.engine.state import TrainState


@dataclass(frozen=True)
class ToyExperiment(Config):
    lr: float = 0.02
    steps: tuple[int, ...] = (8, 11)


class ToyLoader:
    def __init__(self):
        self.position = {"epoch": 0, "batches_done": 0}

    def state_dict(self):
        return dict(self.position)


def make_state(**changes) -> TrainState:
    state = TrainState(
        params={"w": torch.zeros(2)},
        buffers={"b": torch.zeros(1)},
        opt_state={"momentum": {"w": torch.zeros(2)}},
        iters_per_epoch=4,
        max_epochs=7,
        hyper={"lr": (0.02,), "momentum": (0.9,)},
    )
    return dataclasses.replace(state, **changes)


def make_run(tmp_path):
    return types.SimpleNamespace(cfg=ToyExperiment(), work_dir=tmp_path, train_loader=ToyLoader())


def fire(hook, stage, state, run):
    new = hook.fn(Event(stage, state, Outputs(), run))
    return state if new is None else new


def train_epochs(hook, state, run, epochs, *, by_epoch=True):
    """Drive the hook like the loop: iterations, then the epoch end; counters advance after."""
    for _ in range(epochs):
        state = fire(hook, Stage.BEFORE_TRAIN_EPOCH, state, run)
        for _ in range(state.iters_per_epoch):
            state = dataclasses.replace(state, params={"w": state.params["w"] + 1.0})
            run.train_loader.position = {"epoch": state.epoch, "batches_done": state.inner_iter + 1}
            state = fire(hook, Stage.AFTER_TRAIN_ITER, state, run)
            state = dataclasses.replace(state, iter=state.iter + 1, inner_iter=state.inner_iter + 1)
        state = fire(hook, Stage.AFTER_TRAIN_EPOCH, state, run)
        state = dataclasses.replace(state, epoch=state.epoch + 1, inner_iter=0)
    return state


def names(path):
    return sorted(p.name for p in path.glob("*_*.pth"))


def test_by_epoch_keep_rule_matches_mmcv(tmp_path):
    hook = registry.build(CheckpointHookConfig(interval=2, max_keep_ckpts=2, save_last=True))
    assert (hook.name, hook.priority) == ("checkpoint", 50)
    run = make_run(tmp_path)
    state = fire(hook, Stage.BEFORE_RUN, make_state(), run)
    state = train_epochs(hook, state, run, 4)
    assert names(tmp_path) == ["epoch_2.pth", "epoch_4.pth"]
    state = train_epochs(hook, state, run, 3)
    # at 6, 6 - 2*2 = 2 goes; 7 is the off-grid last epoch: nothing on its grid is deleted
    assert names(tmp_path) == ["epoch_4.pth", "epoch_6.pth", "epoch_7.pth"]
    assert state.hooks["checkpoint"] == {"kept": [4, 6, 7], "last": "epoch_7.pth"}
    assert find_latest(tmp_path) == tmp_path / "epoch_7.pth"


def test_saved_state_resumes_after_the_event_and_meta_reloads_config(tmp_path):
    hook = registry.build(CheckpointHookConfig(interval=1))
    run = make_run(tmp_path)
    state = train_epochs(hook, fire(hook, Stage.BEFORE_RUN, make_state(), run), run, 2)
    ckpt = load_checkpoint(tmp_path / "epoch_2.pth")
    saved = ckpt["state"]
    assert (saved["epoch"], saved["iter"], saved["inner_iter"]) == (2, 8, 0)
    assert torch.equal(saved["params"]["w"], torch.full((2,), 8.0))
    assert saved["hooks"]["checkpoint"] == {"kept": [1, 2], "last": "epoch_2.pth"}
    assert from_json(ckpt["meta"]["config"], ToyExperiment) == ToyExperiment()
    assert ckpt["meta"]["loader"] == {"epoch": 1, "batches_done": 4}
    assert ckpt["meta"]["stage"] == "after_train_epoch"
    assert state.epoch == 2


def test_kept_list_survives_a_resume(tmp_path):
    cfg = CheckpointHookConfig(interval=2, max_keep_ckpts=2)
    run = make_run(tmp_path)
    first = registry.build(cfg)
    train_epochs(first, fire(first, Stage.BEFORE_RUN, make_state(), run), run, 4)
    assert names(tmp_path) == ["epoch_2.pth", "epoch_4.pth"]

    # a new process: fresh hook, state rebuilt from the latest checkpoint
    second = registry.build(cfg)
    resumed = state_from_checkpoint(load_checkpoint(find_latest(tmp_path)), make_state())
    assert resumed.epoch == 4 and resumed.hooks["checkpoint"]["kept"] == [2, 4]
    resumed = fire(second, Stage.BEFORE_RUN, resumed, run)
    train_epochs(second, resumed, run, 3)
    assert names(tmp_path) == ["epoch_4.pth", "epoch_6.pth", "epoch_7.pth"]


def test_by_iteration_names_and_keep_rule(tmp_path):
    hook = registry.build(CheckpointHookConfig(interval=3, by_epoch=False, max_keep_ckpts=1))
    run = make_run(tmp_path)
    state = make_state(max_epochs=None, max_iters=10, iters_per_epoch=10)
    state = train_epochs(hook, fire(hook, Stage.BEFORE_RUN, state, run), run, 1)
    assert names(tmp_path) == ["iter_10.pth", "iter_9.pth"]
    saved = load_checkpoint(tmp_path / "iter_9.pth")["state"]
    assert (saved["iter"], saved["inner_iter"], saved["epoch"]) == (9, 9, 0)


def test_interval_minus_one_saves_only_the_last(tmp_path):
    hook = registry.build(CheckpointHookConfig(interval=-1, save_last=True))
    run = make_run(tmp_path)
    train_epochs(hook, fire(hook, Stage.BEFORE_RUN, make_state(max_epochs=3), run), run, 3)
    assert names(tmp_path) == ["epoch_3.pth"]


def test_without_optimizer_and_into_out_dir(tmp_path):
    hook = registry.build(
        CheckpointHookConfig(save_optimizer=False, out_dir=str(tmp_path / "ckpts"))
    )
    run = make_run(tmp_path / "work")
    train_epochs(hook, fire(hook, Stage.BEFORE_RUN, make_state(), run), run, 1)
    assert load_checkpoint(tmp_path / "ckpts" / "epoch_1.pth")["state"]["opt_state"] is None


def test_crash_while_saving_leaves_previous_checkpoint_and_pointer(tmp_path, monkeypatch):
    hook = registry.build(CheckpointHookConfig(interval=1))
    run = make_run(tmp_path)
    state = train_epochs(hook, fire(hook, Stage.BEFORE_RUN, make_state(), run), run, 1)
    before = (tmp_path / "epoch_1.pth").read_bytes()
    real_save = torch.save

    def half_then_die(obj, f):
        real_save(obj, f)
        f.truncate(f.tell() // 2)
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint_io.torch, "save", half_then_die)
    with pytest.raises(OSError, match="No space left"):
        train_epochs(hook, state, run, 1)
    monkeypatch.undo()
    assert (tmp_path / "epoch_1.pth").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "epoch_1.pth",
        "latest.json",
        "latest.pth",
    ]
    assert find_latest(tmp_path) == tmp_path / "epoch_1.pth"
    assert load_checkpoint(find_latest(tmp_path))["state"]["epoch"] == 1


def test_redundant_steps_is_mmcvs_range_rule():
    # mmcv: range(current - k*interval, 0, -interval), stopping at the first missing file
    assert redundant_steps([5, 10, 15, 20], 20, 5, 2) == [5, 10]
    assert redundant_steps([5, 10, 15, 20, 22], 22, 5, 2) == []
    assert redundant_steps([1, 2, 3], 3, 1, 0) == []
    assert redundant_steps([1, 2, 3], 3, -1, 1) == []


def test_missing_out_dir_and_bad_config_are_clear(tmp_path):
    hook = registry.build(CheckpointHookConfig())
    with pytest.raises(ValueError, match="out_dir is None and the run has no work_dir"):
        hook.fn(Event(Stage.BEFORE_RUN, make_state(), {}, types.SimpleNamespace(work_dir=None)))
    with pytest.raises(ValueError, match="CheckpointHookConfig.priority is invalid"):
        CheckpointHookConfig(priority=101)
    with pytest.raises(ValueError, match="CheckpointHookConfig.out_dir"):
        CheckpointHookConfig(out_dir=" ")
    assert registry.build(CheckpointHookConfig(priority="below_normal")).priority == 60
