"""The training engine: explicit state, a generator loop of lifecycle events, hook functions.

``import detfn.engine`` registers the builders of the optimizer, schedule and hook configs; it
imports nothing of :mod:`detfn.models` or :mod:`detfn.data`.
"""

from detfn.engine import hooks, optim, schedules
from detfn.engine.driver import drive
from detfn.engine.events import Event, Hook, Outputs, Stage
from detfn.engine.loop import RunContext, train_loop
from detfn.engine.runner import RunnerConfig, build_hooks, initial_state, train
from detfn.engine.state import TrainState
from detfn.engine.step import make_train_step

__all__ = ["Event", "Hook", "Outputs", "RunContext", "RunnerConfig", "Stage", "TrainState"]
__all__ += ["build_hooks", "drive", "initial_state", "make_train_step", "train", "train_loop"]
__all__ += ["hooks", "optim", "schedules"]
