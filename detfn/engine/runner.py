"""``train(...)``: build the optimizer, the state and the hooks (mmcv's
``register_training_hooks``: the defaults in slot order, then the custom ones) from a
:class:`RunnerConfig`, then run."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from detfn.config import Config, check, fail
from detfn.engine import checkpoint_io, session
from detfn.engine.driver import drive
from detfn.engine.events import Hook, get_priority
from detfn.engine.hooks.checkpoint import CheckpointHookConfig
from detfn.engine.hooks.ema import EMAConfig
from detfn.engine.hooks.evaluation import EvaluationHookConfig
from detfn.engine.hooks.logger import TextLoggerHookConfig, TimerHookConfig
from detfn.engine.hooks.optimizer import NanGuardConfig, OptimizerHookConfig, current_loss_scale
from detfn.engine.hooks.sampler_seed import SamplerSeedConfig
from detfn.engine.hooks.wandb import WandbHookConfig
from detfn.engine.loop import RunContext, check_workflow, train_loop
from detfn.engine.optim import Optimizer, OptimizerConfig, SGDConfig, initial_hyperparams
from detfn.engine.schedules import ScheduleConfig, StepSchedule, schedule_hook
from detfn.engine.state import TrainState
from detfn.engine.step import LossFn, make_train_step
from detfn.registry import build, builder_for, tag_of

SCHEDULED = ("lr", "momentum", "weight_decay")
SLOTS = ("checkpoint", "timer", "evaluation", "text_logger", "wandb", "nan_guard", "ema")
SLOTS += ("sampler_seed",)  # detfn's extras after mmcv's defaults
DEFAULT_MAX_EPOCHS = 12  # mmdetection's 1x schedule


@dataclass(frozen=True)
class RunnerConfig(Config):
    """Everything about a training run but the model and the data; the defaults are
    mmdetection's 1x schedule and default runtime.

    Attributes:
        max_epochs / max_iters: set one (epoch-based when ``max_epochs`` is; neither: 12 epochs).
        workflow: mmcv's phases, e.g. ``(("train", 1), ("val", 1))``.
        grad_backend: "autograd" (default, fastest) or "func" (torch.func.grad_and_value).
        lr / momentum / weight_decay: schedules of the optimizer's per-group values
            (:mod:`detfn.engine.schedules`); None keeps the configured value.
        checkpoint ... sampler_seed: the default hooks (mmcv's, then detfn's); None drops one.
        custom_hooks: mmcv's ``custom_hooks``: registered hook configs with a ``priority`` (e.g.
            ``EarlyStoppingConfig``), built after the default hooks (ties keep this order).
        resume_from: a checkpoint to resume the whole run from; ``auto_resume`` takes the
            work dir's latest checkpoint when there is one.
        load_from: a checkpoint (or state_dict) whose weights initialize a fresh run.
        load_from_min_match: the fraction of the model's tensors ``load_from`` must fill.
    """

    max_epochs: int | None = None
    max_iters: int | None = None
    workflow: tuple[tuple[str, int], ...] = (("train", 1),)
    optimizer: OptimizerConfig = field(default_factory=SGDConfig)
    optimizer_hook: OptimizerHookConfig = field(default_factory=OptimizerHookConfig)
    grad_backend: Literal["autograd", "func"] = "autograd"
    lr: ScheduleConfig | None = field(
        default_factory=lambda: StepSchedule(
            step=(8, 11), warmup="linear", warmup_iters=500, warmup_ratio=0.001
        )
    )
    momentum: ScheduleConfig | None = None
    weight_decay: ScheduleConfig | None = None
    checkpoint: CheckpointHookConfig | None = field(default_factory=CheckpointHookConfig)
    timer: TimerHookConfig | None = field(default_factory=TimerHookConfig)
    evaluation: EvaluationHookConfig | None = None
    text_logger: TextLoggerHookConfig | None = field(default_factory=TextLoggerHookConfig)
    wandb: WandbHookConfig | None = None
    ema: EMAConfig | None = None
    nan_guard: NanGuardConfig | None = field(default_factory=NanGuardConfig)
    sampler_seed: SamplerSeedConfig | None = field(default_factory=SamplerSeedConfig)
    custom_hooks: tuple[Config, ...] = ()
    resume_from: str | None = None
    auto_resume: bool = False
    load_from: str | None = None
    load_from_min_match: float = 0.5

    def __post_init__(self) -> None:
        if self.max_epochs is None and self.max_iters is None:
            object.__setattr__(self, "max_epochs", DEFAULT_MAX_EPOCHS)
        both = self.max_epochs is not None and self.max_iters is not None
        both_msg = f"and max_iters: set only one, got {self.max_epochs} and {self.max_iters}"
        check(self, "max_epochs", not both, both_msg)
        for name in ("max_epochs", "max_iters"):
            value = getattr(self, name)
            check(self, name, value is None or value >= 1, f"must be >= 1, got {value}")
        try:
            check_workflow(self.workflow)
        except ValueError as error:
            fail(self, "workflow", str(error))
        exclusive = "and resume_from are exclusive: resume restores the weights too"
        check(self, "load_from", not (self.load_from and self.resume_from), exclusive)
        ok = 0.0 <= self.load_from_min_match <= 1.0
        check(self, "load_from_min_match", ok, f"must be in [0, 1], got {self.load_from_min_match}")
        for i, hook in enumerate(self.custom_hooks):  # registered, with a valid priority
            ok = isinstance(hook, Config) and not isinstance(hook, type)
            check(self, "custom_hooks", ok, f"[{i}] must be a hook config instance, got {hook!r}")
            try:
                builder_for(type(hook))
            except Exception as error:
                fail(self, "custom_hooks", f"[{i}]: {error}")
            ok, name = hasattr(hook, "priority"), type(hook).__name__
            check(self, "custom_hooks", ok, f"[{i}]: {name} has no priority field; add one")
            try:
                get_priority(hook.priority)
            except (ValueError, TypeError) as error:
                fail(self, "custom_hooks", f"[{i}].priority is invalid ({error})")


def initial_state(
    cfg: RunnerConfig, optimizer: Optimizer, params: Mapping[str, torch.Tensor], buffers
) -> TrainState:
    """A fresh state at iteration 0: the current hyperparameters are the groups' configured ones."""
    base = initial_hyperparams(optimizer.groups)
    max_iters = cfg.max_iters if cfg.max_epochs is None else None
    return TrainState(
        params=dict(params), buffers=dict(buffers), opt_state=optimizer.init(params),
        max_epochs=cfg.max_epochs, max_iters=max_iters, base=base, hyper=dict(base),
    )  # fmt: skip


def build_hooks(
    cfg: RunnerConfig,
    optimizer: Optimizer,
    custom: Sequence[Hook] = (),
    *,
    context: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Hook]:
    """The schedule hooks, the default hooks in slot order, ``cfg.custom_hooks``, then ``custom``
    (the order only breaks priority ties). ``context``: builder keywords per config field, e.g.
    ``{"timer": {"clock": fake_clock}}``; a custom hook config's under its registry tag."""
    context = context or {}
    hooks = [schedule_hook(p, getattr(cfg, p)) for p in SCHEDULED if getattr(cfg, p)]
    optimizer_context = context.get("optimizer_hook", {})
    hooks.append(build(cfg.optimizer_hook, optimizer=optimizer, **optimizer_context))
    for key in SLOTS:
        if getattr(cfg, key) is not None:
            hooks.append(build(getattr(cfg, key), **context.get(key, {})))
    for c in cfg.custom_hooks:  # the config's priority wins, as mmcv's register_hook_from_cfg
        built = build(c, **context.get(tag_of(type(c)), {}))
        hooks.append(replace(built, priority=get_priority(c.priority)))
    return [*hooks, *custom]


def _restore(cfg: RunnerConfig, state: TrainState, work_dir: Path | None, logger) -> TrainState:
    """Apply ``resume_from`` / ``auto_resume`` or ``load_from`` to a fresh state."""
    path = Path(cfg.resume_from) if cfg.resume_from else None
    if cfg.auto_resume and path is None:
        if work_dir is None:
            raise ValueError("RunnerConfig.auto_resume needs a work_dir to look for checkpoints")
        path = checkpoint_io.find_latest(work_dir)
    if path is not None:
        state = checkpoint_io.state_from_checkpoint(checkpoint_io.load_checkpoint(path), state)
        logger.info("resumed from %s at epoch %d, iter %d", path, state.epoch, state.iter)
    if path is not None or not cfg.load_from:
        return state
    params, buffers = checkpoint_io.load_weights(cfg.load_from, like=state)
    state, missing = checkpoint_io.merge_weights(state, params, buffers)
    total = len(state.params) + len(state.buffers)
    matched = total - len(missing)
    if matched == 0 or matched < cfg.load_from_min_match * total:
        raise checkpoint_io.CheckpointError(
            f"load_from {cfg.load_from}: only {matched} of the model's {total} tensors have a "
            f"weight in the file (load_from_min_match={cfg.load_from_min_match}); the model lacks "
            f"e.g. {missing[:3]}, the file has e.g. {sorted({**params, **buffers})[:3]}"
        )
    logger.info("loaded weights from %s (%d tensors without weights)", cfg.load_from, len(missing))
    return state


def for_iterations(cfg: RunnerConfig, iters_per_epoch: int) -> RunnerConfig:
    """An iteration-based run counts a preset's by-epoch checkpoint, evaluation and log
    intervals in iterations: n epochs become ``n * iters_per_epoch`` iterations."""
    if cfg.max_epochs is not None:
        return cfg
    changes: dict[str, Any] = {}
    for name in ("checkpoint", "evaluation", "text_logger", "wandb"):
        hook = getattr(cfg, name)
        if hook is None or not hook.by_epoch:
            continue
        scaled = {"by_epoch": False}
        if name in ("checkpoint", "evaluation") and hook.interval > 0:
            scaled["interval"] = hook.interval * iters_per_epoch
        if name == "evaluation" and hook.start:
            scaled["start"] = hook.start * iters_per_epoch
        changes[name] = replace(hook, **scaled)
    return replace(cfg, **changes)


def train(
    cfg: RunnerConfig,
    *,
    params: Mapping[str, torch.Tensor],
    buffers: Mapping[str, torch.Tensor],
    loss_fn: LossFn,
    train_loader: Any,
    val_loader: Any = None,
    val_step: Callable[[TrainState, Any], Mapping[str, Any]] | None = None,
    evaluate: Callable[[TrainState], Mapping[str, float]] | None = None,
    work_dir: str | Path | None = None,
    experiment_cfg: Any = None,
    norm_names: Iterable[str] = (),
    hooks: Sequence[Hook] = (),
    hook_context: Mapping[str, Mapping[str, Any]] | None = None,
    device: torch.device | str = "cpu",
    logger: logging.Logger | None = None,
) -> TrainState:
    """Train and return the final state (:class:`RunStopped` after a SIGTERM stop).
    ``loss_fn``, loaders, ``val_step``, ``evaluate``: see :class:`RunContext`; ``work_dir``
    (locked for the run) gets config.json (``experiment_cfg``, default ``cfg``), the log,
    metrics.jsonl and the checkpoints; ``norm_names`` feed ``norm_decay_mult``; ``hooks`` are
    custom hooks; ``hook_context``: see :func:`build_hooks`."""
    work_dir = Path(work_dir) if work_dir is not None else None
    run_cfg = experiment_cfg if experiment_cfg is not None else cfg
    with contextlib.ExitStack() as edges:
        if work_dir is not None:
            work_dir.mkdir(parents=True, exist_ok=True)
            resuming = bool(cfg.resume_from or cfg.auto_resume)
            edges.enter_context(session.work_dir_lock(work_dir, resuming))
            session.dump_config(run_cfg, work_dir)
        stop = edges.enter_context(session.sigterm_requests_stop())
        cfg = for_iterations(cfg, len(train_loader))
        logger = logger or session.make_logger("detfn", work_dir)
        optimizer = build(cfg.optimizer, params=params, norm_names=norm_names)
        state = _restore(cfg, initial_state(cfg, optimizer, params, buffers), work_dir, logger)
        fp16 = cfg.optimizer_hook.precision == "fp16"
        step = make_train_step(
            loss_fn, backend=cfg.grad_backend, autocast_dtype=cfg.optimizer_hook.autocast_dtype,
            device_type=torch.device(device).type, loss_scale=current_loss_scale if fp16 else None,
        )  # fmt: skip
        run = RunContext(
            cfg=run_cfg, work_dir=work_dir, train_loader=train_loader, val_loader=val_loader,
            loss_fn=loss_fn, train_step=step, val_step=val_step, evaluate=evaluate, logger=logger,
        )  # fmt: skip
        hooks = [*hooks, session.stop_request_hook(stop)]
        all_hooks = build_hooks(cfg, optimizer, hooks, context=hook_context)
        final = drive(train_loop(state, run, cfg.workflow), all_hooks)
    if final.stop_reason == session.SIGTERM_REASON:
        raise session.RunStopped(
            f"stopped by SIGTERM after iteration {final.iter}; the final state is saved in "
            f"{work_dir}; run again with auto_resume=True to continue"
        )
    return final
