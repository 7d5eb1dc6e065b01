"""Turn a one-process :func:`detfn.engine.train` call into one rank's part of a data-parallel job.

:func:`data_parallel` takes the arguments a caller would pass to ``train`` and returns the
rank's versions of them; on one process it returns them unchanged. What changes per rank:

* params and buffers: rank 0's values are broadcast (one initialization for the job);
* the loss function: armed for gradient all-reduces that overlap the backward pass (autograd
  backend, no accumulation, no fp16 scaling; otherwise the optimizer hook reduces after the
  backward, once per update), followed by a failure check every rank agrees on, then by a
  broadcast of rank 0's BatchNorm running statistics (DDP's ``broadcast_buffers``, after the
  forward rather than before it: every rank then evaluates and would save what rank 0 saves);
* the optimizer hook: gets ``reduce_grads``, the bucketed average, applied on updating steps;
* the runner config: ranks other than 0 drop the writers (checkpoint, text log, wandb, best
  checkpoint) and get no work dir, so only rank 0 writes files; every rank keeps the hooks
  that run collectives (evaluation, the distributed hooks);
* two hooks (:func:`distributed_hooks`): ``distributed_losses`` averages ``loss`` and each
  ``losses`` term over the ranks (mmcv's ``log_vars``), so a non-finite loss stops every rank at
  the same iteration, and a failing rank announces its failure, so the others stop at their next
  agreement point, not at a timeout; ``distributed_logged`` takes the slowest rank's ``time`` /
  ``data_time`` (the job waits for it at every all-reduce: the ETA is the job's) and a val
  phase's mean ``metrics``;
* optionally the lr, scaled linearly with the total batch (mmdetection's ``auto_scale_lr``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from detfn.dist.buckets import DEFAULT_BUCKET_BYTES
from detfn.dist.comm import (
    broadcast_tensors_,
    get_rank,
    get_world_size,
    is_distributed,
    max_across_ranks,
    mean_scalars_across_ranks,
    running_stats,
)
from detfn.dist.failure import announce_failure, guard_loss_fn
from detfn.dist.grad_sync import GradSync
from detfn.dist.lr_scaling import scaled_lr
from detfn.engine import checkpoint_io
from detfn.engine.combinators import compose, only_at, when
from detfn.engine.events import Event, Hook, Stage
from detfn.engine.runner import RunnerConfig
from detfn.engine.step import LossFn

__all__ = [
    "DataParallelRun",
    "data_parallel",
    "distributed_hooks",
    "rank_runner_config",
    "scale_runner_lr",
]


@dataclass(frozen=True)
class DataParallelRun:
    """This rank's arguments for :func:`detfn.engine.train` (pass them on unchanged)."""

    cfg: RunnerConfig
    loss_fn: LossFn
    work_dir: str | Path | None
    hooks: tuple[Hook, ...]
    hook_context: dict[str, dict[str, Any]]
    logger: logging.Logger | None
    grad_sync: GradSync | None = None
    rank: int = 0
    world_size: int = 1


def rank_runner_config(cfg: RunnerConfig, rank: int, work_dir: str | Path | None) -> RunnerConfig:
    """``cfg`` for ``rank``: rank 0 keeps it; the others write nothing.

    ``auto_resume`` is resolved to rank 0's latest checkpoint here (the others have no work
    dir to look in), so every rank resumes from the same file.
    """
    if rank == 0:
        return cfg
    evaluation = cfg.evaluation
    if evaluation is not None and evaluation.save_best is not None:
        evaluation = dataclasses.replace(evaluation, save_best=None)
    resume_from = cfg.resume_from
    if cfg.auto_resume and resume_from is None and work_dir is not None:
        latest = checkpoint_io.find_latest(Path(work_dir))
        resume_from = str(latest) if latest is not None else None
    return dataclasses.replace(
        cfg,
        checkpoint=None,
        text_logger=None,
        wandb=None,
        evaluation=evaluation,
        resume_from=resume_from,
        auto_resume=False,
    )


def scale_runner_lr(
    cfg: RunnerConfig, world_size: int, samples_per_gpu: int, base_batch_size: int
) -> RunnerConfig:
    """``cfg`` with the optimizer's lr scaled by ``world_size * samples_per_gpu /
    base_batch_size`` (mmdetection's ``auto_scale_lr``)."""
    lr = scaled_lr(cfg.optimizer.lr, world_size, samples_per_gpu, base_batch_size)
    return dataclasses.replace(cfg, optimizer=dataclasses.replace(cfg.optimizer, lr=lr))


def _prefixed(prefix: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + name: tensor for name, tensor in tensors.items()}


def _sharing_running_stats(loss_fn: LossFn) -> LossFn:
    """``loss_fn``, then rank 0's BN running statistics copied into every rank's buffers."""

    def shared(params, buffers, batch):
        out = loss_fn(params, buffers, batch)
        broadcast_tensors_(running_stats(buffers))
        return out

    return shared


def _quiet_logger(rank: int) -> logging.Logger:
    """Ranks other than 0 log errors only (mmcv's ``get_logger`` rule)."""
    logger = logging.getLogger(f"detfn.rank{rank}")
    logger.setLevel(logging.ERROR)
    return logger


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


def data_parallel(
    cfg: RunnerConfig,
    *,
    params: Mapping[str, torch.Tensor],
    buffers: Mapping[str, torch.Tensor],
    loss_fn: LossFn,
    work_dir: str | Path | None,
    hook_context: Mapping[str, Mapping[str, Any]] | None = None,
    bucket_bytes: int = DEFAULT_BUCKET_BYTES,
    overlap: bool | None = None,
    broadcast_buffers: bool = True,
    base_batch_size: int | None = None,
    samples_per_gpu: int | None = None,
    logger: logging.Logger | None = None,
    reduce_hooks: Callable[[], tuple[Hook, ...]] = distributed_hooks,
) -> DataParallelRun:
    """This rank's ``train`` arguments (see the module docstring); params and buffers are
    overwritten in place with rank 0's values.

    Args:
        overlap: start all-reduces during the backward; None: whenever it is possible.
        broadcast_buffers: share rank 0's BN running statistics after every forward.
        base_batch_size / samples_per_gpu: set both to scale the lr (``auto_scale_lr``).
    """
    context = {k: dict(v) for k, v in (hook_context or {}).items()}
    world = get_world_size()
    if base_batch_size is not None:
        if samples_per_gpu is None:
            raise ValueError("auto_scale_lr: base_batch_size needs samples_per_gpu")
        cfg = scale_runner_lr(cfg, world, samples_per_gpu, base_batch_size)
    if not is_distributed():
        return DataParallelRun(cfg, loss_fn, work_dir, (), context, logger)
    rank = get_rank()
    broadcast_tensors_({**_prefixed("p:", params), **_prefixed("b:", buffers)})
    can_overlap = (
        cfg.grad_backend == "autograd"
        and cfg.optimizer_hook.cumulative_iters == 1
        and cfg.optimizer_hook.precision != "fp16"
    )
    if overlap and not can_overlap:
        raise ValueError(
            "overlapped gradient all-reduce needs grad_backend='autograd', cumulative_iters=1 "
            "and no fp16 loss scaling"
        )
    overlap = can_overlap if overlap is None else overlap
    sync = GradSync(params, cap_bytes=bucket_bytes, overlap=overlap)
    context.setdefault("optimizer_hook", {})["reduce_grads"] = sync.reduce
    wrapped = guard_loss_fn(sync.wrap_loss_fn(loss_fn))
    if broadcast_buffers:
        wrapped = _sharing_running_stats(wrapped)
    return DataParallelRun(
        cfg=rank_runner_config(cfg, rank, work_dir),
        loss_fn=wrapped,
        work_dir=work_dir if rank == 0 else None,
        hooks=reduce_hooks(),
        hook_context=context,
        logger=logger if rank == 0 else _quiet_logger(rank),
        grad_sync=sync,
        rank=rank,
        world_size=world,
    )
