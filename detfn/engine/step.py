"""Gradients of a pure loss function, and the train step the loop runs for every batch.

``loss_fn(params, buffers, batch) -> (loss, aux)``: ``loss`` a 0-d tensor, ``aux`` named 0-d
tensors (mmdet's ``log_vars``), the model run with ``torch.func.functional_call``. BatchNorm
buffers are an argument, never captured (a captured buffer updated in place is an error under
``torch.func``); they are donated like the optimizer state: they hold the new statistics after
the step. Backends (functional-pytorch.md §1.4): "autograd" (default: detached leaves and
``torch.autograd.grad``, as fast as ``.backward()``, every torchvision op) and "func"
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
        got = (
            f"Tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else type(loss)
        )
        raise TypeError(f"loss_fn must return (loss, aux) with loss a 0-d tensor, got {got}")
    return loss


def value_and_grad(loss_fn: LossFn, backend: Backend = "autograd"):
    """``f(params, buffers, batch) -> ((loss, aux), grads)`` with ``grads`` by parameter name.

    With "autograd", parameters the loss does not depend on have no entry in ``grads``, so the
    optimizer skips them, as ``torch.optim`` skips ``p.grad is None``.
    """
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


def _detached(aux: Any) -> dict[str, Any]:
    if not isinstance(aux, Mapping):
        raise TypeError(f"loss_fn must return (loss, aux) with aux a dict, got {type(aux)}")
    return {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in aux.items()}


def make_train_step(
    loss_fn: LossFn,
    *,
    backend: Backend = "autograd",
    autocast_dtype: torch.dtype | None = None,
    device_type: str = "cpu",
    loss_scale: Callable[[TrainState], float | None] | None = None,
) -> TrainStep:
    """The step the loop runs: ``step(state, batch) -> outputs`` for ``after_train_iter``.

    Outputs: ``loss`` (0-d, detached, unscaled), ``losses`` (aux, detached), ``grads`` (by name,
    of the *scaled* loss when ``loss_scale`` gives a scale), ``batch_size``. The step does not
    update parameters: the optimizer hook does, so accumulation and clipping stay in one place.

    Args:
        autocast_dtype: run the forward under ``torch.autocast(device_type, dtype)`` (bf16/fp16);
            the backward runs outside autocast, as torch recommends.
        loss_scale: reads the fp16 loss scale from the state (the optimizer hook's scaler);
            the loss is multiplied by it before differentiation.
    """

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
        return {
            "loss": loss.detach(),
            "losses": _detached(aux),
            "grads": grads,
            "batch_size": batch_size_of(batch),
        }

    return step
