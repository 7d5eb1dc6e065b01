"""Necks between backbone and heads. Importing this package registers ``FPNConfig``."""

from detfn.models.necks.fpn import FPN, FPNConfig

__all__ = ["FPN", "FPNConfig"]
