"""The optimizer interface: an optax-style ``init`` / ``update`` pair over named tensors.

``update`` is functional at the interface (state in, state out) but *donates* its inputs: the
parameter tensors and the optimizer-state tensors are updated in place with ``torch._foreach_*_``
ops and returned. In-place updates avoid allocating new full-size tensors every step, which made
a pure out-of-place version 2.4x slower than ``torch.optim`` on CPU (functional-pytorch.md §2).
Callers must therefore treat the ``params`` and ``state`` they pass in as consumed.

Hyperparameters that schedules change (lr, momentum / beta1) are arguments of ``update``, one
value per :class:`~detfn.engine.optim.groups.ParamGroup`, read from ``TrainState.lr`` and
``TrainState.momentum``. Everything else is fixed when the optimizer is built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch

from detfn.engine.optim.groups import ParamGroup

__all__ = [
    "Grads",
    "OptState",
    "Optimizer",
    "Params",
    "group_tensors",
    "initial_hyperparams",
    "per_group_optimizer",
]

Params = Mapping[str, torch.Tensor]
Grads = Mapping[str, torch.Tensor]
OptState = dict[str, Any]
UpdateFn = Callable[
    [Grads, OptState, Params, Sequence[float], Sequence[float]], tuple[Params, OptState]
]
# step_group(group, grads, params, opt_state, lr, momentum): one group's in-place step.
GroupStepFn = Callable[[ParamGroup, Grads, Params, OptState, float, float], None]


class Optimizer(NamedTuple):
    """Attributes:
    groups: the parameter groups, fixed at build time.
    init: ``init(params) -> opt_state`` (checkpointable: dicts of tensors and numbers).
    update: ``update(grads, opt_state, params, lr, momentum) -> (params, opt_state)`` with ``lr``
        and ``momentum`` one value per group. Parameters without a gradient (absent from
        ``grads``) are skipped, like ``torch.optim`` skips ``p.grad is None``.
    """

    groups: tuple[ParamGroup, ...]
    init: Callable[[Params], OptState]
    update: UpdateFn


def initial_hyperparams(groups: Sequence[ParamGroup]) -> dict[str, tuple[float, ...]]:
    """``base_lr``, ``lr`` and ``momentum`` tuples for a fresh :class:`TrainState`."""
    base_lr = tuple(g.lr for g in groups)
    return {"base_lr": base_lr, "lr": base_lr, "momentum": tuple(g.momentum for g in groups)}


def check_hyperparams(groups: Sequence[ParamGroup], lr: Sequence[float], momentum: Sequence[float]):
    """Raise a one-line error when the per-group tuples do not match the groups."""
    if len(lr) != len(groups) or len(momentum) != len(groups):
        raise ValueError(
            f"optimizer has {len(groups)} parameter groups but got {len(lr)} lr values and "
            f"{len(momentum)} momentum values; state.lr/state.momentum need one per group"
        )


def group_tensors(
    group: ParamGroup, grads: Grads, params: Params, *slots: Mapping[str, Any]
) -> tuple[list[str], list[torch.Tensor], list[torch.Tensor], list[list[Any]]]:
    """Names with a gradient, their params, grads and each state ``slot``'s entries, as lists."""
    names = [n for n in group.names if n in grads]
    missing = [n for n in names if n not in params]
    if missing:
        raise KeyError(f"optimizer: parameters {missing[:3]} have gradients but are not in params")
    return (
        names,
        [params[n] for n in names],
        [grads[n] for n in names],
        [[slot[n] for n in names] for slot in slots],
    )


def per_group_optimizer(
    groups: Sequence[ParamGroup], init: Callable[[Params], OptState], step_group: GroupStepFn
) -> Optimizer:
    """The :class:`Optimizer` whose ``update`` checks the per-group lr / momentum tuples and runs
    ``step_group`` on each group in order with its own values (what SGD and AdamW share)."""
    groups = tuple(groups)

    def update(grads: Grads, state: OptState, params: Params, lr, momentum):
        check_hyperparams(groups, lr, momentum)
        for group, group_lr, group_momentum in zip(groups, lr, momentum):
            step_group(group, grads, params, state, group_lr, group_momentum)
        return params, state

    return Optimizer(groups, init, update)
