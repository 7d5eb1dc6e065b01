"""A session-wide tiny training run (2 iterations on the 8 tiny BCCD images, evaluated at the
end) whose work dir every tool test reads."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from detfn.apis import ExperimentConfig, train_detector
from detfn.config import override
from detfn.engine.hooks.evaluation import EvaluationHookConfig
from tests.apis.test_faster_rcnn_e2e import TINY, tiny_config


def tiny_run_config(work_dir: Path) -> ExperimentConfig:
    """tiny_config for 2 iterations, evaluated and checkpointed at iteration 2."""
    cfg = tiny_config(work_dir)
    cfg = override(cfg, "runner", dataclasses.replace(cfg.runner, max_epochs=None, max_iters=2))
    return override(
        cfg,
        {
            "runner.evaluation": EvaluationHookConfig(interval=2, by_epoch=False, save_best="auto"),
            "runner.checkpoint.by_epoch": False,
            "runner.checkpoint.interval": 2,
            "runner.text_logger.by_epoch": False,
        },
    )


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> tuple[ExperimentConfig, Path]:
    work_dir = tmp_path_factory.mktemp("tiny_run")
    cfg = tiny_run_config(work_dir)
    torch.manual_seed(cfg.seed)
    train_detector(cfg)
    return cfg, work_dir


@pytest.fixture(scope="session")
def tiny_images() -> list[Path]:
    return sorted((TINY / "JPEGImages").glob("*.jpg"))


def assert_png(path: Path) -> None:
    """A non-empty PNG file."""
    path = Path(path)
    assert path.is_file() and path.stat().st_size > 1000, path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
