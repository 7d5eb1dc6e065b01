"""detfn: object detection for PyTorch in a functional style.

``import detfn`` registers every built-in config type with :mod:`detfn.registry`.
"""

from detfn import config, registry

__all__ = ["config", "registry"]
__version__ = "0.1.0"
