"""The data-parallel hook: what the loggers see is the job's, not one rank's.

On ``after_train_iter``, after the timer (LOW) and before the loggers (VERY_LOW):

* ``loss`` and every ``losses`` term are averaged over the ranks (mmcv's ``log_vars``
  reduction; each rank's own loss is only a sample of the job's);
* ``time`` and ``data_time`` become the slowest rank's, so the ETA is that of the job, which
  waits for its slowest rank at every gradient all-reduce.

On ``after_run`` after a failure, the failing rank announces its error
(:func:`detfn.dist.failure.announce_failure`), so the other ranks stop with it at their next
agreement point instead of waiting for the process-group timeout.

Every rank must run this hook (it runs collectives); on one process it does nothing.
"""

from __future__ import annotations

from detfn.dist.comm import is_distributed, max_across_ranks, mean_scalars_across_ranks
from detfn.dist.failure import announce_failure
from detfn.engine.events import Event, Hook, Stage
from detfn.engine.state import TrainState

__all__ = ["DISTRIBUTED", "DISTRIBUTED_PRIORITY", "distributed_fn", "distributed_hook"]

DISTRIBUTED = "distributed"
DISTRIBUTED_PRIORITY = 80  # between LOW (70: timer, evaluation) and VERY_LOW (90: loggers)
_TIMES = ("time", "data_time")


def distributed_fn(event: Event) -> TrainState | None:
    """Average the logged losses, take the slowest rank's times, announce a failure."""
    if not is_distributed():
        return None
    if event.stage is Stage.AFTER_RUN and event.error is not None:
        announce_failure(event.error)
        return None
    if event.stage is not Stage.AFTER_TRAIN_ITER or not isinstance(event.outputs, dict):
        return None
    outputs = event.outputs
    losses = dict(outputs.get("losses") or {})
    merged = mean_scalars_across_ranks({"loss": outputs.get("loss"), **losses})
    if outputs.get("loss") is not None:
        outputs["loss"] = merged["loss"]
    outputs["losses"] = {k: merged[k] for k in losses}
    for key in _TIMES:
        if key in outputs:
            outputs[key] = max_across_ranks(outputs[key])
    return None


def distributed_hook() -> Hook:
    """The hook every rank of a data-parallel run registers (a custom hook of ``train``)."""
    return Hook(DISTRIBUTED, distributed_fn, DISTRIBUTED_PRIORITY)
