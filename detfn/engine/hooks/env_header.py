"""The log header: on ``before_run``, rank 0 logs the environment (:func:`collect_env`), the seed
and the run's config as JSON, as mmdetection's ``tools/train.py`` opens every log."""

from __future__ import annotations

import dataclasses

from detfn.config import to_json
from detfn.dist.comm import is_main_process
from detfn.dist.env_info import collect_env, env_header
from detfn.engine.events import Event, Hook, Priority, Stage


def env_header_fn(event: Event) -> None:
    logger = getattr(event.run, "logger", None)
    if event.stage is not Stage.BEFORE_RUN or not is_main_process() or logger is None:
        return
    cfg = getattr(event.run, "cfg", None)
    text = to_json(cfg) if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type) else None
    logger.info(env_header(collect_env(), text, getattr(cfg, "seed", None)))


def env_header_hook() -> Hook:
    """The header hook (HIGHEST priority: the header comes first)."""
    return Hook("env_header", env_header_fn, int(Priority.HIGHEST))
