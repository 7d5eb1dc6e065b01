"""The environment a run ran in, for the log header and the checkpoint meta (mmcv's
``collect_env``): versions, devices, detfn's version and git commit, the world size."""

from __future__ import annotations

import functools
import json
import platform
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from detfn.dist.comm import get_world_size

__all__ = ["collect_env", "env_header", "git_commit"]

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


@functools.lru_cache(maxsize=8)
def git_commit(root: Path = _PACKAGE_ROOT) -> str | None:
    """The commit of a git checkout at ``root`` (short hash, ``+dirty`` when modified), or None
    for an installed wheel or a machine without git."""
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty else head


def collect_env(world_size: int | None = None) -> dict[str, Any]:
    """Versions and devices: Python, torch, torchvision, CUDA, cuDNN, GPU names, detfn's version
    and git commit, and the world size (default: the current process group's).

    Every value is a str, int, list of str or None, so the dict goes into JSON and checkpoints.
    """
    import torchvision

    import detfn

    cuda = torch.cuda.is_available()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda
        else [],
        "detfn": getattr(detfn, "__version__", None),
        "git_commit": git_commit(),
        "world_size": get_world_size() if world_size is None else world_size,
    }


def env_header(env: Mapping[str, Any], config_json: str | None, seed: int | None) -> str:
    """The text the log opens with: the environment, the seed, then the config as JSON."""
    width = max(len(k) for k in env) if env else 0
    lines = ["Environment:"]
    lines += [f"  {k:<{width}}: {v if v not in (None, []) else '-'}" for k, v in env.items()]
    lines.append(f"Seed: {seed}")
    if config_json is not None:
        lines.append("Config:")
        lines.append(json.dumps(json.loads(config_json), indent=2))
    return "\n".join(lines)
