"""The optimizer interface: an optax-style ``init`` / ``update`` pair over named tensors.

``update`` is functional at the interface (state in, state out) but *donates* its inputs: the
parameter tensors and the optimizer-state tensors are updated in place with ``torch._foreach_*_``
ops and returned. In-place updates avoid allocating new full-size tensors every step, which made
a pure out-of-place version 2.4x slower than ``torch.optim`` on CPU (functional-pytorch.md §2).
Callers must therefore treat the ``params`` and ``state`` they pass in as consumed.

Hyperparameters that schedules change (lr, momentum / beta1, weight_decay) are the ``hyper``
argument of ``update``: one value per :class:`~detfn.engine.optim.groups.ParamGroup` for each
name, read from ``TrainState.hyper``; a name it lacks takes the group's configured value. This
adapter alone knows that Adam's beta1 is called ``momentum``. Everything else is fixed when the
optimizer is built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch

from detfn.engine.optim.groups import ParamGroup

Params = Mapping[str, torch.Tensor]
Grads = Mapping[str, torch.Tensor]
OptState = dict[str, Any]
Hyper = Mapping[str, Sequence[float]]
UpdateFn = Callable[[Grads, OptState, Params, Hyper], tuple[Params, OptState]]
# step_group(group, grads, params, opt_state, values): one group's in-place step, with
# values = {"lr": float, "momentum": float, "weight_decay": float} of that group.
GroupStepFn = Callable[[ParamGroup, Grads, Params, OptState, Mapping[str, float]], None]
HYPERPARAMETERS = ("lr", "momentum", "weight_decay")


class Optimizer(NamedTuple):
    """Attributes:
    groups: the parameter groups, fixed at build time.
    init: ``init(params) -> opt_state`` (checkpointable: dicts of tensors and numbers).
    update: ``update(grads, opt_state, params, hyper) -> (params, opt_state)`` with ``hyper``
        ``{"lr": (...), "momentum": (...), "weight_decay": (...)}``, one value per group for each
        name (missing names: the configured values). Parameters without a gradient (absent from
        ``grads``) are skipped, like ``torch.optim`` skips ``p.grad is None``.
    """

    groups: tuple[ParamGroup, ...]
    init: Callable[[Params], OptState]
    update: UpdateFn


def initial_hyperparams(groups: Sequence[ParamGroup]) -> dict[str, tuple[float, ...]]:
    """The configured value of every hyperparameter per group: ``TrainState.base``."""
    return {name: tuple(getattr(g, name) for g in groups) for name in HYPERPARAMETERS}


def _group_values(groups: Sequence[ParamGroup], hyper: Hyper) -> list[dict[str, float]]:
    """Per group, its value of every hyperparameter; a one-line error for a wrong length."""
    values = [dict(zip(HYPERPARAMETERS, (g.lr, g.momentum, g.weight_decay))) for g in groups]
    for name, given in hyper.items():
        if name not in HYPERPARAMETERS:
            raise ValueError(f"optimizer has no hyperparameter {name!r}; it has {HYPERPARAMETERS}")
        if len(given) != len(groups):
            raise ValueError(
                f"optimizer has {len(groups)} parameter groups but got {len(given)} {name} "
                f"values; state.hyper[{name!r}] needs one per group"
            )
        for group_values, value in zip(values, given):
            group_values[name] = value
    return values


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
    """The :class:`Optimizer` whose ``update`` checks the per-group values and runs
    ``step_group`` on each group in order with its own values (what SGD and AdamW share)."""
    groups = tuple(groups)

    def update(grads: Grads, state: OptState, params: Params, hyper: Hyper):
        for group, values in zip(groups, _group_values(groups, hyper)):
            step_group(group, grads, params, state, values)
        return params, state

    return Optimizer(groups, init, update)
