"""Split a module into structure + explicit tensors, and call it as a pure function.

A detector is defined as an ``nn.Module`` (structure and initialisation) but trained and evaluated
as pure functions of ``(params, buffers, inputs)`` through :func:`torch.func.functional_call`:

* ``params``: the tensors the optimizer updates (``requires_grad=True``);
* ``buffers``: everything else the forward needs — BatchNorm statistics and the parameters of
  frozen stages (``requires_grad=False``), which are therefore never handed to the optimizer.

Buffers are always explicit arguments: BatchNorm in train mode writes its running statistics in
place into the tensors passed here, which is only legal under ``torch.func`` transforms when they
are arguments, never captured in a closure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from detfn.models.detectors.base import sum_losses
from detfn.structures import mix_seed

__all__ = [
    "apply",
    "detector_loss_fn",
    "detector_predict_fn",
    "load_into",
    "loss_generator",
    "norm_param_names",
    "split",
]

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def split(module: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(params, buffers)`` of ``module``: trainable parameters, then buffers + frozen parameters.

    The tensors are detached views sharing storage with the module, so the split costs nothing.
    """
    params: dict[str, torch.Tensor] = {}
    buffers: dict[str, torch.Tensor] = {}
    for name, p in module.named_parameters():
        (params if p.requires_grad else buffers)[name] = p.detach()
    for name, b in module.named_buffers():
        buffers[name] = b
    return params, buffers


def norm_param_names(module: nn.Module) -> frozenset[str]:
    """Names (as in ``module.named_parameters()``) of the parameters of norm layers, for the
    optimizer's ``norm_decay_mult`` (:func:`detfn.engine.train`'s ``norm_names``)."""
    names = set()
    for prefix, sub in module.named_modules():
        if isinstance(sub, _NORM_TYPES):
            for pname, _ in sub.named_parameters(recurse=False):
                names.add(f"{prefix}.{pname}" if prefix else pname)
    return frozenset(names)


def apply(
    module: nn.Module,
    params: Mapping[str, torch.Tensor],
    buffers: Mapping[str, torch.Tensor],
    *args: Any,
    **kwargs: Any,
) -> Any:
    """``module(*args, **kwargs)`` with its tensors replaced by ``params`` and ``buffers``."""
    return torch.func.functional_call(module, (dict(params), dict(buffers)), args, kwargs)


def load_into(
    module: nn.Module, params: Mapping[str, torch.Tensor], buffers: Mapping[str, torch.Tensor]
) -> nn.Module:
    """Copy ``params`` and ``buffers`` into ``module`` in place (for export or torch-style use).

    Raises:
        KeyError: naming the missing or unexpected tensor names.
    """
    own = dict(module.named_parameters()) | dict(module.named_buffers())
    given = dict(params) | dict(buffers)
    missing = sorted(set(own) - set(given))
    unexpected = sorted(set(given) - set(own))
    if missing or unexpected:
        raise KeyError(f"tensor names differ: missing {missing[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        for name, tensor in given.items():
            own[name].copy_(tensor)
    return module


def loss_generator(seed: int, rng_key: int | None) -> torch.Generator:
    """The generator of one loss call: a CPU generator seeded from the run seed and the batch's
    ``rng_key`` (its place in the run). Global RNG state is neither read nor changed."""
    return torch.Generator().manual_seed(mix_seed(seed, -1 if rng_key is None else rng_key))


def detector_loss_fn(model: nn.Module, seed: int = 0):
    """The pure training loss of a detector: ``loss(params, buffers, batch) -> (total, losses)``.

    The module is put in train mode on each call (norm_eval backbones keep their BatchNorms in
    eval mode themselves). Randomness inside the loss comes from :func:`loss_generator` of
    ``seed`` and ``batch.rng_key`` only, so equal batches give equal losses.
    """

    def loss(params, buffers, batch):
        model.train(True)
        generator = loss_generator(seed, getattr(batch, "rng_key", None))
        losses = apply(model, params, buffers, batch.images, batch, "loss", generator)
        return sum_losses(losses), losses

    return loss


def detector_predict_fn(model: nn.Module):
    """The pure inference of a detector.

    ``predict(params, buffers, images, metas) -> list[ImageDetections]``: per image, boxes in
    original-image coordinates, scores and labels.
    """

    @torch.no_grad()
    def predict(params, buffers, images, metas):
        model.train(False)
        return apply(model, params, buffers, images, tuple(metas), "predict")

    return predict
