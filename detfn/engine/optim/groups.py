"""Parameter groups: which parameters share an lr multiplier and a weight-decay multiplier.

mmcv's ``DefaultOptimizerConstructor`` rules for a parameter ``name``, first match wins:
``custom_keys`` (the longest pattern contained in the name, ties alphabetical) sets both
multipliers; else every parameter of a norm layer gets ``norm_decay_mult`` and a ``bias`` gets
``bias_lr_mult`` / ``bias_decay_mult``. Parameters with equal multipliers are merged into one
group (one ``torch._foreach_*`` call each); ``state.base`` / ``state.hyper`` hold one value per
group. "No decay on norms and biases" is ``ParamGroupsConfig(norm_decay_mult=0.0,
bias_decay_mult=0.0)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from detfn.config import Config, check, check_non_negative

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


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
    """mmcv's ``paramwise_cfg`` (defaults: every multiplier 1, i.e. a single group)."""

    bias_lr_mult: float = 1.0
    bias_decay_mult: float = 1.0
    norm_decay_mult: float = 1.0
    custom_keys: tuple[CustomKeyConfig, ...] = ()

    def __post_init__(self) -> None:
        check_non_negative(self, "bias_lr_mult", "bias_decay_mult", "norm_decay_mult")
        patterns = [k.pattern for k in self.custom_keys]
        dup = sorted({p for p in patterns if patterns.count(p) > 1})
        check(self, "custom_keys", not dup, f"has duplicate patterns {dup}")


class ParamGroup(NamedTuple):
    """One optimizer group: the parameter names and their effective hyperparameters.

    ``lr`` is the configured lr times the group's multiplier (it becomes ``state.base_lr[i]``);
    ``momentum`` is the initial momentum (SGD) or beta1 (AdamW).
    """

    names: tuple[str, ...]
    lr: float
    weight_decay: float
    momentum: float


def norm_param_names(module: nn.Module) -> frozenset[str]:
    """Names (as in ``module.named_parameters()``) of the parameters of norm layers."""
    names = set()
    for prefix, sub in module.named_modules():
        if isinstance(sub, _NORM_TYPES):
            for pname, _ in sub.named_parameters(recurse=False):
                names.add(f"{prefix}.{pname}" if prefix else pname)
    return frozenset(names)


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
    """Split parameter names into groups of equal multipliers, in first-appearance order.

    Args:
        params: the trainable parameters (or their names), in model order.
        cfg: the multiplier rules.
        lr, weight_decay, momentum: the optimizer's configured values.
        norm_names: names of norm-layer parameters (see :func:`norm_param_names`).
    """
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


def config_param_groups(
    cfg: Any,
    params: Mapping[str, torch.Tensor] | Iterable[str],
    norm_names: Iterable[str],
    *,
    momentum: float,
) -> tuple[ParamGroup, ...]:
    """:func:`make_param_groups` with an optimizer config's ``lr``, ``weight_decay`` and
    ``param_groups``; ``momentum`` is SGD's momentum or Adam's beta1."""
    return make_param_groups(
        params,
        cfg.param_groups,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        momentum=momentum,
        norm_names=norm_names,
    )
