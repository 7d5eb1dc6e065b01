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

from detfn.structures import img_shapes_of

__all__ = ["apply", "detector_loss_fn", "detector_predict_fn", "load_into", "split"]


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


def detector_loss_fn(model: nn.Module):
    """The pure training loss of a detector: ``loss(params, buffers, batch) -> (total, losses)``.

    The module is put in train mode on each call (norm_eval backbones keep their BatchNorms in
    eval mode themselves).
    """

    def loss(params, buffers, batch):
        model.train(True)
        return apply(model, params, buffers, batch.images, batch.img_shapes, batch, mode="loss")

    return loss


def detector_predict_fn(model: nn.Module):
    """The pure inference of a detector.

    ``predict(params, buffers, images, metas) -> list[ImageDetections]``: per image, boxes in
    original-image coordinates, scores and labels.
    """
    from detfn.models.postprocess import rescale_detections

    @torch.no_grad()
    def predict(params, buffers, images, metas):
        model.train(False)
        shapes = img_shapes_of(metas, images.device)
        dets = apply(model, params, buffers, images, shapes, None, mode="predict")
        return rescale_detections(dets, metas)

    return predict
