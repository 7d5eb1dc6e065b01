"""Optimizers as optax-style ``init`` / ``update`` pairs over named tensors, with mmcv's
parameter groups.

``update(grads, opt_state, params, hyper) -> (params, opt_state)`` *donates* its inputs: torch's
functional ``sgd`` / ``adamw`` (foreach or fused kernels) update params and state in place and
may overwrite the grads, as torch's optimizers overwrite ``p.grad`` (a pure out-of-place update
was 2.4x slower on CPU, functional-pytorch.md §2). ``hyper`` (``TrainState.hyper``) holds one
value per group for each scheduled name; Adam's beta1 is called ``momentum``, so momentum
schedules drive it as mmcv's momentum hooks drive ``betas[0]``.

Groups follow mmcv's ``DefaultOptimizerConstructor``, first match wins: ``custom_keys`` (longest
pattern contained in the name, ties alphabetical) sets both multipliers; else a norm layer's
parameter gets ``norm_decay_mult`` and a ``bias`` ``bias_lr_mult`` / ``bias_decay_mult``.
Parameters with equal multipliers share a group (one kernel call each).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch.optim.adamw import adamw as torch_adamw
from torch.optim.sgd import sgd as torch_sgd

from detfn.config import Config, check, check_non_negative, check_positive
from detfn.registry import register

Params = Mapping[str, torch.Tensor]
OptState = dict[str, Any]
Hyper = Mapping[str, Sequence[float]]
HYPERPARAMETERS = ("lr", "momentum", "weight_decay")


@dataclass(frozen=True)
class CustomKeyConfig(Config):
    """Multipliers for every parameter whose name contains ``pattern`` (mmcv ``custom_keys``)."""

    pattern: str = ""
    lr_mult: float = 1.0
    decay_mult: float = 1.0

    def __post_init__(self) -> None:
        check(self, "pattern", bool(self.pattern), "must be a non-empty substring of names")
        check_non_negative(self, "lr_mult", "decay_mult")


@dataclass(frozen=True)
class ParamGroupsConfig(Config):
    """mmcv's ``paramwise_cfg`` (defaults: every multiplier 1, i.e. a single group). "No decay
    on norms and biases" is ``ParamGroupsConfig(norm_decay_mult=0.0, bias_decay_mult=0.0)``."""

    bias_lr_mult: float = 1.0
    bias_decay_mult: float = 1.0
    norm_decay_mult: float = 1.0
    custom_keys: tuple[CustomKeyConfig, ...] = ()

    def __post_init__(self) -> None:
        check_non_negative(self, "bias_lr_mult", "bias_decay_mult", "norm_decay_mult")
        patterns = [k.pattern for k in self.custom_keys]
        dup = sorted({p for p in patterns if patterns.count(p) > 1})
        check(self, "custom_keys", not dup, f"has duplicate patterns {dup}")


@dataclass(frozen=True)
class SGDConfig(Config):
    """mmdetection's default ``SGD(lr=0.02, momentum=0.9, weight_decay=1e-4)``; ``fused=True``
    uses torch's fused kernel."""

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


@dataclass(frozen=True)
class AdamWConfig(Config):
    """``torch.optim.AdamW`` defaults. ``fused=True`` uses torch's fused kernel."""

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


OptimizerConfig = SGDConfig | AdamWConfig


class ParamGroup(NamedTuple):
    """Names and configured values of a group (multipliers applied; momentum: AdamW's beta1)."""

    names: tuple[str, ...]
    lr: float
    weight_decay: float
    momentum: float


class Optimizer(NamedTuple):
    """``init(params) -> opt_state`` (dicts of tensors) and ``update(grads, opt_state, params,
    hyper)``; parameters absent from ``grads`` are skipped, as torch skips ``p.grad is None``."""

    groups: tuple[ParamGroup, ...]
    init: Callable[[Params], OptState]
    update: Callable[[Params, OptState, Params, Hyper], tuple[Params, OptState]]


def _multipliers(name: str, cfg: ParamGroupsConfig, norms: frozenset[str]) -> tuple[float, float]:
    """(lr_mult, decay_mult) of one parameter by mmcv's rules."""
    keys = sorted(sorted(cfg.custom_keys, key=lambda k: k.pattern), key=lambda k: -len(k.pattern))
    for key in keys:
        if key.pattern in name:
            return key.lr_mult, key.decay_mult
    if name in norms:
        return 1.0, cfg.norm_decay_mult
    if name.rsplit(".", 1)[-1] == "bias":
        return cfg.bias_lr_mult, cfg.bias_decay_mult
    return 1.0, 1.0


def make_param_groups(
    params: Mapping[str, torch.Tensor] | Iterable[str],
    cfg: ParamGroupsConfig,
    *,
    lr: float,
    weight_decay: float,
    momentum: float,
    norm_names: Iterable[str] = (),
) -> tuple[ParamGroup, ...]:
    """Parameter names (model order) in groups of equal multipliers, in first-appearance order;
    ``norm_names`` from :func:`detfn.models.functional.norm_param_names`."""
    names = list(params.keys() if isinstance(params, Mapping) else params)
    if not names:
        raise ValueError("make_param_groups: there are no trainable parameters to optimize")
    norms = frozenset(norm_names)
    by_mult: dict[tuple[float, float], list[str]] = {}
    for name in names:
        by_mult.setdefault(_multipliers(name, cfg, norms), []).append(name)
    return tuple(
        ParamGroup(tuple(members), lr * lr_mult, weight_decay * decay_mult, momentum)
        for (lr_mult, decay_mult), members in by_mult.items()
    )


def initial_hyperparams(groups: Sequence[ParamGroup]) -> dict[str, tuple[float, ...]]:
    """The configured value of every hyperparameter per group: ``TrainState.base``."""
    return {name: tuple(getattr(g, name) for g in groups) for name in HYPERPARAMETERS}


def per_group_optimizer(
    cfg: Any, params: Params, norm_names: Iterable[str], momentum: float, init, step: Callable
) -> Optimizer:
    """The :class:`Optimizer` over ``cfg.param_groups`` whose ``update`` runs ``step(params,
    grads, {state slot: tensors}, {name: value})`` on each group's tensors with a gradient."""
    groups = make_param_groups(params, cfg.param_groups, lr=cfg.lr, norm_names=norm_names,
                               weight_decay=cfg.weight_decay, momentum=momentum)  # fmt: skip

    def update(grads: Params, state: OptState, params: Params, hyper: Hyper):
        for name, given in hyper.items():
            known = HYPERPARAMETERS
            if name not in known:
                raise ValueError(f"optimizer has no hyperparameter {name!r}; it has {known}")
            if len(given) != len(groups):
                got = f"{len(groups)} parameter groups but got {len(given)} {name} values"
                raise ValueError(f"optimizer has {got}; state.hyper[{name!r}] needs one per group")
        for i, group in enumerate(groups):
            # the scheduled value of each name, else the group's configured one
            values = {k: hyper[k][i] if k in hyper else getattr(group, k) for k in HYPERPARAMETERS}
            names = [n for n in group.names if n in grads]
            missing = [n for n in names if n not in params]
            if missing:
                raise KeyError(f"optimizer: parameters {missing[:3]} have gradients but no params")
            if names:
                slots = {k: [slot[n] for n in names] for k, slot in state.items()}
                step([params[n] for n in names], [grads[n] for n in names], slots, values)
        return params, state

    return Optimizer(groups, init, update)


@register(SGDConfig)
def build_sgd(cfg: SGDConfig, *, params: Params, norm_names: Iterable[str] = ()) -> Optimizer:
    """``torch.optim.SGD``'s update (momentum buffers start at zero, so the first step stores
    the gradient, as torch does) over ``cfg.param_groups``."""

    def init(params: Params) -> OptState:
        return {"momentum_buffer": {n: torch.zeros_like(p) for n, p in params.items()}}

    def step(ps, gs, slots, values) -> None:
        torch_sgd(
            ps, gs, slots["momentum_buffer"], foreach=not cfg.fused, fused=cfg.fused,
            lr=values["lr"], momentum=values["momentum"], weight_decay=values["weight_decay"],
            dampening=0.0, nesterov=cfg.nesterov, maximize=False,
        )  # fmt: skip

    return per_group_optimizer(cfg, params, norm_names, cfg.momentum, init, step)


@register(AdamWConfig)
def build_adamw(cfg: AdamWConfig, *, params: Params, norm_names: Iterable[str] = ()) -> Optimizer:
    """``torch.optim.AdamW``'s update over ``cfg.param_groups``; beta1 is ``momentum``."""

    def init(params: Params) -> OptState:
        # 0-d float step counts, as torch keeps them (on the device for the fused kernel)
        steps = {
            n: torch.zeros((), device=p.device if cfg.fused else "cpu") for n, p in params.items()
        }
        zeros = lambda: {n: torch.zeros_like(p) for n, p in params.items()}  # noqa: E731
        return {"step": steps, "exp_avg": zeros(), "exp_avg_sq": zeros()}

    def step(ps, gs, slots, values) -> None:
        torch_adamw(
            ps, gs, slots["exp_avg"], slots["exp_avg_sq"], [], slots["step"],
            foreach=not cfg.fused, fused=cfg.fused, amsgrad=False, beta1=values["momentum"],
            beta2=cfg.betas[1], lr=values["lr"], weight_decay=values["weight_decay"], eps=cfg.eps,
            maximize=False,
        )  # fmt: skip

    return per_group_optimizer(cfg, params, norm_names, cfg.betas[0], init, step)
