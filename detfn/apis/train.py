"""Train a detector from an :class:`ExperimentConfig`: the one function behind every experiment."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from detfn.apis.data_parallel import data_parallel
from detfn.apis.evaluate_dist import evaluate_dataset_on_ranks
from detfn.apis.experiment import ExperimentConfig
from detfn.apis.train_hooks import env_header_hook, training_hooks
from detfn.config import override
from detfn.data import build_loader
from detfn.dist import get_rank, get_world_size
from detfn.dist.seeding import init_seed, seed_all, set_deterministic
from detfn.engine import Hook, TrainState, train
from detfn.models.detectors.base import sum_losses
from detfn.models.functional import (
    apply,
    detector_loss_fn,
    detector_predict_fn,
    loss_generator,
    norm_param_names,
    split,
)
from detfn.registry import build

__all__ = [
    "Built",
    "build_experiment",
    "detector_val_step",
    "evaluate_experiment",
    "resolve_device",
    "seed_everything",
    "train_detector",
    "with_class_names",
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


def with_class_names(cfg: ExperimentConfig, dataset: Any) -> ExperimentConfig:
    """``cfg`` whose model carries the training set's class names (so that ``config.json`` and
    the checkpoints do); a model that names other classes is an error."""
    names = tuple(dataset.class_names)
    source = getattr(dataset, "source", "data.train")
    if len(names) != cfg.model.num_classes:
        raise ValueError(
            f"{source}: the training set has {len(names)} classes {list(names)[:10]} but "
            f"model.num_classes={cfg.model.num_classes}"
        )
    if cfg.model.class_names is None:
        return override(cfg, "model.class_names", names)
    if tuple(cfg.model.class_names) != names:
        raise ValueError(
            f"{source}: the training set's classes {list(names)} differ from "
            f"model.class_names {list(cfg.model.class_names)}"
        )
    return cfg


@dataclass(frozen=True)
class Built:
    """Everything an experiment config builds, before training starts.

    ``cfg`` is the config with the model's class names filled in from the training set.
    """

    cfg: ExperimentConfig
    model: torch.nn.Module
    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    train_set: Any
    val_set: Any
    device: torch.device


def build_experiment(cfg: ExperimentConfig, *, with_train: bool = True) -> Built:
    """Seed (and, with ``cfg.deterministic``, pick deterministic kernels), build the model on
    its device and the datasets. ``cfg.seed=None`` draws a seed on rank 0 and broadcasts it;
    ``Built.cfg`` records it, so the saved config reproduces the run."""
    if cfg.seed is None:
        cfg = dataclasses.replace(cfg, seed=init_seed(None))
    seed_everything(cfg.seed)
    if cfg.deterministic:
        set_deterministic(True, warn_only=True)
    device = resolve_device(cfg.device)
    model = build(cfg.model).to(device)
    params, buffers = split(model)
    train_set = build(cfg.data.train, seed=cfg.seed) if with_train else None
    if train_set is not None:
        cfg = with_class_names(cfg, train_set)
    val_set = build(cfg.data.val, seed=cfg.seed) if cfg.data.val is not None else None
    return Built(cfg, model, params, buffers, train_set, val_set, device)


def evaluate_experiment(
    built: Built,
    params: Mapping[str, torch.Tensor],
    buffers: Mapping[str, torch.Tensor],
    *,
    classwise: bool = False,
) -> dict[str, Any]:
    """COCO metrics of weights ``(params, buffers)`` on the experiment's val split (``{}`` when
    it has none), through :func:`detfn.apis.evaluate.evaluate_dataset`; under a data-parallel
    launch each rank predicts its shard and every rank receives the metrics."""
    if built.val_set is None:
        return {}
    cfg = built.cfg
    shard = {"rank": get_rank(), "world_size": get_world_size()}
    return evaluate_dataset_on_ranks(
        detector_predict_fn(built.model),
        params,
        buffers,
        built.val_set,
        build_loader(built.val_set, cfg.data.test_loader, **shard),
        class_names=cfg.model.class_names,
        device=built.device,
        classwise=classwise,
    )


def detector_val_step(model: torch.nn.Module, device: torch.device, seed: int = 0):
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
        generator = loss_generator(seed, getattr(batch, "rng_key", None))
        losses = apply(model, state.params, state.buffers, batch.images, batch, "loss", generator)
        return {"loss": sum_losses(losses), **losses, "batch_size": len(batch.metas)}

    return val_step


def train_detector(
    cfg: ExperimentConfig,
    *,
    hooks: Sequence[Hook] = (),
    hook_context: Mapping[str, Mapping[str, Any]] | None = None,
    built: Built | None = None,
) -> TrainState:
    """Train ``cfg.model`` on ``cfg.data.train``, evaluating on ``cfg.data.val`` when the runner's
    evaluation hook is set; returns the final train state.

    ``built`` reuses what :func:`build_experiment` already built for ``cfg``.
    """
    built = build_experiment(cfg) if built is None else built
    cfg, device = built.cfg, built.device
    # The RoI sampler's draws come from (seed, batch position), never from the global RNG.
    loss = detector_loss_fn(built.model, seed=cfg.seed)

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
                predict,
                state.params,
                state.buffers,
                built.val_set,
                val_loader,
                class_names=cfg.model.class_names,
                device=device,
            )
            return {k: float(v) for k, v in metrics.items() if isinstance(v, _SCALAR)}

    phase_loader = phase_step = None
    if built.val_set is not None and any(phase == "val" for phase, _ in cfg.runner.workflow):
        # a val phase computes the losses on the val set's targets (read by the test loader)
        phase_loader = build_loader(built.val_set, cfg.data.test_loader, **shard)
        phase_step = detector_val_step(built.model, device, cfg.seed)

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
        hooks=(*hooks, *dp.hooks, env_header_hook(), *training_hooks(cfg, built)),
        hook_context=dp.hook_context,
        device=device,
        logger=dp.logger,
    )
