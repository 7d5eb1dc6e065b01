"""Graceful stops and a safe work dir: SIGTERM / SIGINT mid-epoch (subprocesses), the final
checkpoint of iteration-based runs, the gradient check, load_from coverage, the work-dir lock,
stale temporary files, a full disk and file modes."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest
import torch
from engine_a_toys import ToyLoader, ToyNet, make_loss_fn, split, toy_data
from stop_run import run as reference_run

from detfn.engine import checkpoint_io
from detfn.engine.checkpoint_io import CheckpointError, find_latest, load_checkpoint
from detfn.engine.hooks.checkpoint import CheckpointHookConfig
from detfn.engine.hooks.optimizer import NonFiniteGradError
from detfn.engine.runner import RunnerConfig, train
from detfn.engine.session import LOCK_FILE, WorkDirBusy, work_dir_lock

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = pathlib.Path(__file__).with_name("stop_run.py")


def child(work_dir, *args):
    # The child trains the first iterations, this process the rest after the resume: both with
    # the same intra-op thread count, since float sums split over other thread counts round
    # differently and "bit-exact" would then compare two different computations.
    threads = str(torch.get_num_threads())
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": threads}
    env["WANDB_MODE"] = "disabled"
    cmd = [sys.executable, str(SCRIPT), str(work_dir), *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def global_iters(work_dir):
    lines = (work_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["global_iter"] for line in lines if '"train"' in line]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return reference_run(str(tmp_path_factory.mktemp("full"))).params


def test_sigterm_finishes_the_iteration_saves_and_resumes_bit_exactly(tmp_path, uninterrupted):
    stopped = child(tmp_path, "term", 5)
    assert stopped.returncode != 0
    assert "RunStopped: stopped by SIGTERM after iteration 6" in stopped.stderr
    assert (tmp_path / "after_run.txt").read_text() == "None"  # after_run ran, no error
    assert find_latest(tmp_path).name == "iter_6.pth"  # the final state, off the interval grid
    assert global_iters(tmp_path) == list(range(1, 7))  # the log was written up to the stop
    assert not (tmp_path / LOCK_FILE).exists()
    final = reference_run(str(tmp_path), resume=True).params  # in this process: one child
    for name, tensor in uninterrupted.items():
        assert torch.equal(final[name], tensor), name
    assert global_iters(tmp_path) == list(range(1, 17))


def test_sigint_runs_after_run_and_the_last_checkpoint_resumes_bit_exactly(tmp_path, uninterrupted):
    interrupted = child(tmp_path, "int", 5)
    assert interrupted.returncode != 0
    assert "KeyboardInterrupt" in (tmp_path / "after_run.txt").read_text()
    assert find_latest(tmp_path).name == "iter_4.pth"
    assert global_iters(tmp_path)[-1] >= 5  # it logged past its last checkpoint
    final = reference_run(str(tmp_path), resume=True).params
    for name, tensor in uninterrupted.items():
        assert torch.equal(final[name], tensor), name
    assert global_iters(tmp_path) == list(range(1, 17))  # no repeated iterations


def toy_run(cfg, work_dir=None, loss_fn=None, n=20):
    torch.manual_seed(0)
    model = ToyNet(bn=False)
    params, buffers = split(model)
    return train(cfg, params=params, buffers=buffers, loss_fn=loss_fn or make_loss_fn(model),
                 train_loader=ToyLoader(toy_data(n), 2), work_dir=work_dir)  # fmt: skip


def test_an_iteration_based_run_saves_its_final_state_and_logs(tmp_path):
    final = toy_run(RunnerConfig(max_iters=3), tmp_path)  # the 1x preset's by-epoch hooks
    assert find_latest(tmp_path).name == "iter_3.pth"
    saved = checkpoint_io.state_from_checkpoint(load_checkpoint(tmp_path / "iter_3.pth"), final)
    assert saved.iter == 3 and torch.equal(saved.params["fc.weight"], final.params["fc.weight"])
    assert global_iters(tmp_path) == [3]


def test_infinite_gradients_of_a_finite_loss_stop_before_the_update(tmp_path):
    model = ToyNet(bn=False)
    base = make_loss_fn(model)

    def sqrt_at_zero(params, buffers, batch):  # d sqrt(x)/dx = inf at x = 0, sqrt(0) = 0
        loss, aux = base(params, buffers, batch)
        if sqrt_at_zero.calls == 2:
            loss = loss + torch.sqrt(params["fc.bias"][0] * 0)
        sqrt_at_zero.calls += 1
        return loss, aux

    sqrt_at_zero.calls = 0
    cfg = RunnerConfig(max_iters=5, checkpoint=CheckpointHookConfig(by_epoch=False))
    with pytest.raises(NonFiniteGradError, match=r"iteration 2 \(total norm (inf|nan)\)") as info:
        toy_run(cfg, tmp_path, sqrt_at_zero)
    assert info.value.names == ["fc.bias"]
    assert find_latest(tmp_path).name == "iter_2.pth"
    for path in tmp_path.glob("*.pth"):
        state = load_checkpoint(path)["state"]
        assert all(torch.isfinite(t).all() for t in state["params"].values()), path


def test_load_from_must_cover_enough_of_the_model(tmp_path):
    torch.save({"state_dict": {"other.weight": torch.zeros(3)}}, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match=r"only 0 of the model's 4 tensors .* the file has "
                       r"e.g. \['other.weight'\]"):  # fmt: skip
        toy_run(RunnerConfig(max_iters=1, load_from=str(tmp_path / "foreign.pth")), tmp_path / "a")
    model = ToyNet(bn=False)
    torch.save({"fc.weight": model.fc.weight.detach()}, tmp_path / "fc.pth")
    half = RunnerConfig(max_iters=1, load_from=str(tmp_path / "fc.pth"))
    with pytest.raises(CheckpointError, match=r"only 1 of the model's 4 tensors .*min_match=0.5"):
        toy_run(half, tmp_path / "b")
    ok = RunnerConfig(max_iters=1, load_from=half.load_from, load_from_min_match=0.25)
    toy_run(ok, tmp_path / "c")
    with pytest.raises(ValueError, match="load_from_min_match must be in"):
        RunnerConfig(load_from_min_match=1.5)


def test_one_run_per_work_dir_and_stale_temporary_files_are_removed(tmp_path):
    busy = pytest.raises(WorkDirBusy, match=f"another run \\(pid {os.getpid()}\\) is using")
    with work_dir_lock(tmp_path, resuming=False), busy:
        toy_run(RunnerConfig(max_iters=1), tmp_path)
    (tmp_path / LOCK_FILE).write_text("12345")  # what a killed run leaves behind
    (tmp_path / ".iter_4.pth.abc123.tmp").write_bytes(b"x" * 100)
    with pytest.raises(WorkDirBusy, match="killed before it finished; resume it"):
        toy_run(RunnerConfig(max_iters=1), tmp_path)
    toy_run(RunnerConfig(max_iters=1, auto_resume=True), tmp_path)
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / LOCK_FILE).exists()


def test_a_full_disk_is_one_line_naming_the_dir_and_the_bytes(tmp_path, monkeypatch):
    final = toy_run(RunnerConfig(max_iters=1), tmp_path)
    before = (tmp_path / "iter_1.pth").read_bytes()

    def full(obj, f):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0\n"
                           "PytorchStreamWriter failed writing file data/3: file write failed")  # fmt: skip

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointError) as info:
        checkpoint_io.save_checkpoint(tmp_path / "iter_1.pth", final)
    message = str(info.value)
    assert "\n" not in message and info.value.__cause__ is None
    need = sum(t.numel() * t.element_size() for t in final.params.values())
    assert message.startswith(f"{tmp_path}: no space left on the device for iter_1.pth: it needs")
    assert int(message.split("about ")[1].split(" bytes")[0]) >= need
    assert (tmp_path / "iter_1.pth").read_bytes() == before and not list(tmp_path.glob("*.tmp"))


def test_files_are_readable_by_the_group(tmp_path):
    old = os.umask(0o022)
    try:
        toy_run(RunnerConfig(max_iters=2), tmp_path)
    finally:
        os.umask(old)
    for name in ("config.json", "iter_2.pth", "latest.json", "metrics.jsonl"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
    logs = list(tmp_path.glob("*.log"))
    assert logs and all(p.stat().st_mode & 0o777 == 0o644 for p in logs)


def test_the_sigterm_handler_is_restored_after_a_run(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    toy_run(RunnerConfig(max_iters=1), tmp_path)
    assert signal.getsignal(signal.SIGTERM) is before
