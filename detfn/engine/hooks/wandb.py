"""Weights & Biases logger hook (mmcv ``WandbLoggerHook``), a sink of the logger hook: ``init``
with the experiment config at ``before_run`` (a resumed run passes its stored run id with
``resume="allow"``), the text logger's train means under ``train/`` and metrics under ``val/`` at
``step`` = iterations done, ``finish(exit_code=1 if the run failed else 0)`` at ``after_run``.
``mode="auto"``: ``WANDB_MODE`` if set, else online when logged in (``WANDB_API_KEY`` or a netrc
entry), else offline. ``wandb`` is imported lazily.
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

from detfn.config import to_dict
from detfn.engine.events import Event, Hook
from detfn.engine.hooks.logger import LoggerHookConfig, logger_hook
from detfn.registry import register

WANDB = "wandb"
_ENV_ALIASES = {"run": "online", "dryrun": "offline"}


@dataclass(frozen=True)
class WandbHookConfig(LoggerHookConfig):
    """Weights & Biases logging (mmcv ``WandbLoggerHook``, interval 10)."""

    project: str | None = None
    name: str | None = None
    tags: tuple[str, ...] = ()
    entity: str | None = None
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    dir: str | None = None
    """Where wandb writes its files; None uses the run's work_dir."""
    log_config: bool = True


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
    env_mode = environ.get("WANDB_MODE", "").strip().lower()
    env_mode = _ENV_ALIASES.get(env_mode, env_mode)
    if env_mode in ("online", "offline", "disabled"):
        return env_mode
    return "online" if has_api_key(environ, netrc_file) else "offline"


def _real_init(**kwargs: Any) -> Any:
    try:
        import wandb  # imported here: a run without this hook never pays for it
    except ImportError:
        raise ImportError("WandbHook needs the wandb package: pip install wandb") from None
    return wandb.init(**kwargs, settings=wandb.Settings(silent=True))


@register(WandbHookConfig)
def build_wandb_hook(
    cfg: WandbHookConfig, *, init: Callable[..., Any] | None = None, **context: Any
) -> Hook:
    """Only the run's id goes into ``state.hooks["wandb"]``; ``init`` replaces ``wandb.init``."""

    def open_run(event: Event) -> tuple[Any, dict[str, Any]]:
        run_cfg, config = getattr(event.run, "cfg", None), None
        if cfg.log_config and dataclasses.is_dataclass(run_cfg) and not isinstance(run_cfg, type):
            config = to_dict(run_cfg)
        elif cfg.log_config and isinstance(run_cfg, Mapping):
            config = dict(run_cfg)
        directory = cfg.dir if cfg.dir is not None else getattr(event.run, "work_dir", None)
        if directory is not None:
            pathlib.Path(directory).mkdir(parents=True, exist_ok=True)
            directory = str(directory)
        name = cfg.name if cfg.name is not None else getattr(run_cfg, "name", None)
        kwargs = dict(project=cfg.project, name=name, tags=list(cfg.tags) or None, config=config)
        kwargs.update(entity=cfg.entity, mode=resolve_mode(cfg.mode), dir=directory)
        run_id = (event.state.hooks.get(WANDB) or {}).get("run_id")
        if run_id is not None:  # a resumed run continues its wandb run
            kwargs.update(id=run_id, resume="allow")
        run = (init or _real_init)(**kwargs)
        run_id = getattr(run, "id", None)
        return run, {"run_id": run_id if isinstance(run_id, str) else None}

    def write(run: Any, event: Event, record: dict[str, Any]) -> None:
        """The numbers (``lr`` / ``momentum``: group 0's, ``lr_group1`` ... the others')."""
        mode = record["mode"]
        values = {f"{mode}/{k}": v for k, v in record.items() if isinstance(v, float)}
        for key in ("lr", "momentum"):
            for group, value in enumerate(record.get(f"{key}_groups", [])[1:], start=1):
                values[f"{mode}/{key}_group{group}"] = value
        run.log({**values, "epoch": record["epoch"]}, step=record["global_iter"])

    def close(run: Any, event: Event) -> None:
        run.finish(exit_code=1 if event.error is not None else 0)

    return logger_hook(WANDB, cfg, open_run, write, close)
