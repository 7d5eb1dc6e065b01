"""Evaluation during training (mmcv 1.x ``EvalHook``) and early stopping on its metrics (mmcv
2.x ``EarlyStoppingHook``); both keep their state in ``state.hooks``, so it survives a resume.

* ``event.run.evaluate(state)`` computes the metrics (on the EMA weights when an EMA hook keeps
  them) into ``outputs.metrics``. ``save_best`` keeps one ``best_<key>_epoch_N.pth`` (or
  ``iter_N``), replaced when the score is beaten; ``rule="auto"`` is mmcv's inference from the key.
* Early stopping (priority 85, between the evaluation hook and the loggers) counts evaluations
  whose ``monitor`` did not improve by ``min_delta`` and at ``patience`` requests the stop: the
  epoch's checkpoint and logs are still written. Under data parallelism the metrics are the job's,
  so every rank stops at the same evaluation.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from detfn.config import Config, check, check_non_negative, fail
from detfn.engine.checkpoint_io import advance_counters, save_event_state
from detfn.engine.combinators import Condition, all_of, any_of, at, compose, nth, only_at, when
from detfn.engine.events import Event, Hook, HookConfig, Stage, get_priority
from detfn.engine.hooks.checkpoint import resolve_out_dir
from detfn.engine.hooks.logger import numbers
from detfn.engine.state import TrainState, with_hook_state
from detfn.registry import register

EVALUATION = "evaluation"
# mmcv's default key lists for inferring the rule of a key.
GREATER_KEYS = ("acc", "top", "AR@", "auc", "precision", "mAP", "mDice", "mIoU", "mAcc", "aAcc")
LESS_KEYS = ("loss",)


@dataclass(frozen=True)
class EvaluationHookConfig(HookConfig):
    """Periodic evaluation with best-checkpoint tracking (mmcv ``EvalHook``).

    Priority LOW, registered after the timer (mmdet's train.py): after the checkpoint hook
    (NORMAL), so a failing evaluation leaves the epoch's checkpoint; before the loggers.
    """

    start: int | None = None
    """First epoch/iteration (1-based) to evaluate; 0 also evaluates before training."""
    interval: int = 1
    by_epoch: bool = True
    save_best: str | None = None
    """None: no best checkpoint; "auto": the first metric key; else a metric key."""
    rule: Literal["auto", "greater", "less"] = "auto"
    greater_keys: tuple[str, ...] = GREATER_KEYS
    less_keys: tuple[str, ...] = LESS_KEYS
    out_dir: str | None = None
    """Directory of the best checkpoint; None uses the run's work_dir."""
    use_ema: bool = True
    """Evaluate the EMA weights of ``state.hooks[ema_key]`` when an EMA hook provides them."""
    ema_key: str = "ema"
    save_optimizer: bool = True
    priority: int | str = "LOW"

    def __post_init__(self) -> None:
        super().__post_init__()
        ok = self.start is None or self.start >= 0
        check(self, "start", ok, f"must be None or >= 0, got {self.start}")
        check(self, "interval", self.interval > 0, f"must be > 0, got {self.interval}")
        ok = self.save_best is None or bool(self.save_best.strip())
        check(self, "save_best", ok, "must be None, 'auto' or a metric key, got an empty string")
        if self.save_best not in (None, "auto"):
            try:
                infer_rule(self.save_best, self.rule, self.greater_keys, self.less_keys)
            except ValueError as error:
                fail(self, "rule", str(error))


def infer_rule(
    key: str,
    rule: str,
    greater_keys: tuple[str, ...] = GREATER_KEYS,
    less_keys: tuple[str, ...] = LESS_KEYS,
) -> str:
    """``rule`` unless it is "auto"; then mmcv's inference from the key name: an exact
    (case-insensitive) match of a greater/less key wins over a substring match."""
    if rule != "auto":
        return rule
    lowered = key.lower()
    for matches in (lambda k: lowered == k.lower(), lambda k: k.lower() in lowered):
        for verdict, keys in (("greater", greater_keys), ("less", less_keys)):
            if any(matches(k) for k in keys):
                return verdict
    fix = "set rule='greater' or rule='less'"
    raise ValueError(f"cannot infer whether a greater or a smaller {key!r} is better; {fix}")


def is_better(score: float, best: float | None, rule: str) -> bool:
    """Strictly better (mmcv compares with > / <); anything beats no best yet; NaN never wins."""
    if math.isnan(score):
        return False
    return best is None or (score > best if rule == "greater" else score < best)


def evaluation_due(cfg: EvaluationHookConfig) -> Condition:
    """When the hook evaluates: mmcv's ``_should_evaluate``, plus once before training when
    ``start == 0`` (mmcv evaluates then when start <= the first epoch/iter of a fresh run)."""
    unit = "epoch" if cfg.by_epoch else "iter"
    before = Stage.BEFORE_TRAIN_EPOCH if cfg.by_epoch else Stage.BEFORE_TRAIN_ITER
    after = Stage.AFTER_TRAIN_EPOCH if cfg.by_epoch else Stage.AFTER_TRAIN_ITER
    fresh = lambda event: cfg.start == 0 and event.state.iter == 0  # noqa: E731
    every = nth(cfg.interval, unit, start=cfg.start)
    return any_of(all_of(at(before), fresh), all_of(at(after), every))


@register(EvaluationHookConfig)
def evaluation_hook(cfg: EvaluationHookConfig) -> Hook:
    out_dir = lambda event: resolve_out_dir(cfg.out_dir, event.run, "EvaluationHook")  # noqa: E731

    def start(event: Event) -> TrainState | None:
        if not callable(getattr(event.run, "evaluate", None)):
            raise ValueError("EvaluationHook: the run context has no evaluate(state) function")
        if cfg.save_best is not None:
            out_dir(event).mkdir(parents=True, exist_ok=True)
        if EVALUATION in event.state.hooks:
            return None
        mine = {"best_score": None, "best_ckpt": None, "key": None, "rule": None}
        return with_hook_state(event.state, EVALUATION, mine)

    def evaluate(event: Event) -> TrainState | None:
        """Evaluate into the outputs; update the best checkpoint."""
        state = event.state
        ema, weights = state.hooks.get(cfg.ema_key) if cfg.use_ema else None, state
        if isinstance(ema, Mapping) and ema.get("params"):  # the EMA hook's averaged weights
            params = {**state.params, **ema["params"]}
            buffers = {**state.buffers, **(ema.get("buffers") or {})}
            weights = dataclasses.replace(state, params=params, buffers=buffers)
        metrics = event.outputs.metrics = numbers(event.run.evaluate(weights))
        if cfg.save_best is None:
            return None
        mine = dict(state.hooks.get(EVALUATION) or {})
        auto = cfg.save_best == "auto"
        key = (mine.get("key") or next(iter(metrics), None)) if auto else cfg.save_best
        if key not in metrics or not isinstance(metrics[key], float):
            raise ValueError(f"EvaluationHook: save_best key {key!r} is not a number in the "
                             f"metrics {sorted(metrics)}")  # fmt: skip
        rule = infer_rule(key, cfg.rule, cfg.greater_keys, cfg.less_keys)
        if (mine.get("key"), mine.get("rule")) != (key, rule):
            mine["best_score"] = None  # a resumed run with another criterion starts a new best
        mine.update(key=key, rule=rule)
        score = metrics[key]
        if not is_better(score, mine.get("best_score"), rule):
            return with_hook_state(state, EVALUATION, mine)
        # N in epoch_N / iter_N: the epochs / iterations done when the weights were evaluated
        unit = "epoch" if cfg.by_epoch else "iter"
        done = getattr(advance_counters(state, event.stage), unit)
        name = f"best_{key.replace('/', '_')}_{unit}_{done}.pth"
        old, directory = mine.get("best_ckpt"), out_dir(event)
        mine.update(best_score=score, best_ckpt=name)
        new_state = with_hook_state(state, EVALUATION, mine)
        save_event_state(event, new_state, directory / name, cfg.save_optimizer)
        if old and old != name:
            (directory / old).unlink(missing_ok=True)
        logger = getattr(event.run, "logger", None) or logging.getLogger("detfn")
        logger.info(f"best {key} is {score:.4f}; saved {directory / name}")
        return new_state

    fn = compose(only_at(Stage.BEFORE_RUN, start), when(evaluation_due(cfg), evaluate))
    return Hook(EVALUATION, fn, get_priority(cfg.priority), writes=("metrics",))


EARLY_STOPPING = "early_stopping"
EARLY_STOPPING_PRIORITY = 85  # after the evaluation hook (LOW, 70), before the loggers (90)


@dataclass(frozen=True)
class EarlyStoppingConfig(Config):  # not a HookConfig: monitor stays the first field
    """Attributes:
    monitor: the metric key, e.g. "bbox_mAP" or "loss".
    rule: "greater" or "less" is better; "auto" infers it from the key as save_best does.
    min_delta: an improvement smaller than this does not count.
    patience: evaluations without improvement before the run stops.
    """

    monitor: str = "bbox_mAP"
    rule: Literal["auto", "greater", "less"] = "auto"
    min_delta: float = 0.0
    patience: int = 5
    priority: int | str = EARLY_STOPPING_PRIORITY

    def __post_init__(self) -> None:
        HookConfig.__post_init__(self)  # checks the priority
        check(self, "monitor", bool(self.monitor.strip()), "must name a metric")
        check(self, "patience", self.patience >= 1, f"must be >= 1, got {self.patience}")
        check_non_negative(self, "min_delta")
        try:
            infer_rule(self.monitor, self.rule)
        except ValueError as error:
            fail(self, "rule", str(error))


@register(EarlyStoppingConfig)
def build_early_stopping_hook(cfg: EarlyStoppingConfig, **context: Any) -> Hook:
    def count(event: Event) -> TrainState | None:
        """With a val phase that computes losses (``run.val_step``) there are two metric sources
        (the evaluation hook's metrics, the val phase's losses): a dict without the monitor is
        skipped while the other source may hold it; else it is an error."""
        metrics: Any = event.outputs.metrics
        state = event.state
        mine = dict(state.hooks.get(EARLY_STOPPING) or {"best": None, "bad_evaluations": 0})
        if cfg.monitor not in metrics:
            source = "val_phase" if event.stage is Stage.AFTER_VAL_EPOCH else "evaluation"
            lacking = sorted({*mine.get("lacking", ()), source})
            two_sources = getattr(event.run, "val_step", None) is not None
            if two_sources and (mine["best"] is not None or len(lacking) < 2):
                return with_hook_state(state, EARLY_STOPPING, {**mine, "lacking": lacking})
            raise KeyError(f"EarlyStoppingConfig.monitor={cfg.monitor!r} is not in the "
                           f"evaluation metrics {sorted(metrics)}")  # fmt: skip
        score = float(metrics[cfg.monitor])
        rule = infer_rule(cfg.monitor, cfg.rule)
        shifted = score - cfg.min_delta if rule == "greater" else score + cfg.min_delta
        if math.isfinite(score) and is_better(shifted, mine["best"], rule):
            mine = {"best": score, "bad_evaluations": 0}
        else:
            mine = {**mine, "bad_evaluations": mine["bad_evaluations"] + 1}
        state = with_hook_state(state, EARLY_STOPPING, mine)
        if mine["bad_evaluations"] < cfg.patience:
            return state
        reason = f"early stopping: {cfg.monitor} did not improve for {cfg.patience} evaluations"
        return dataclasses.replace(state, stop_reason=f"{reason} (best {mine['best']})")

    stages = (Stage.AFTER_TRAIN_EPOCH, Stage.AFTER_TRAIN_ITER, Stage.AFTER_VAL_EPOCH)
    fn = only_at(stages, when(lambda event: bool(event.outputs.metrics), count))
    return Hook(EARLY_STOPPING, fn, get_priority(cfg.priority), reads_optional=("metrics",))
