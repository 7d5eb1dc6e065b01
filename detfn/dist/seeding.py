"""Seeds of a run (mmdetection's ``init_random_seed`` + ``set_random_seed``).

With no seed given, rank 0 draws one and every rank receives it, so all ranks build the same
initial weights and log the same seed. ``deterministic`` turns on torch's deterministic
algorithms and cuDNN's deterministic mode (and turns its benchmark off), at some speed cost.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from detfn.dist.comm import broadcast_object, get_rank

__all__ = ["init_seed", "seed_all", "set_deterministic"]


def init_seed(seed: int | None = None) -> int:
    """``seed``, or one drawn by rank 0 from the OS's entropy and broadcast to every rank."""
    if seed is not None:
        return int(seed)
    drawn = int.from_bytes(os.urandom(4), "little") % 2**31 if get_rank() == 0 else None
    return int(broadcast_object(drawn))


def seed_all(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool = True, warn_only: bool = False) -> None:
    """Deterministic algorithms (an error on ops that have none; a warning with ``warn_only``),
    cuDNN deterministic, no cuDNN benchmark; ``CUBLAS_WORKSPACE_CONFIG`` as CUDA >= 10.2 needs
    for deterministic cuBLAS."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = False if enabled else torch.backends.cudnn.benchmark
