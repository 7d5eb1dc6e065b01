"""The training engine: explicit state, a generator loop of lifecycle events, hook functions.

``import detfn.engine`` registers the builders of the optimizer, schedule and hook configs; it
imports nothing of :mod:`detfn.models` or :mod:`detfn.data`.
"""

from detfn.engine import hooks, optim, schedules
from detfn.engine.combinators import (
    at_epoch_end,
    compose,
    every_n_epochs,
    every_n_inner_iters,
    every_n_iters,
    make_hook,
    only_at,
    when,
)
from detfn.engine.driver import check_outputs, dispatch, drive, order_hooks
from detfn.engine.events import Event, Hook, HookFn, Outputs, Stage
from detfn.engine.loop import RunContext, train_loop
from detfn.engine.priority import Priority, get_priority
from detfn.engine.runner import RunnerConfig, build_hooks, initial_state, train
from detfn.engine.state import TrainState
from detfn.engine.step import make_train_step, value_and_grad

__all__ = [
    "Event",
    "Hook",
    "HookFn",
    "Outputs",
    "Priority",
    "RunContext",
    "RunnerConfig",
    "Stage",
    "TrainState",
    "at_epoch_end",
    "build_hooks",
    "check_outputs",
    "compose",
    "dispatch",
    "drive",
    "every_n_epochs",
    "every_n_inner_iters",
    "every_n_iters",
    "get_priority",
    "hooks",
    "initial_state",
    "make_hook",
    "make_train_step",
    "only_at",
    "optim",
    "order_hooks",
    "schedules",
    "train",
    "train_loop",
    "value_and_grad",
    "when",
]
