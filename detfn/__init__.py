"""detfn: object detection for PyTorch in a functional style.

Subpackages load on first use (``detfn.models``, ``detfn.apis``, ...), so ``import detfn.engine``
does not pay for, or depend on, the models and the data pipeline. A config type is registered
with :mod:`detfn.registry` when the module defining it is imported.
"""

import importlib

_SUBPACKAGES = (
    "apis",
    "config",
    "data",
    "engine",
    "evaluation",
    "models",
    "ops",
    "registry",
    "visualization",
)
__all__ = list(_SUBPACKAGES)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"detfn.{name}")
    raise AttributeError(f"module 'detfn' has no attribute {name!r}")
