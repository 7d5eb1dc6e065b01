"""Checkpoint files: round trip, weights-only refusal, clear errors, atomic writes."""

from __future__ import annotations

import dataclasses
import json
import random
from typing import NamedTuple

import pytest
import torch

from detfn.engine import checkpoint_io
from detfn.engine.checkpoint_io import (
    CheckpointError,
    advance_counters,
    find_latest,
    load_checkpoint,
    load_weights,
    merge_weights,
    save_checkpoint,
    state_from_checkpoint,
    write_latest,
)
from detfn.engine.events import Stage
from detfn.engine.state import TrainState


@dataclasses.dataclass(frozen=True)
class ToySGDState:
    momentum: dict
    step: int


class ToyAdamMoments(NamedTuple):
    mu: dict
    nu: dict


def make_state(seed: int = 0, **changes) -> TrainState:
    gen = torch.Generator().manual_seed(seed)
    params = {
        "fc.weight": torch.randn(3, 4, generator=gen),
        "fc.bias": torch.randn(3, generator=gen),
    }
    buffers = {
        "bn.running_mean": torch.randn(4, generator=gen),
        "bn.num_batches_tracked": torch.tensor(7),
    }
    opt_state = (
        ToySGDState(momentum={k: torch.randn_like(v) for k, v in params.items()}, step=5),
        ToyAdamMoments(mu={"a": torch.ones(2)}, nu={"a": torch.zeros(2)}),
    )
    base = TrainState(
        params=params,
        buffers=buffers,
        opt_state=opt_state,
        epoch=2,
        iter=20,
        inner_iter=3,
        max_epochs=12,
        iters_per_epoch=8,
        base={"lr": (0.02, 0.01), "momentum": (0.9, 0.9)},
        hyper={"lr": (0.015, 0.0075), "momentum": (0.9, 0.9)},
        rng={"torch": torch.get_rng_state(), "python": random.getstate()},
        hooks={
            "checkpoint": {"kept": [1, 2], "last": "epoch_2.pth"},
            "evaluation": {"best_score": 0.5},
        },
    )
    return dataclasses.replace(base, **changes)


def fresh_like(state: TrainState) -> TrainState:
    """What a new run builds before resuming: same structure, different values."""
    zeros = lambda d: {k: torch.zeros_like(v) for k, v in d.items()}  # noqa: E731
    sgd = state.opt_state[0]
    return TrainState(
        params=zeros(state.params),
        buffers=zeros(state.buffers),
        opt_state=(ToySGDState(momentum=zeros(sgd.momentum), step=0), ToyAdamMoments(mu={}, nu={})),
        max_epochs=24,
        iters_per_epoch=8,
        base={"lr": (0.02, 0.01), "momentum": (0.9, 0.9)},
    )


def test_round_trip_restores_everything_and_keeps_types(tmp_path):
    state = make_state()
    path = save_checkpoint(
        tmp_path / "epoch_3.pth",
        state,
        meta={"config": "{}", "loader": {"epoch": 2, "batches_done": 3}},
    )
    ckpt = load_checkpoint(path)
    assert ckpt["meta"]["loader"] == {"epoch": 2, "batches_done": 3}
    assert ckpt["meta"]["epoch"] == 2 and ckpt["meta"]["iter"] == 20
    assert ckpt["meta"]["detfn_version"]
    resumed = state_from_checkpoint(ckpt, fresh_like(state))
    for name in state.params:
        assert torch.equal(resumed.params[name], state.params[name])
    assert torch.equal(resumed.buffers["bn.num_batches_tracked"], torch.tensor(7))
    sgd, adam = resumed.opt_state
    assert isinstance(sgd, ToySGDState) and sgd.step == 5
    assert torch.equal(sgd.momentum["fc.bias"], state.opt_state[0].momentum["fc.bias"])
    assert isinstance(adam, ToyAdamMoments) and torch.equal(adam.mu["a"], torch.ones(2))
    assert (resumed.epoch, resumed.iter, resumed.inner_iter) == (2, 20, 3)
    assert resumed.lr == (0.015, 0.0075) and isinstance(resumed.lr, tuple)
    assert resumed.momentum == (0.9, 0.9)
    assert torch.equal(resumed.rng["torch"], state.rng["torch"])
    assert resumed.rng["python"] == state.rng["python"]
    random.setstate(resumed.rng["python"])  # the restored value is usable as it is
    assert resumed.hooks["checkpoint"] == {"kept": [1, 2], "last": "epoch_2.pth"}
    # the new run's length and base lr come from the new run, not from the file
    assert resumed.max_epochs == 24


def test_save_without_optimizer_keeps_the_fresh_optimizer_state(tmp_path):
    state = make_state()
    path = save_checkpoint(tmp_path / "a.pth", state, save_optimizer=False)
    ckpt = load_checkpoint(path)
    assert ckpt["state"]["opt_state"] is None
    like = fresh_like(state)
    resumed = state_from_checkpoint(ckpt, like)
    assert resumed.opt_state is like.opt_state


def test_file_with_pickled_code_is_refused_with_one_line(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.ones(1)}, "payload": ToyPickled()}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and "not a weights-only checkpoint" in message
    assert "ToyPickled" in message


class ToyPickled:
    """A class instance: loading it would need to import and run code."""


@pytest.mark.parametrize("content", [None, b"", b"not a checkpoint at all", "half"])
def test_missing_or_corrupt_file_gives_one_line_naming_it(tmp_path, content):
    path = tmp_path / "bad.pth"
    if content == "half":
        save_checkpoint(tmp_path / "good.pth", make_state())
        data = (tmp_path / "good.pth").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert ("not found" in message) if content is None else ("corrupt" in message)


def test_enums_and_numpy_scalars_are_stored_as_builtins(tmp_path):
    import numpy as np

    hooks = {"x": {"stage": Stage.AFTER_TRAIN_ITER, "score": np.float64(0.25), "n": np.int64(3)}}
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "a.pth", make_state(hooks=hooks)))
    stored = ckpt["state"]["hooks"]["x"]
    assert stored == {"stage": "after_train_iter", "score": 0.25, "n": 3}
    assert [type(v) for v in stored.values()] == [str, float, int]
    with pytest.raises(CheckpointError, match=r"state\.hooks\.x holds a ndarray"):
        save_checkpoint(tmp_path / "b.pth", make_state(hooks={"x": np.zeros(2)}))


def test_state_with_an_object_is_refused_on_save_naming_its_path(tmp_path):
    state = make_state(hooks={"ema": {"fn": lambda x: x}})
    with pytest.raises(CheckpointError, match=r"state\.hooks\.ema\.fn holds a function"):
        save_checkpoint(tmp_path / "x.pth", state)
    assert not list(tmp_path.iterdir())


def test_crash_during_write_keeps_last_good_checkpoint_and_pointer(tmp_path, monkeypatch):
    good = save_checkpoint(tmp_path / "epoch_1.pth", make_state(seed=1))
    write_latest(tmp_path, good)
    good_bytes = good.read_bytes()
    real_save = torch.save

    def crashing_save(obj, f, *args, **kwargs):
        # write the first half of the real bytes, then die, as a killed process would
        import io

        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(checkpoint_io.torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "epoch_1.pth", make_state(seed=2))  # overwrite attempt
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "epoch_2.pth", make_state(seed=2))  # new file attempt
    monkeypatch.undo()

    assert good.read_bytes() == good_bytes
    assert not (tmp_path / "epoch_2.pth").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "epoch_1.pth",
        "latest.json",
        "latest.pth",
    ]
    assert find_latest(tmp_path) == tmp_path / "epoch_1.pth"
    reloaded = load_checkpoint(find_latest(tmp_path))
    assert torch.equal(
        reloaded["state"]["params"]["fc.weight"], make_state(seed=1).params["fc.weight"]
    )


def test_latest_pointer_json_and_symlink(tmp_path):
    assert find_latest(tmp_path) is None
    for name in ("iter_3.pth", "iter_6.pth"):
        path = save_checkpoint(tmp_path / name, make_state())
        write_latest(tmp_path, path)
    assert json.loads((tmp_path / "latest.json").read_text()) == {"checkpoint": "iter_6.pth"}
    assert find_latest(tmp_path) == tmp_path / "iter_6.pth"
    assert (tmp_path / "latest.pth").resolve() == (tmp_path / "iter_6.pth").resolve()
    (tmp_path / "iter_6.pth").unlink()
    with pytest.raises(CheckpointError, match="iter_6.pth, which does not exist"):
        find_latest(tmp_path)


def test_load_weights_from_detfn_mmcv_and_plain_state_dicts(tmp_path):
    state = make_state()
    path = save_checkpoint(tmp_path / "a.pth", state)
    params, buffers = load_weights(path)
    assert set(params) == {"fc.weight", "fc.bias"} and set(buffers) == {
        "bn.running_mean",
        "bn.num_batches_tracked",
    }
    flat = {**state.params, **state.buffers}
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in flat.items()}, "meta": {}},
        tmp_path / "mmcv.pth",
    )
    params, buffers = load_weights(tmp_path / "mmcv.pth", like=state)
    assert set(params) == set(state.params) and set(buffers) == set(state.buffers)
    params, buffers = load_weights(flat)
    assert set(params) == set(flat) and buffers == {}
    with pytest.raises(CheckpointError, match="neither a detfn checkpoint nor a state_dict"):
        load_weights({"weights": [1, 2]})


def test_merge_weights_copies_by_name_and_rejects_wrong_shapes():
    state = make_state()
    like = fresh_like(state)
    merged, missing = merge_weights(like, {"fc.weight": state.params["fc.weight"]}, {})
    assert torch.equal(merged.params["fc.weight"], state.params["fc.weight"])
    assert torch.equal(merged.params["fc.bias"], torch.zeros(3))
    assert missing == ["fc.bias", "bn.running_mean", "bn.num_batches_tracked"]
    with pytest.raises(CheckpointError, match=r"'fc.bias' has shape \(5,\), the model has \(3,\)"):
        merge_weights(like, {"fc.bias": torch.zeros(5)}, {})
    merged, _ = merge_weights(like, {"head.w": torch.zeros(1)}, {})  # a name the model lacks
    assert set(merged.params) == set(like.params)


def test_resume_into_a_different_model_names_the_mismatch(tmp_path):
    state = make_state()
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "a.pth", state))
    other = dataclasses.replace(
        fresh_like(state), params={"fc.weight": torch.zeros(3, 5), "fc.bias": torch.zeros(3)}
    )
    with pytest.raises(
        CheckpointError, match=r"params\['fc.weight'\] has shape \(3, 4\), the model has \(3, 5\)"
    ):
        state_from_checkpoint(ckpt, other)
    with pytest.raises(CheckpointError, match="not a detfn training checkpoint"):
        state_from_checkpoint({"state_dict": {}}, other)


def test_advance_counters_matches_where_the_loop_resumes():
    state = make_state()
    after_iter = advance_counters(state, Stage.AFTER_TRAIN_ITER)
    assert (after_iter.epoch, after_iter.iter, after_iter.inner_iter) == (2, 21, 4)
    after_epoch = advance_counters(state, "after_train_epoch")
    assert (after_epoch.epoch, after_epoch.iter, after_epoch.inner_iter) == (3, 20, 0)
    assert advance_counters(state, Stage.BEFORE_RUN) is state
