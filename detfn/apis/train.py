"""Train a detector from an :class:`ExperimentConfig`: the one function behind every experiment."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from detfn.apis.data_parallel import data_parallel
from detfn.apis.evaluate_dist import evaluate_dataset_on_ranks
from detfn.apis.experiment import ExperimentConfig
from detfn.data import build_loader
from detfn.dist import get_rank, get_world_size
from detfn.dist.seeding import seed_all, set_deterministic
from detfn.engine import Hook, TrainState, train
from detfn.engine.hooks.env_header import env_header_hook
from detfn.engine.optim import norm_param_names
from detfn.models.functional import apply, detector_loss_fn, detector_predict_fn, split
from detfn.registry import build

__all__ = [
    "Built",
    "build_experiment",
    "detector_val_step",
    "resolve_device",
    "seed_everything",
    "train_detector",
]

# Metrics that are not numbers (tables, copy-paste strings) stay out of logs and best tracking.
_SCALAR = (int, float)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; a named cuda device must exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"ExperimentConfig.device={device!r} but CUDA is not available here")
    return resolved


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA); the data pipeline is seeded by its config."""
    seed_all(seed)


@dataclass(frozen=True)
class Built:
    """Everything an experiment config builds, before training starts."""

    model: torch.nn.Module
    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    train_set: Any
    val_set: Any
    device: torch.device


def build_experiment(cfg: ExperimentConfig, *, with_train: bool = True) -> Built:
    """Seed (and, with ``cfg.deterministic``, pick deterministic kernels), build the model on
    its device and the datasets."""
    seed_everything(cfg.seed)
    if cfg.deterministic:
        set_deterministic(True, warn_only=True)
    device = resolve_device(cfg.device)
    model = build(cfg.model).to(device)
    params, buffers = split(model)
    train_set = build(cfg.data.train, seed=cfg.seed) if with_train else None
    val_set = build(cfg.data.val, seed=cfg.seed) if cfg.data.val is not None else None
    return Built(model, params, buffers, train_set, val_set, device)


def detector_val_step(model: torch.nn.Module, device: torch.device):
    """The step of a ``("val", n)`` workflow phase (mmcv's ``val_step``): the detector's losses
    on a val batch, with the model in eval mode (BatchNorm uses and keeps its running
    statistics, dropout is off); the loop runs it under ``no_grad`` and logs the batch-size
    weighted means (``loss``, ``loss_rpn_cls``, ...) as a ``"mode": "val"`` record, which the
    TensorBoard and wandb hooks write as ``val/loss_*``.

    ``val_step(state, batch) -> {"loss": Tensor[], <term>: Tensor[], "batch_size": B}``.
    """

    def val_step(state: TrainState, batch: Any) -> dict[str, Any]:
        model.train(False)
        batch = batch.to(device, non_blocking=True)
        total, losses = apply(
            model, state.params, state.buffers, batch.images, batch.img_shapes, batch, mode="loss"
        )
        return {"loss": total, **losses, "batch_size": len(batch.metas)}

    return val_step


def train_detector(
    cfg: ExperimentConfig,
    *,
    hooks: Sequence[Hook] = (),
    hook_context: Mapping[str, Mapping[str, Any]] | None = None,
) -> TrainState:
    """Train ``cfg.model`` on ``cfg.data.train``, evaluating on ``cfg.data.val`` when the runner's
    evaluation hook is set; returns the final train state."""
    built = build_experiment(cfg)
    device = built.device
    loss = detector_loss_fn(built.model)

    def loss_fn(params, buffers, batch):
        return loss(params, buffers, batch.to(device, non_blocking=True))

    # data parallel (one process: unchanged): rank 0's weights, bucketed gradient averaging,
    # writers on rank 0 only, a shard of the data per rank
    scaling = cfg.auto_scale_lr
    dp = data_parallel(
        cfg.runner,
        params=built.params,
        buffers=built.buffers,
        loss_fn=loss_fn,
        work_dir=cfg.work_dir,
        hook_context=hook_context,
        base_batch_size=scaling.base_batch_size if scaling.enable else None,
        samples_per_gpu=cfg.data.train_loader.batch_size,
    )
    shard = {"rank": get_rank(), "world_size": get_world_size()}
    evaluate = None
    if built.val_set is not None and cfg.runner.evaluation is not None:
        predict = detector_predict_fn(built.model)
        val_loader = build_loader(built.val_set, cfg.data.test_loader, **shard)

        def evaluate(state: TrainState) -> dict[str, float]:
            metrics = evaluate_dataset_on_ranks(
                predict, state.params, state.buffers, built.val_set, val_loader, device=device
            )
            return {k: float(v) for k, v in metrics.items() if isinstance(v, _SCALAR)}

    phase_loader = phase_step = None
    if built.val_set is not None and any(phase == "val" for phase, _ in cfg.runner.workflow):
        # a val phase computes the losses on the val set's targets (read by the test loader)
        phase_loader = build_loader(built.val_set, cfg.data.test_loader, **shard)
        phase_step = detector_val_step(built.model, device)

    return train(
        dp.cfg,
        params=built.params,
        buffers=built.buffers,
        loss_fn=dp.loss_fn,
        train_loader=build_loader(built.train_set, cfg.data.train_loader, **shard),
        val_loader=phase_loader,
        val_step=phase_step,
        evaluate=evaluate,
        work_dir=dp.work_dir,
        experiment_cfg=cfg,
        norm_names=norm_param_names(built.model),
        hooks=(*hooks, *dp.hooks, env_header_hook()),
        hook_context=dp.hook_context,
        device=device,
        logger=dp.logger,
    )
