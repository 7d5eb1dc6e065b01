"""Weights only, for ``load_from``: read ``(params, buffers)`` from any checkpoint and copy them
into a :class:`TrainState` by name.

Unlike resuming (:func:`detfn.engine.checkpoint_io.state_from_checkpoint`), this accepts a
foreign state_dict (mmcv, torchvision, DataParallel) and a model that differs in some tensors;
only a shape mismatch is an error.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import torch

from detfn.engine.checkpoint_io import FORMAT, CheckpointError, load_checkpoint
from detfn.engine.state import TrainState


def load_weights(
    src: str | os.PathLike[str] | Mapping[str, Any], *, like: TrainState | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(params, buffers)`` from a checkpoint, for ``load_from`` (weights only, no resume).

    ``src`` is a path or an already loaded dict: a detfn checkpoint, an mmcv-style
    ``{"state_dict": ...}`` or a plain state_dict (a DataParallel ``module.`` prefix is removed).
    A plain state_dict does not say which tensors are buffers: with ``like`` its names are split
    by ``like.params`` / ``like.buffers``; without it everything is returned as params.
    """
    ckpt = load_checkpoint(src) if isinstance(src, (str, os.PathLike)) else src
    where = str(src) if isinstance(src, (str, os.PathLike)) else "<state_dict>"
    if isinstance(ckpt, Mapping) and ckpt.get("format") == FORMAT:
        state = ckpt["state"]
        return dict(state["params"]), dict(state["buffers"])
    if isinstance(ckpt, Mapping) and isinstance(ckpt.get("state_dict"), Mapping):
        ckpt = ckpt["state_dict"]
    if not isinstance(ckpt, Mapping) or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise CheckpointError(f"{where}: neither a detfn checkpoint nor a state_dict of tensors")
    weights = _strip_prefix(dict(ckpt), "module.")
    if like is None:
        return weights, {}
    buffer_names = set(like.buffers)
    params = {k: v for k, v in weights.items() if k not in buffer_names}
    return params, {k: v for k, v in weights.items() if k in buffer_names}


def _strip_prefix(weights: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if weights and all(k.startswith(prefix) for k in weights):
        return {k[len(prefix) :]: v for k, v in weights.items()}
    return weights


def merge_weights(
    state: TrainState,
    params: Mapping[str, torch.Tensor],
    buffers: Mapping[str, torch.Tensor],
    *,
    strict: bool = False,
) -> tuple[TrainState, list[str]]:
    """``state`` with the given weights copied in by name (``load_from``); returns the new state
    and the names of the state's tensors that got no weight.

    A name in the weights that the state does not have is ignored unless ``strict``; a shape
    mismatch always raises, since silently skipping it would train a different model.
    """
    loaded = {**params, **buffers}
    unexpected = sorted(set(loaded) - set(state.params) - set(state.buffers))
    if strict and unexpected:
        raise CheckpointError(f"load_from: weights not in the model: {unexpected[:5]}")
    missing: list[str] = []
    new: list[dict[str, torch.Tensor]] = []
    for current in (state.params, state.buffers):
        merged = dict(current)
        for name, tensor in current.items():
            if name not in loaded:
                missing.append(name)
                continue
            if tuple(loaded[name].shape) != tuple(tensor.shape):
                raise CheckpointError(
                    f"load_from: {name!r} has shape {tuple(loaded[name].shape)}, "
                    f"the model has {tuple(tensor.shape)}"
                )
            merged[name] = loaded[name].to(device=tensor.device, dtype=tensor.dtype)
        new.append(merged)
    if strict and missing:
        raise CheckpointError(f"load_from: model tensors without weights: {missing[:5]}")
    return dataclasses.replace(state, params=new[0], buffers=new[1]), missing
