"""The explicit, checkpointable state of a training run: everything that changes while training
lives here, so a checkpoint of it resumes the run exactly. Hooks return ``replace(state, ...)``.
Counters follow mmcv's runner (:mod:`detfn.engine.loop`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

Hyper = Mapping[str, tuple[float, ...]]


@dataclass(frozen=True)
class TrainState:
    """Attributes:
    params / buffers: trainable parameters / everything else (BN statistics, frozen weights).
    max_epochs / max_iters: the run's length (one is set); iters_per_epoch: the loader's.
    base: the configured value of every per-group hyperparameter (``{"lr": (...), ...}``,
        multipliers applied), where schedules read it; a resume takes the new config's.
    hyper: the current values, same keys: what the optimizer steps with; schedules set them.
    rng: the global RNG states (:func:`capture_rng`), captured before ``after_train_iter`` and
        ``after_train_epoch``, restored when a run starts (loaders carry their own generator).
    hooks: per-hook state by hook name (tensors, numbers, str, lists/dicts of them).
    stop_reason: set by a hook that asks the loop to stop; once set it stays set.
    """

    params: Mapping[str, torch.Tensor]
    buffers: Mapping[str, torch.Tensor]
    opt_state: Any
    epoch: int = 0
    iter: int = 0
    inner_iter: int = 0
    max_epochs: int | None = None
    max_iters: int | None = None
    iters_per_epoch: int = 0
    base: Hyper = field(default_factory=dict)
    hyper: Hyper = field(default_factory=dict)
    rng: Mapping[str, Any] = field(default_factory=dict)
    hooks: Mapping[str, Any] = field(default_factory=dict)
    stop_reason: str | None = None

    @property
    def lr(self) -> tuple[float, ...]:
        return tuple(self.hyper.get("lr", ()))

    @property
    def momentum(self) -> tuple[float, ...]:  # SGD's momentum or Adam's beta1, per group
        return tuple(self.hyper.get("momentum", ()))


def with_hook_state(state: TrainState, name: str, value: Any) -> TrainState:
    return replace(state, hooks={**state.hooks, name: value})


def run_max_iters(state: TrainState) -> int | None:
    if state.max_iters is not None:
        return state.max_iters
    if state.max_epochs is not None and state.iters_per_epoch > 0:
        return state.max_epochs * state.iters_per_epoch
    return None


def capture_rng() -> dict[str, Any]:
    """The torch CPU, CUDA (when initialized), Python ``random`` and NumPy generator states."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    mt_tensor = torch.from_numpy(np.asarray(mt, dtype=np.int64))
    numpy = {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos)}
    numpy.update(has_gauss=int(has_gauss), gauss=float(cached))
    python = {"version": version, "state": mt_tensor, "gauss": gauss}
    state = {"torch": torch.get_rng_state(), "python": python, "numpy": numpy}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng`; missing entries are left as they are."""
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "python" in state:
        py = state["python"]
        random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    if "numpy" in state:
        nps = state["numpy"]
        keys = nps["keys"].numpy().astype(np.uint32)
        np.random.set_state((nps["name"], keys, nps["pos"], nps["has_gauss"], nps["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
