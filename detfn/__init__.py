"""detfn: object detection for PyTorch in a functional style.

``import detfn`` registers every built-in config type with :mod:`detfn.registry`.
"""

from detfn import config, registry  # noqa: I001 - the foundation first
from detfn import data, engine, evaluation, models, ops, visualization
from detfn import apis

__all__ = [
    "apis",
    "config",
    "data",
    "engine",
    "evaluation",
    "models",
    "ops",
    "registry",
    "visualization",
]
__version__ = "0.1.0"
