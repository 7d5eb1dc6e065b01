"""Wandb hook with an injected fake ``init``: no network, calls asserted."""

from __future__ import annotations

import dataclasses
import sys
import types
from dataclasses import dataclass

import pytest
import torch

from detfn import registry
from detfn.config import Config, to_dict
from detfn.engine.events import Event, Outputs, Stage
from detfn.engine.hooks.wandb import WandbHookConfig, has_api_key, resolve_mode
from detfn.engine.state import TrainState


@dataclass(frozen=True)
class ToySchedule(Config):
    steps: tuple[int, ...] = (8, 11)


@dataclass(frozen=True)
class ToyExperiment(Config):
    lr: float = 0.02
    schedule: ToySchedule = ToySchedule()


class FakeRun:
    def __init__(self, **kwargs):
        self.init_kwargs = kwargs
        self.id = "run123"
        self.logged = []
        self.finished = []

    def log(self, data, step):
        self.logged.append((step, data))

    def finish(self, exit_code=0):
        self.finished.append(exit_code)


class FakeInit:
    def __init__(self):
        self.runs = []

    def __call__(self, **kwargs):
        self.runs.append(FakeRun(**kwargs))
        return self.runs[-1]


def make_state(**changes):
    state = TrainState(
        params={"w": torch.zeros(1)},
        buffers={},
        opt_state=None,
        max_epochs=1,
        iters_per_epoch=4,
        hyper={"lr": (0.02, 0.01), "momentum": (0.9, 0.85)},
    )
    return dataclasses.replace(state, **changes)


def drive(hook, run, *, error=None):
    """before_run, one epoch of 4 iterations, an evaluation at the epoch end, after_run."""
    state = hook.fn(Event(Stage.BEFORE_RUN, make_state(), Outputs(), run))
    state = hook.fn(Event(Stage.BEFORE_TRAIN_EPOCH, state, Outputs(), run)) or state
    for i in range(4):
        outputs = Outputs(
            loss=torch.tensor(float(i + 1)), losses={"loss_cls": torch.tensor(1.0)}, time=0.5
        )
        state = hook.fn(Event(Stage.AFTER_TRAIN_ITER, state, outputs, run)) or state
        state = dataclasses.replace(state, iter=i + 1, inner_iter=i + 1)
    hook.fn(
        Event(
            Stage.AFTER_TRAIN_EPOCH,
            state,
            Outputs(metrics={"bbox_mAP": 0.3, "copypaste": "0.3 0.5"}),
            run,
        )
    )
    hook.fn(Event(Stage.AFTER_RUN, state, Outputs(), run, error=error))
    return state


def test_init_log_and_finish_calls(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    fake = FakeInit()
    cfg = WandbHookConfig(project="detfn", name="r50", tags=("a", "b"), interval=2)
    hook = registry.build(cfg, init=fake)
    assert (hook.name, hook.priority) == ("wandb", 90)
    run = types.SimpleNamespace(cfg=ToyExperiment(), work_dir=tmp_path)
    state = drive(hook, run)
    (wandb_run,) = fake.runs
    assert wandb_run.init_kwargs == {
        "project": "detfn",
        "name": "r50",
        "tags": ["a", "b"],
        "entity": None,
        "mode": "offline",
        "dir": str(tmp_path),
        "config": to_dict(ToyExperiment()),
    }
    assert wandb_run.init_kwargs["config"] == {"lr": 0.02, "schedule": {"steps": [8, 11]}}
    expected_train = [
        (
            2,
            {
                "train/time": 0.5,
                "train/loss_cls": 1.0,
                "train/loss": 1.5,
                "train/lr": 0.02,
                "train/lr_group1": 0.01,
                "train/momentum": 0.9,
                "train/momentum_group1": 0.85,
                "epoch": 1,
            },
        ),
        (
            4,
            {
                "train/time": 0.5,
                "train/loss_cls": 1.0,
                "train/loss": 3.5,
                "train/lr": 0.02,
                "train/lr_group1": 0.01,
                "train/momentum": 0.9,
                "train/momentum_group1": 0.85,
                "epoch": 1,
            },
        ),
    ]
    assert wandb_run.logged == [*expected_train, (4, {"val/bbox_mAP": 0.3, "epoch": 1})]
    steps = [step for step, _ in wandb_run.logged]
    assert steps == sorted(steps)
    assert wandb_run.finished == [0]
    assert state.hooks["wandb"]["run_id"] == "run123"


def test_finish_with_exit_code_one_after_a_failure_and_resume_id(tmp_path):
    fake = FakeInit()
    hook = registry.build(WandbHookConfig(mode="offline"), init=fake)
    run = types.SimpleNamespace(cfg=None, work_dir=None)
    drive(hook, run, error=RuntimeError("boom"))
    assert fake.runs[0].finished == [1]
    assert fake.runs[0].init_kwargs["config"] is None and fake.runs[0].init_kwargs["dir"] is None
    # a resumed run continues the same wandb run
    resumed = make_state(hooks={"wandb": {"buffer": {}, "run_id": "run123"}})
    hook.fn(Event(Stage.BEFORE_RUN, resumed, Outputs(), run))
    assert (
        fake.runs[1].init_kwargs["id"] == "run123" and fake.runs[1].init_kwargs["resume"] == "allow"
    )
    hook.fn(Event(Stage.AFTER_RUN, resumed, Outputs(), run))
    hook.fn(Event(Stage.AFTER_RUN, resumed, Outputs(), run))  # a second after_run finishes nothing
    assert fake.runs[1].finished == [0]


def test_auto_mode_is_online_only_when_logged_in(tmp_path):
    missing = str(tmp_path / "no_netrc")
    assert resolve_mode("auto", {}, missing) == "offline"
    assert resolve_mode("auto", {"WANDB_API_KEY": "k" * 40}, missing) == "online"
    netrc_file = tmp_path / "netrc"
    netrc_file.write_text("machine api.wandb.ai\n  login user\n  password " + "x" * 40 + "\n")
    netrc_file.chmod(0o600)
    assert has_api_key({}, str(netrc_file))
    assert resolve_mode("auto", {}, str(netrc_file)) == "online"
    assert not has_api_key({"WANDB_BASE_URL": "https://wandb.example.com"}, str(netrc_file))
    assert (
        resolve_mode("auto", {"WANDB_MODE": "disabled", "WANDB_API_KEY": "k"}, missing)
        == "disabled"
    )
    assert resolve_mode("auto", {"WANDB_MODE": "dryrun"}, missing) == "offline"
    for explicit in ("online", "offline", "disabled"):
        assert resolve_mode(explicit, {"WANDB_API_KEY": "k"}, missing) == explicit


def test_disabled_mode_with_the_real_wandb(tmp_path):
    hook = registry.build(WandbHookConfig(mode="disabled", project="detfn", interval=1))
    run = types.SimpleNamespace(cfg=ToyExperiment(), work_dir=tmp_path)
    state = drive(hook, run)
    assert isinstance(state.hooks["wandb"]["run_id"], (str, type(None)))


def test_wandb_is_imported_lazily_and_config_checks(tmp_path, monkeypatch):
    import detfn.engine.hooks.wandb as module

    assert not hasattr(module, "wandb")  # no module-level ``import wandb``
    monkeypatch.setitem(sys.modules, "wandb", None)  # any ``import wandb`` now raises
    fake = FakeInit()
    hook = module.build_wandb_hook(module.WandbHookConfig(mode="offline"), init=fake)
    drive(hook, types.SimpleNamespace(cfg=ToyExperiment(), work_dir=tmp_path))
    assert fake.runs[0].finished == [0]
    with pytest.raises(ValueError, match="WandbHookConfig.interval"):
        WandbHookConfig(interval=0)
