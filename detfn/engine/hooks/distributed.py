"""The data-parallel hooks (every rank runs both; on one process they do nothing).

* ``distributed_losses`` averages ``loss`` and each ``losses`` term over the ranks (mmcv's
  ``log_vars``), so a non-finite loss stops every rank at the same iteration; a failing rank
  announces its failure, so the others stop at their next agreement point, not at a timeout.
* ``distributed_logged`` takes the slowest rank's ``time`` / ``data_time`` (the job waits for it
  at every all-reduce: the ETA is the job's) and a val phase's mean ``metrics``.
"""

from __future__ import annotations

from detfn.dist.comm import is_distributed, max_across_ranks, mean_scalars_across_ranks
from detfn.dist.failure import announce_failure
from detfn.engine.combinators import compose, only_at, when
from detfn.engine.events import Event, Hook, Stage

LOSSES_PRIORITY = 20  # before the NaN guard (35) and every other reader of the loss
LOGGED_PRIORITY = 80  # between LOW (70: timer, evaluation) and VERY_LOW (90: loggers)
_TIMES = ("data_time", "time")


def distributed_hooks() -> tuple[Hook, Hook]:
    """The two hooks every rank of a data-parallel run registers (custom hooks of ``train``)."""

    def average_losses(event: Event) -> None:
        outputs = event.outputs
        losses = dict(outputs.losses)
        merged = mean_scalars_across_ranks({"loss": outputs.loss, **losses})
        if outputs.loss is not None:
            outputs.loss = merged["loss"]
        outputs.losses = {k: merged[k] for k in losses}

    def job_times(event: Event) -> None:  # the same collectives on every rank: None counts as 0
        for key in _TIMES:
            value = max_across_ranks(getattr(event.outputs, key) or 0.0)
            if getattr(event.outputs, key) is not None:
                setattr(event.outputs, key, value)

    def job_metrics(event: Event) -> None:
        # the val shards have equal sizes; metrics that already are the job's (a broadcast
        # evaluation) stay equal
        event.outputs.metrics = mean_scalars_across_ranks(event.outputs.metrics)

    running = lambda event: is_distributed()  # noqa: E731
    failed = lambda event: event.error is not None  # noqa: E731  (the others raise RankFailedError)
    losses = compose(
        only_at(Stage.AFTER_TRAIN_ITER, average_losses),
        only_at(Stage.AFTER_RUN, when(failed, lambda event: announce_failure(event.error))),
    )
    with_metrics = lambda event: bool(event.outputs.metrics)  # noqa: E731
    logged = compose(
        only_at(Stage.AFTER_TRAIN_ITER, job_times),
        only_at(Stage.AFTER_VAL_EPOCH, when(with_metrics, job_metrics)),
    )
    loss_io = dict(reads=("loss", "losses"), writes=("loss", "losses"))
    logged_io = dict(reads_optional=(*_TIMES, "metrics"), writes=(*_TIMES, "metrics"))
    return (
        Hook("distributed_losses", when(running, losses), LOSSES_PRIORITY, **loss_io),
        Hook("distributed_logged", when(running, logged), LOGGED_PRIORITY, **logged_io),
    )
