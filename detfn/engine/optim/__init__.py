"""Optimizers as optax-style ``init`` / ``update`` pairs over named tensors (see :mod:`.base`)."""

from detfn.engine.optim.adamw import AdamWConfig, adamw, build_adamw
from detfn.engine.optim.base import Grads, Optimizer, OptState, Params, initial_hyperparams
from detfn.engine.optim.groups import (
    CustomKeyConfig,
    ParamGroup,
    ParamGroupsConfig,
    make_param_groups,
    norm_param_names,
)
from detfn.engine.optim.sgd import SGDConfig, build_sgd, sgd

OptimizerConfig = SGDConfig | AdamWConfig
"""Any optimizer config: use it as a field type."""

__all__ = [
    "AdamWConfig",
    "CustomKeyConfig",
    "Grads",
    "OptState",
    "Optimizer",
    "OptimizerConfig",
    "ParamGroup",
    "ParamGroupsConfig",
    "Params",
    "SGDConfig",
    "adamw",
    "build_adamw",
    "build_sgd",
    "initial_hyperparams",
    "make_param_groups",
    "norm_param_names",
    "sgd",
]
