"""The log header: on ``before_run``, rank 0 logs the environment (:func:`collect_env`), the seed
and the run's config as JSON, as mmdetection's ``tools/train.py`` opens every log.

A new hook file written against the engine's current hook API (``Event``, ``Hook``); the lead
may need to adapt it after the engine rewrite.
"""

from __future__ import annotations

import dataclasses

from detfn.config import to_json
from detfn.dist.comm import is_main_process
from detfn.dist.env_info import collect_env, env_header
from detfn.engine.events import Event, Hook, Priority, Stage
from detfn.engine.state import TrainState

__all__ = ["ENV_HEADER", "env_header_fn", "env_header_hook"]

ENV_HEADER = "env_header"


def env_header_fn(event: Event) -> TrainState | None:
    """Log the header once, before anything else of the run, on rank 0."""
    if event.stage is not Stage.BEFORE_RUN or not is_main_process():
        return None
    run = event.run
    logger = getattr(run, "logger", None)
    if logger is None:
        return None
    cfg = getattr(run, "cfg", None)
    is_config = dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)
    logger.info(
        env_header(collect_env(), to_json(cfg) if is_config else None, getattr(cfg, "seed", None))
    )
    return None


def env_header_hook() -> Hook:
    """The header hook (HIGHEST priority: the header comes first)."""
    return Hook(ENV_HEADER, env_header_fn, int(Priority.HIGHEST))
