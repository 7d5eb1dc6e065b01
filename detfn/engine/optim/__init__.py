"""Optimizers as optax-style ``init`` / ``update`` pairs over named tensors (see :mod:`.base`)."""

from detfn.engine.optim.adamw import AdamWConfig
from detfn.engine.optim.base import Optimizer, initial_hyperparams
from detfn.engine.optim.groups import (
    CustomKeyConfig,
    ParamGroupsConfig,
    make_param_groups,
    norm_param_names,
)
from detfn.engine.optim.sgd import SGDConfig

OptimizerConfig = SGDConfig | AdamWConfig
"""Any optimizer config: use it as a field type."""

__all__ = ["AdamWConfig", "CustomKeyConfig", "OptimizerConfig", "ParamGroupsConfig", "SGDConfig"]
__all__ += ["Optimizer", "initial_hyperparams", "make_param_groups", "norm_param_names"]
