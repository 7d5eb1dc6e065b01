"""Standard hooks. Importing this package registers every hook config's builder.

Default slots (mmcv's ``register_training_hooks`` plus mmdet's evaluation hook):
lr VERY_HIGH (10), momentum and other schedules HIGH (30), optimizer ABOVE_NORMAL (40),
checkpoint NORMAL (50), timer LOW (70), evaluation LOW after the timer, loggers VERY_LOW (90);
custom hooks NORMAL unless given. detfn's own extras: work dir HIGHEST (0), NaN guard 35 (before
the optimizer), EMA 49 (after the optimizer, before checkpoints), sampler seed NORMAL.
"""

from detfn.engine.hooks import (
    checkpoint,
    ema,
    evaluation,
    guards,
    logger,
    optimizer,
    sampler_seed,
    schedule,
    timer,
    wandb,
    workdir,
)
from detfn.engine.hooks.checkpoint import CheckpointHookConfig
from detfn.engine.hooks.ema import EMAConfig, ema_params
from detfn.engine.hooks.evaluation import EvaluationHookConfig
from detfn.engine.hooks.guards import NanGuardConfig, NonFiniteLossError
from detfn.engine.hooks.logger import TextLoggerHookConfig
from detfn.engine.hooks.optimizer import (
    GradClipConfig,
    LossScaleConfig,
    NonFiniteGradError,
    OptimizerHookConfig,
)
from detfn.engine.hooks.sampler_seed import SamplerSeedConfig
from detfn.engine.hooks.schedule import schedule_hook
from detfn.engine.hooks.timer import TimerHookConfig
from detfn.engine.hooks.wandb import WandbHookConfig
from detfn.engine.hooks.workdir import WorkDirHookConfig

__all__ = [
    "CheckpointHookConfig",
    "EMAConfig",
    "EvaluationHookConfig",
    "GradClipConfig",
    "LossScaleConfig",
    "NanGuardConfig",
    "NonFiniteGradError",
    "NonFiniteLossError",
    "OptimizerHookConfig",
    "SamplerSeedConfig",
    "TextLoggerHookConfig",
    "TimerHookConfig",
    "WandbHookConfig",
    "WorkDirHookConfig",
    "checkpoint",
    "ema",
    "ema_params",
    "evaluation",
    "guards",
    "logger",
    "optimizer",
    "sampler_seed",
    "schedule",
    "schedule_hook",
    "timer",
    "wandb",
    "workdir",
]
