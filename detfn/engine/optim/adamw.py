"""AdamW (decoupled weight decay), as ``torch.optim.AdamW`` computes it.

Per parameter at step ``t`` (counted per parameter, from 1), with ``beta1`` the group's momentum
(momentum schedules change it, as mmcv's momentum hooks change ``betas[0]``)::

    p = p * (1 - lr * wd)
    m = lerp(m, g, 1 - beta1);   v = beta2 * v + (1 - beta2) * g * g
    p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)
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
class AdamWConfig(Config):
    """``torch.optim.AdamW`` defaults. ``fused=True`` uses ``torch._fused_adamw_``."""

    lr: float = 0.001
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    fused: bool = False
    param_groups: ParamGroupsConfig = field(default_factory=ParamGroupsConfig)

    def __post_init__(self) -> None:
        check_positive(self, "lr", "eps")
        check_non_negative(self, "weight_decay")
        ok = all(0.0 <= b < 1.0 for b in self.betas)
        check(self, "betas", ok, f"must be two values in [0, 1), got {self.betas!r}")


def _update_group(group, grads, params, state, values, beta2, eps, fused) -> None:
    """One group's in-place step."""
    names, ps, gs, (ms, vs, steps) = group_tensors(
        group, grads, params, state["exp_avg"], state["exp_avg_sq"], state["step"]
    )
    if not names:
        return
    lr, beta1, wd = values["lr"], values["momentum"], values["weight_decay"]
    torch._foreach_add_(steps, 1.0)
    if fused:
        torch._fused_adamw_(
            ps, gs, ms, vs, [], steps, lr=lr, beta1=beta1, beta2=beta2, weight_decay=wd,
            eps=eps, amsgrad=False, maximize=False,
        )  # fmt: skip
        return
    if wd != 0:
        torch._foreach_mul_(ps, 1.0 - lr * wd)
    torch._foreach_lerp_(ms, gs, 1.0 - beta1)
    torch._foreach_mul_(vs, beta2)
    torch._foreach_addcmul_(vs, gs, gs, 1.0 - beta2)
    counts = [s.item() for s in steps]
    step_sizes = [-lr / (1.0 - beta1**t) for t in counts]
    denom = torch._foreach_sqrt(vs)
    torch._foreach_div_(denom, [(1.0 - beta2**t) ** 0.5 for t in counts])
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(ps, ms, denom, step_sizes)


def adamw(
    groups: Sequence[ParamGroup], *, beta2: float = 0.999, eps: float = 1e-8, fused: bool = False
) -> Optimizer:
    """AdamW over ``groups``; lr and beta1 (``momentum``) come per call from the train state."""

    def init(params: Params) -> OptState:
        # Step counts are 0-d float tensors (as torch keeps them) so the fused kernel can read them.
        return {
            "step": {
                n: torch.zeros((), device=p.device if fused else "cpu") for n, p in params.items()
            },
            "exp_avg": {n: torch.zeros_like(p) for n, p in params.items()},
            "exp_avg_sq": {n: torch.zeros_like(p) for n, p in params.items()},
        }

    def step_group(group, grads, params, state, values) -> None:
        _update_group(group, grads, params, state, values, beta2, eps, fused)

    return per_group_optimizer(groups, init, step_group)


@register(AdamWConfig)
def build_adamw(
    cfg: AdamWConfig, *, params: Mapping[str, torch.Tensor], norm_names: Iterable[str] = ()
) -> Optimizer:
    """Group ``params`` by ``cfg.param_groups`` and build the AdamW pair."""
    groups = config_param_groups(cfg, params, norm_names, momentum=cfg.betas[0])
    return adamw(groups, beta2=cfg.betas[1], eps=cfg.eps, fused=cfg.fused)
