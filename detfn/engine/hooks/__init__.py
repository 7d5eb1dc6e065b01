"""Standard hooks. Importing this package registers every hook config's builder.

Default slots (mmcv's ``register_training_hooks`` plus mmdet's evaluation hook):
lr VERY_HIGH (10), momentum and other schedules HIGH (30), optimizer ABOVE_NORMAL (40),
checkpoint NORMAL (50), timer LOW (70), evaluation LOW after the timer, loggers VERY_LOW (90);
custom hooks NORMAL unless given. detfn's own extras: NaN guard 35 (before the optimizer), EMA 49
(after the optimizer, before checkpoints), sampler seed NORMAL.
"""

from detfn.engine.hooks import (  # noqa: F401  (importing registers the builders)
    checkpoint,
    ema,
    evaluation,
    logger,
    optimizer,
    sampler_seed,
    wandb,
)
