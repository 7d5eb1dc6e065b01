"""Early stopping: end the run when a validation metric stops improving (mmcv's
``EarlyStoppingHook`` of 2.x: ``monitor``, ``rule``, ``min_delta``, ``patience``).

It reads the metrics the evaluation hook (LOW) put in the event's outputs, so it runs after it
(priority 85), and ends the run through the loop's stop request (``state.stop_reason``): the
current epoch's checkpoint and logs are still written. Under data parallelism the metrics are
broadcast from rank 0, so every rank stops at the same evaluation.

Its state (``best``, ``bad_evaluations``) lives in ``state.hooks["early_stopping"]`` and survives a
resume. It reads ``outputs.metrics`` (``reads_optional``: without an evaluation hook it waits for
the val workflow's metrics, or does nothing).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from detfn.config import Config, check, fail
from detfn.engine.events import Event, Hook, Stage, get_priority
from detfn.engine.hooks.evaluation import infer_rule as infer_rule_of
from detfn.engine.hooks.evaluation import is_better
from detfn.engine.state import TrainState, with_hook_state
from detfn.registry import register

EARLY_STOPPING = "early_stopping"
EARLY_STOPPING_PRIORITY = 85  # after the evaluation hook (LOW, 70), before the loggers (90)


@dataclass(frozen=True)
class EarlyStoppingConfig(Config):
    """Attributes:
    monitor: the metric key, e.g. "bbox_mAP" or "loss".
    rule: "greater" or "less" is better; "auto" infers it from the key as save_best does.
    min_delta: an improvement smaller than this does not count.
    patience: evaluations without improvement before the run stops.
    priority: after the evaluation hook (LOW, 70), before the loggers (VERY_LOW, 90).
    """

    monitor: str = "bbox_mAP"
    rule: Literal["auto", "greater", "less"] = "auto"
    min_delta: float = 0.0
    patience: int = 5
    priority: int | str = EARLY_STOPPING_PRIORITY

    def __post_init__(self) -> None:
        try:
            get_priority(self.priority)
        except (ValueError, TypeError) as error:
            fail(self, "priority", f"is invalid ({error}), got {self.priority!r}")
        check(self, "monitor", bool(self.monitor.strip()), "must name a metric")
        check(self, "patience", self.patience >= 1, f"must be >= 1, got {self.patience}")
        check(self, "min_delta", self.min_delta >= 0, f"must be >= 0, got {self.min_delta}")
        try:
            infer_rule_of(self.monitor, self.rule)
        except ValueError as error:
            fail(self, "rule", str(error))


def _improved(score: float, best: float | None, rule: str, min_delta: float) -> bool:
    """``score`` beats ``best`` by more than ``min_delta`` in the rule's direction."""
    if best is None:
        return True
    shifted = score - min_delta if rule == "greater" else score + min_delta
    return is_better(shifted, best, rule)


def early_stopping_fn(event: Event, cfg: EarlyStoppingConfig) -> TrainState | None:
    """Count evaluations without improvement; request the stop at ``patience``."""
    if event.stage not in (Stage.AFTER_TRAIN_EPOCH, Stage.AFTER_TRAIN_ITER, Stage.AFTER_VAL_EPOCH):
        return None
    metrics: Any = event.outputs.metrics
    if not metrics:
        return None
    if cfg.monitor not in metrics:
        return _missing_monitor(event, cfg, metrics)
    score = float(metrics[cfg.monitor])
    state = event.state
    mine = dict(state.hooks.get(EARLY_STOPPING) or {"best": None, "bad_evaluations": 0})
    rule = infer_rule_of(cfg.monitor, cfg.rule)
    if math.isfinite(score) and _improved(score, mine["best"], rule, cfg.min_delta):
        mine = {"best": score, "bad_evaluations": 0}
    else:
        mine = {**mine, "bad_evaluations": mine["bad_evaluations"] + 1}
    state = dataclasses.replace(state, hooks={**state.hooks, EARLY_STOPPING: mine})
    if mine["bad_evaluations"] >= cfg.patience:
        reason = (
            f"early stopping: {cfg.monitor} did not improve for {cfg.patience} evaluations "
            f"(best {mine['best']})"
        )
        state = dataclasses.replace(state, stop_reason=reason)
    return state


def _missing_monitor(event: Event, cfg: EarlyStoppingConfig, metrics: Any) -> TrainState:
    """A run with a val phase that computes losses (``run.val_step``) has two metric sources:
    the evaluation hook's metrics and the val phase's losses. A dict of one source without the
    monitor is skipped while the other may hold it; otherwise a missing monitor is an error."""
    mine = dict(event.state.hooks.get(EARLY_STOPPING) or {"best": None, "bad_evaluations": 0})
    source = "val_phase" if event.stage is Stage.AFTER_VAL_EPOCH else "evaluation"
    lacking = sorted({*mine.get("lacking", ()), source})
    two_sources = getattr(event.run, "val_step", None) is not None
    if two_sources and (mine["best"] is not None or len(lacking) < 2):
        return with_hook_state(event.state, EARLY_STOPPING, {**mine, "lacking": lacking})
    raise KeyError(
        f"EarlyStoppingConfig.monitor={cfg.monitor!r} is not in the evaluation metrics "
        f"{sorted(metrics)}"
    )


@register(EarlyStoppingConfig)
def build_early_stopping_hook(cfg: EarlyStoppingConfig, **context: Any) -> Hook:
    """``build(EarlyStoppingConfig(...))``: a custom hook for ``train(hooks=...)``."""
    del context
    return Hook(
        EARLY_STOPPING,
        lambda event: early_stopping_fn(event, cfg),
        get_priority(cfg.priority),
        reads_optional=("metrics",),
    )
