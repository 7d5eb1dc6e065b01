"""Learning-rate and momentum schedules (every mmcv 1.x policy) as configs + pure functions.

* configs: :mod:`.lr_configs` (``StepLrConfig``, ``CosineAnnealingLrConfig``, ...; union
  :data:`LrConfig`, base :class:`LrScheduleConfig`) and :mod:`.momentum_configs`;
* math: :func:`regular_lr` / :func:`regular_momentum` (pure functions of progress),
  :func:`warmup_lr` / :func:`warmup_momentum`, the curves in :mod:`.annealing` / :mod:`.cycles`;
* event rules: :func:`updated_values` (when mmcv's updater hooks set a value);
* hooks: ``build(cfg)`` returns the ``"lr"`` / ``"momentum"`` hook, from
  :mod:`detfn.engine.hooks.lr` / :mod:`detfn.engine.hooks.momentum` (imported first so that the
  builders and JSON type tags are registered whenever these configs are importable);
* preview: :func:`preview_schedule` runs the hooks through a model-free run (mmcv's order).
"""

import detfn.engine.hooks.lr  # registers the lr builders
import detfn.engine.hooks.momentum  # noqa: F401  (registers the momentum builders)
from detfn.engine.schedules.annealing import AnnealStrategy, annealing_cos, annealing_linear
from detfn.engine.schedules.cycles import cyclic_value, one_cycle_ends, one_cycle_value
from detfn.engine.schedules.lr_configs import (
    LR_CONFIGS,
    CosineAnnealingLrConfig,
    CosineRestartLrConfig,
    CyclicLrConfig,
    ExpLrConfig,
    FixedLrConfig,
    FlatCosineAnnealingLrConfig,
    InvLrConfig,
    LinearAnnealingLrConfig,
    LrConfig,
    LrScheduleConfig,
    OneCycleLrConfig,
    PolyLrConfig,
    StepLrConfig,
)
from detfn.engine.schedules.lr_policies import check_lr_schedule, regular_lr
from detfn.engine.schedules.momentum_configs import (
    MOMENTUM_CONFIGS,
    CosineAnnealingMomentumConfig,
    CyclicMomentumConfig,
    LinearAnnealingMomentumConfig,
    MomentumConfig,
    MomentumScheduleConfig,
    OneCycleMomentumConfig,
    StepMomentumConfig,
)
from detfn.engine.schedules.momentum_policies import check_momentum_schedule, regular_momentum
from detfn.engine.schedules.policy_names import lr_config_from_policy, momentum_config_from_policy
from detfn.engine.schedules.preview import preview_schedule, preview_state
from detfn.engine.schedules.updater import run_max_iters, schedule_progress, updated_values
from detfn.engine.schedules.warmup import WarmupType, warmup_lr, warmup_momentum

__all__ = [
    "LR_CONFIGS",
    "MOMENTUM_CONFIGS",
    "AnnealStrategy",
    "CosineAnnealingLrConfig",
    "CosineAnnealingMomentumConfig",
    "CosineRestartLrConfig",
    "CyclicLrConfig",
    "CyclicMomentumConfig",
    "ExpLrConfig",
    "FixedLrConfig",
    "FlatCosineAnnealingLrConfig",
    "InvLrConfig",
    "LinearAnnealingLrConfig",
    "LinearAnnealingMomentumConfig",
    "LrConfig",
    "LrScheduleConfig",
    "MomentumConfig",
    "MomentumScheduleConfig",
    "OneCycleLrConfig",
    "OneCycleMomentumConfig",
    "PolyLrConfig",
    "StepLrConfig",
    "StepMomentumConfig",
    "WarmupType",
    "annealing_cos",
    "annealing_linear",
    "check_lr_schedule",
    "check_momentum_schedule",
    "cyclic_value",
    "lr_config_from_policy",
    "momentum_config_from_policy",
    "one_cycle_ends",
    "one_cycle_value",
    "preview_schedule",
    "preview_state",
    "regular_lr",
    "regular_momentum",
    "run_max_iters",
    "schedule_progress",
    "updated_values",
    "warmup_lr",
    "warmup_momentum",
]
