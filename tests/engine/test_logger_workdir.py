"""Work dir helpers: config.json reloads into an equal config; the log file; the hook."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from detfn.config import Config, load
from detfn.engine.session import dump_config, log_file_path, make_logger


@dataclass(frozen=True)
class ToyOptim(Config):
    lr: float = 0.02
    momentum: float = 0.9


@dataclass(frozen=True)
class ToyRun(Config):
    name: str = "toy"
    optim: ToyOptim = ToyOptim()
    steps: tuple[int, ...] = (8, 11)
    work_dir: str | None = None


def test_dumped_config_reloads_equal(tmp_path):
    cfg = ToyRun(optim=ToyOptim(lr=0.01), steps=(3,))
    path = dump_config(cfg, tmp_path / "run")
    assert path == tmp_path / "run" / "config.json"
    assert load(path, ToyRun) == cfg
    with pytest.raises(TypeError, match="config dataclass instance"):
        dump_config({"lr": 1}, tmp_path)


def test_make_logger_writes_the_timestamped_log_file_once(tmp_path):
    name = "detfn.test_workdir"
    logger = make_logger(name, tmp_path / "a", stamp="20260101_000000")
    make_logger(name, tmp_path / "a", stamp="20260101_000000")
    logger.info("hello %d", 3)
    path = log_file_path(tmp_path / "a", "20260101_000000")
    assert path == tmp_path / "a" / "20260101_000000.log"
    assert len(logger.handlers) == 2
    # a second run in the same process gets its own file; the first file gets nothing more
    make_logger(name, tmp_path / "b", stamp="20260101_000001")
    logger.info("second run")
    assert len(logger.handlers) == 2
    for handler in list(logger.handlers):
        handler.flush()
    assert path.read_text().count("hello 3") == 1 and "second run" not in path.read_text()
    assert "second run" in (tmp_path / "b" / "20260101_000001.log").read_text()
    make_logger(name, None)
    assert len(logger.handlers) == 1
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
