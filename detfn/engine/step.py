"""Gradients of a pure loss function, and the train step the loop runs for every batch.

``loss_fn(params, buffers, batch) -> (loss, aux)``: ``loss`` 0-d, ``aux`` named 0-d tensors
(mmdet's ``log_vars``), the model run with ``torch.func.functional_call``. BatchNorm buffers are
an argument, never captured (an in-place update of a captured buffer fails under ``torch.func``),
donated like the optimizer state. Backends (functional-pytorch.md §1.4): "autograd" (detached
leaves and ``torch.autograd.grad``: as fast as ``.backward()``) and "func"
(``torch.func.grad_and_value``, composable with vmap/jvp, 13-21 % slower on CPU).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch

from detfn.engine.state import TrainState

LossFn = Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor], Any], tuple[Any, Any]]
TrainStep = Callable[[TrainState, Any], dict[str, Any]]
Backend = Literal["autograd", "func"]


def _check_loss(loss: Any) -> torch.Tensor:
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        got = f"Tensor of shape {tuple(loss.shape)}" if torch.is_tensor(loss) else type(loss)
        raise TypeError(f"loss_fn must return (loss, aux) with loss a 0-d tensor, got {got}")
    return loss


def value_and_grad(loss_fn: LossFn, backend: Backend = "autograd"):
    """``f(params, buffers, batch) -> ((loss, aux), grads)`` with ``grads`` by parameter name
    ("autograd": without the parameters the loss does not use, which the optimizer skips)."""
    if backend == "func":
        transformed = torch.func.grad_and_value(
            lambda p, b, x: (lambda loss, aux: (_check_loss(loss), aux))(*loss_fn(p, b, x)),
            has_aux=True,
        )

        def run_func(params, buffers, batch):
            grads, (loss, aux) = transformed(dict(params), buffers, batch)
            return (loss, aux), grads

        return run_func
    if backend != "autograd":
        raise ValueError(f"value_and_grad: backend must be 'autograd' or 'func', got {backend!r}")

    def run(params, buffers, batch):
        leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
        loss, aux = loss_fn(leaves, buffers, batch)
        grads = torch.autograd.grad(_check_loss(loss), list(leaves.values()), allow_unused=True)
        return (loss.detach(), aux), {n: g for n, g in zip(leaves, grads) if g is not None}

    return run


def batch_size_of(batch: Any) -> int:
    """Images in a batch: ``len(batch)`` (a :class:`~detfn.structures.Batch`), else dim 0."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if hasattr(batch, "__len__") and not isinstance(batch, Mapping):
        first = batch[0] if isinstance(batch, (tuple, list)) and batch else None
        return int(first.shape[0]) if isinstance(first, torch.Tensor) else len(batch)
    raise TypeError(f"cannot tell the batch size of a {type(batch).__name__}; give it __len__")


def make_train_step(
    loss_fn: LossFn,
    *,
    backend: Backend = "autograd",
    autocast_dtype: torch.dtype | None = None,
    device_type: str = "cpu",
    loss_scale: Callable[[TrainState], float | None] | None = None,
) -> TrainStep:
    """``step(state, batch) -> outputs`` of ``after_train_iter``: ``loss`` (0-d, detached,
    unscaled), ``losses`` (aux, detached), ``grads`` (of the loss times ``loss_scale(state)``,
    the fp16 scale, when given), ``batch_size``. The optimizer hook updates the parameters, so
    accumulation and clipping stay in one place. ``autocast_dtype``: the forward runs under
    ``torch.autocast``, the backward outside it, as torch recommends."""

    def forward(params, buffers, batch, scale):
        autocast = torch.autocast(device_type, dtype=autocast_dtype) if autocast_dtype else None
        with autocast or contextlib.nullcontext():
            loss, aux = loss_fn(params, buffers, batch)
        loss = _check_loss(loss).float()
        scaled = loss * scale if scale is not None else loss
        return scaled, (loss, aux)

    def step(state: TrainState, batch: Any) -> dict[str, Any]:
        scale = loss_scale(state) if loss_scale is not None else None
        grad_fn = value_and_grad(lambda p, b, x: forward(p, b, x, scale), backend)
        (_, (loss, aux)), grads = grad_fn(state.params, state.buffers, batch)
        if not isinstance(aux, Mapping):
            raise TypeError(f"loss_fn must return (loss, aux) with aux a dict, got {type(aux)}")
        losses = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in aux.items()}
        size = batch_size_of(batch)
        return {"loss": loss.detach(), "losses": losses, "grads": grads, "batch_size": size}

    return step
