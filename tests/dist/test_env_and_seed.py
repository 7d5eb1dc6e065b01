"""Log header fields, checkpoint meta env, git commit, seeds."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys

import numpy as np
import torch
import torchvision

import detfn
from detfn.apis.train_hooks import env_header_hook
from detfn.config import to_json
from detfn.dist.env_info import collect_env, env_header, git_commit
from detfn.dist.seeding import init_seed, seed_all
from detfn.engine.checkpoint_io import run_meta
from detfn.engine.events import Event, Stage
from detfn.engine.runner import RunnerConfig


def test_collect_env_reports_versions_devices_and_world():
    env = collect_env()
    assert env["python"] == sys.version.split()[0]
    assert env["torch"] == torch.__version__ and env["torchvision"] == torchvision.__version__
    assert env["cuda"] == torch.version.cuda
    assert env["gpus"] == [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    assert env["detfn"] == detfn.__version__
    assert env["world_size"] == 1 and collect_env(world_size=8)["world_size"] == 8
    json.dumps(env)  # goes into logs and checkpoints as it is


def _git(root, *args):
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_git_commit_of_a_checkout_and_its_dirty_state(tmp_path):
    assert git_commit(tmp_path) is None  # not a checkout (an installed wheel)
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("1")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = _git(tmp_path, "rev-parse", "HEAD")
    git_commit.cache_clear()  # the commit is read once per process and root
    assert git_commit(tmp_path) == head[:12]
    (tmp_path / "a.txt").write_text("2")
    git_commit.cache_clear()
    assert git_commit(tmp_path) == head[:12] + "+dirty"


def test_header_names_env_seed_and_config():
    cfg = RunnerConfig(max_iters=3)
    text = env_header({"torch": "2.x", "gpus": []}, to_json(cfg), seed=7)
    lines = text.splitlines()
    assert lines[:4] == ["Environment:", "  torch: 2.x", "  gpus : -", "Seed: 7"]
    assert json.loads("\n".join(lines[5:]))["max_iters"] == 3


class _Run:
    def __init__(self, cfg, logger):
        self.cfg, self.logger = cfg, logger


def test_header_hook_logs_once_before_the_run(caplog):
    logger = logging.getLogger("detfn.test_header")
    with caplog.at_level(logging.INFO, logger="detfn.test_header"):
        header = env_header_hook().fn
        header(Event(Stage.BEFORE_RUN, state=None, run=_Run(RunnerConfig(), logger)))
        header(Event(Stage.AFTER_RUN, state=None, run=_Run(RunnerConfig(), logger)))
    assert len(caplog.records) == 1
    assert f"torch      : {torch.__version__}" in caplog.records[0].getMessage()


def test_checkpoint_meta_records_the_environment():
    meta = run_meta(_Run(RunnerConfig(), None), Stage.AFTER_TRAIN_EPOCH)
    assert meta["env"] == collect_env()


def test_seeds():
    assert init_seed(5) == 5
    drawn = init_seed(None)
    assert 0 <= drawn < 2**31
    seed_all(drawn)
    first = (np.random.rand(), torch.rand(()).item())
    seed_all(drawn)
    assert (np.random.rand(), torch.rand(()).item()) == first


def test_no_seed_draws_one_and_the_built_config_records_it():
    from detfn.apis import bccd_cpu_preset
    from detfn.apis.train import build_experiment

    cfg = dataclasses.replace(bccd_cpu_preset(), seed=None, device="cpu")
    first = build_experiment(cfg, with_train=False).cfg.seed
    second = build_experiment(cfg, with_train=False).cfg.seed
    assert isinstance(first, int) and 0 <= first < 2**31
    assert first != second  # drawn afresh (a 1 in 2**31 chance of equal draws)
