"""Weights & Biases logger hook.

* ``before_run``: ``init(project, name, tags, entity, mode, dir, config)`` with the full experiment
  config (``detfn.config.to_dict(run.cfg)``, type tags included); a resumed run passes the stored
  run id with ``resume="allow"`` so the curves continue.
* train records every ``interval`` iterations (the text logger's rule and averaging) under
  ``train/...``, evaluation metrics under ``val/...``; always with ``step`` = the number of train
  iterations done, a single monotonic axis (wandb drops a step lower than the last one).
* ``after_run``: ``finish(exit_code=1 if the run failed else 0)``, always.

``mode="auto"`` logs online only when the user is logged in (``WANDB_API_KEY`` or a netrc entry
for the wandb host), else offline; ``WANDB_MODE`` in the environment wins over that guess;
explicit "online" / "offline" / "disabled" are passed through. ``wandb`` is imported only when the
hook starts a real run; tests pass ``init=`` to the builder instead.
"""

from __future__ import annotations

import dataclasses
import netrc
import os
import pathlib
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from detfn.config import Config, check_positive, fail
from detfn.engine.events import Event, Hook, Stage
from detfn.engine.hooks.logger import (
    accumulate,
    averages,
    iter_values,
    should_log,
    val_record,
)
from detfn.engine.priority import Priority, get_priority
from detfn.engine.state import TrainState
from detfn.registry import register

__all__ = [
    "WANDB",
    "WandbHookConfig",
    "build_wandb_hook",
    "has_api_key",
    "resolve_mode",
    "train_payload",
    "wandb_fn",
]

WANDB = "wandb"
DEFAULT_PRIORITY = Priority.VERY_LOW.name
_ENV_MODES = {
    "online": "online",
    "run": "online",
    "offline": "offline",
    "dryrun": "offline",
    "disabled": "disabled",
}


@dataclass(frozen=True)
class WandbHookConfig(Config):
    """Weights & Biases logging (mmcv ``WandbLoggerHook``, interval 10)."""

    project: str | None = None
    name: str | None = None
    tags: tuple[str, ...] = ()
    entity: str | None = None
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    dir: str | None = None
    """Where wandb writes its files; None uses the run's work_dir."""
    interval: int = 10
    by_epoch: bool = True
    ignore_last: bool = True
    log_config: bool = True
    priority: int | str = DEFAULT_PRIORITY

    def __post_init__(self) -> None:
        check_positive(self, "interval")
        try:
            get_priority(self.priority)
        except (ValueError, TypeError) as error:
            fail(self, "priority", f"is invalid ({error}), got {self.priority!r}")


def has_api_key(environ: Mapping[str, str] | None = None, netrc_file: str | None = None) -> bool:
    """Whether wandb would find credentials: ``WANDB_API_KEY`` or a netrc password for its host."""
    environ = os.environ if environ is None else environ
    if environ.get("WANDB_API_KEY"):
        return True
    base_url = environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    host = urllib.parse.urlparse(base_url).hostname or "api.wandb.ai"
    path = netrc_file or environ.get("NETRC") or str(pathlib.Path.home() / ".netrc")
    try:
        auth = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def resolve_mode(
    mode: str, environ: Mapping[str, str] | None = None, netrc_file: str | None = None
) -> str:
    """The wandb mode to run in (see the module docstring)."""
    if mode != "auto":
        return mode
    environ = os.environ if environ is None else environ
    env_mode = _ENV_MODES.get(environ.get("WANDB_MODE", "").strip().lower())
    if env_mode is not None:
        return env_mode
    return "online" if has_api_key(environ, netrc_file) else "offline"


def train_payload(state: TrainState, means: Mapping[str, float]) -> dict[str, float]:
    """``train/...`` values of one record: averaged numbers, lr and momentum of every group."""
    payload = {f"train/{k}": v for k, v in means.items()}
    for key, values in (("lr", state.lr), ("momentum", state.momentum)):
        for group, value in enumerate(values):
            payload[f"train/{key}" if group == 0 else f"train/{key}_group{group}"] = float(value)
    payload["epoch"] = state.epoch + 1
    return payload


def _init_kwargs(cfg: WandbHookConfig, event: Event, run_id: str | None) -> dict[str, Any]:
    from detfn.config import to_dict

    run_cfg = getattr(event.run, "cfg", None)
    config = None
    if cfg.log_config and dataclasses.is_dataclass(run_cfg) and not isinstance(run_cfg, type):
        config = to_dict(run_cfg)
    elif cfg.log_config and isinstance(run_cfg, Mapping):
        config = dict(run_cfg)
    directory = cfg.dir if cfg.dir is not None else getattr(event.run, "work_dir", None)
    kwargs: dict[str, Any] = {
        "project": cfg.project,
        "name": cfg.name if cfg.name is not None else getattr(run_cfg, "name", None),
        "tags": list(cfg.tags) or None,
        "entity": cfg.entity,
        "mode": resolve_mode(cfg.mode),
        "dir": str(directory) if directory is not None else None,
        "config": config,
    }
    if run_id is not None:
        kwargs.update(id=run_id, resume="allow")
    return kwargs


def _real_init(**kwargs: Any) -> Any:
    try:
        import wandb  # imported here: a run without this hook never pays for it
    except ImportError:
        raise ImportError("WandbHook needs the wandb package: pip install wandb") from None

    if kwargs.get("dir"):
        pathlib.Path(kwargs["dir"]).mkdir(parents=True, exist_ok=True)
    return wandb.init(**kwargs, settings=wandb.Settings(silent=True))


def wandb_fn(
    event: Event, cfg: WandbHookConfig, live: dict[str, Any], init: Callable[..., Any]
) -> TrainState | None:
    """Start, feed and finish the wandb run held in ``live["run"]`` (not checkpointable)."""
    stage, state = event.stage, event.state
    mine = dict(state.hooks.get(WANDB) or {})
    if stage is Stage.BEFORE_RUN:
        live["run"] = init(**_init_kwargs(cfg, event, mine.get("run_id")))
        run_id = getattr(live["run"], "id", None)
        return _put(state, {"buffer": {}, "run_id": run_id if isinstance(run_id, str) else None})
    if stage is Stage.AFTER_RUN:
        run, live["run"] = live.get("run"), None
        if run is not None:
            run.finish(exit_code=1 if event.error is not None else 0)
        return None
    run = live.get("run")
    if run is None:
        return None
    if stage is Stage.AFTER_TRAIN_ITER:
        mine["buffer"] = accumulate(mine.get("buffer"), iter_values(event.outputs))
        if should_log(state, cfg.interval, cfg.by_epoch, cfg.ignore_last):
            run.log(train_payload(state, averages(mine["buffer"])), step=state.iter + 1)
            mine["buffer"] = {}
    metrics = event.outputs.get("metrics")
    if metrics:
        record = val_record(stage, state, metrics)
        values = {f"val/{k}": record[k] for k in metrics if isinstance(record[k], float)}
        run.log({**values, "epoch": record["epoch"]}, step=record["global_iter"])
    if stage is Stage.BEFORE_TRAIN_EPOCH:
        mine["buffer"] = {}
    if stage in (Stage.AFTER_TRAIN_ITER, Stage.BEFORE_TRAIN_EPOCH):
        return _put(state, mine)
    return None


def _put(state: TrainState, mine: dict[str, Any]) -> TrainState:
    return dataclasses.replace(state, hooks={**state.hooks, WANDB: mine})


@register(WandbHookConfig)
def build_wandb_hook(
    cfg: WandbHookConfig, *, init: Callable[..., Any] | None = None, **context: Any
) -> Hook:
    """The wandb hook; ``init`` replaces ``wandb.init`` (tests inject a fake run)."""
    del context
    live: dict[str, Any] = {"run": None}
    chosen = init if init is not None else _real_init
    return Hook(WANDB, lambda event: wandb_fn(event, cfg, live, chosen), get_priority(cfg.priority))
