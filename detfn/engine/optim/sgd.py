"""SGD with momentum, Nesterov momentum and L2 weight decay, as ``torch.optim.SGD`` computes it.

Per parameter, with ``wd`` the group's weight decay and ``m`` its momentum::

    g = grad + wd * p
    buf = m * buf + g                    (buf starts at zero, so the first step stores g)
    d = g + m * buf  if nesterov else buf
    p = p - lr * d
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from detfn.config import Config, check, check_non_negative, check_positive
from detfn.engine.optim.base import (
    Optimizer,
    OptState,
    Params,
    group_tensors,
    per_group_optimizer,
)
from detfn.engine.optim.groups import ParamGroup, ParamGroupsConfig, config_param_groups
from detfn.registry import register


@dataclass(frozen=True)
class SGDConfig(Config):
    """mmdetection's default optimizer: ``SGD(lr=0.02, momentum=0.9, weight_decay=1e-4)``.

    ``fused=True`` uses ``torch._fused_sgd_`` (one kernel; it may overwrite the grads it gets).
    """

    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 0.0001
    nesterov: bool = False
    fused: bool = False
    param_groups: ParamGroupsConfig = field(default_factory=ParamGroupsConfig)

    def __post_init__(self) -> None:
        check_positive(self, "lr")
        check_non_negative(self, "momentum", "weight_decay")
        check(self, "nesterov", not self.nesterov or self.momentum > 0, "needs momentum > 0")


def _update_group(group: ParamGroup, grads, params, bufs, values, nesterov, fused) -> None:
    """One group's in-place step with its ``values`` (lr, momentum, weight_decay)."""
    names, ps, gs, (bs,) = group_tensors(group, grads, params, bufs)
    if not names:
        return
    lr, momentum, wd = values["lr"], values["momentum"], values["weight_decay"]
    if fused:
        torch._fused_sgd_(
            ps, gs, bs, weight_decay=wd, momentum=momentum, lr=lr, dampening=0.0,
            nesterov=nesterov, maximize=False, is_first_step=False,
        )  # fmt: skip
        return
    if wd != 0:
        gs = torch._foreach_add(gs, ps, alpha=wd)
    if momentum != 0:
        torch._foreach_mul_(bs, momentum)
        torch._foreach_add_(bs, gs)
        gs = torch._foreach_add(gs, bs, alpha=momentum) if nesterov else bs
    torch._foreach_add_(ps, gs, alpha=-lr)


def sgd(groups: Sequence[ParamGroup], *, nesterov: bool = False, fused: bool = False) -> Optimizer:
    """SGD over ``groups``; lr, momentum and weight decay come per call from the train state."""

    def init(params: Params) -> OptState:
        return {"momentum_buffer": {n: torch.zeros_like(p) for n, p in params.items()}}

    def step_group(group, grads, params, state, values) -> None:
        _update_group(group, grads, params, state["momentum_buffer"], values, nesterov, fused)

    return per_group_optimizer(groups, init, step_group)


@register(SGDConfig)
def build_sgd(
    cfg: SGDConfig, *, params: Mapping[str, torch.Tensor], norm_names: Iterable[str] = ()
) -> Optimizer:
    """Group ``params`` by ``cfg.param_groups`` and build the SGD pair."""
    groups = config_param_groups(cfg, params, norm_names, momentum=cfg.momentum)
    return sgd(groups, nesterov=cfg.nesterov, fused=cfg.fused)
