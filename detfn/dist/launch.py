"""Process-group launch: who this process is (rank, world size, local rank, master address) and
the ``torch.distributed`` process group built from it.

Three launchers, as mmdetection's ``--launcher``:

* ``"none"``: one process, no process group; every collective in :mod:`detfn.dist` is then the
  identity.
* ``"pytorch"``: ``torchrun`` (or ``torch.distributed.launch``) set ``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` for every process, on one node or across
  ``--nnodes``.
* ``"slurm"``: ``srun`` started one task per GPU; the same values come from ``SLURM_PROCID``,
  ``SLURM_NTASKS``, ``SLURM_LOCALID`` and the first host of ``SLURM_NODELIST`` (``MASTER_PORT``
  defaults to 29500, the torchrun default).

The backend is NCCL when the process drives a CUDA device and gloo on the CPU. The context
manager :func:`distributed` destroys the group on exit, also after an error, so a failed run
does not leave NCCL communicators behind.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist

__all__ = [
    "DEFAULT_MASTER_PORT",
    "DEFAULT_TIMEOUT_S",
    "LAUNCHERS",
    "DistEnv",
    "Launcher",
    "choose_backend",
    "default_launcher",
    "distributed",
    "env_from_pytorch",
    "env_from_slurm",
    "first_host",
    "pop_launcher",
    "resolve_env",
]

Launcher = Literal["none", "pytorch", "slurm"]
LAUNCHERS: tuple[str, ...] = ("none", "pytorch", "slurm")
DEFAULT_MASTER_PORT = 29500  # torchrun's default
DEFAULT_TIMEOUT_S = 1800.0  # torch's default process-group timeout (30 min)


@dataclass(frozen=True)
class DistEnv:
    """Who this process is in the job.

    Attributes:
        rank: global rank in [0, world_size).
        world_size: processes in the job (GPUs, or CPU workers).
        local_rank: rank on this node; the CUDA device index.
        master_addr / master_port: rank 0's rendezvous address.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_MASTER_PORT

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise ValueError(f"DistEnv.world_size must be >= 1, got {self.world_size}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"DistEnv.rank must be in [0, {self.world_size}), got {self.rank}")
        if self.local_rank < 0:
            raise ValueError(f"DistEnv.local_rank must be >= 0, got {self.local_rank}")
        if not 0 < self.master_port < 65536:
            raise ValueError(f"DistEnv.master_port must be a TCP port, got {self.master_port}")

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs, metrics and checkpoints."""
        return self.rank == 0


def _int(env: Mapping[str, str], name: str, launcher: str, default: int | None = None) -> int:
    """``env[name]`` as an int, with a one-line error naming the variable and the launcher."""
    raw = env.get(name)
    if raw is None or raw == "":
        if default is not None:
            return default
        raise ValueError(f"--launcher {launcher}: environment variable {name} is not set")
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"--launcher {launcher}: {name}={raw!r} is not an integer") from None


def env_from_pytorch(env: Mapping[str, str]) -> DistEnv:
    """The values ``torchrun`` exports (``LOCAL_RANK`` defaults to ``RANK``, for one node)."""
    rank = _int(env, "RANK", "pytorch")
    return DistEnv(
        rank=rank,
        world_size=_int(env, "WORLD_SIZE", "pytorch"),
        local_rank=_int(env, "LOCAL_RANK", "pytorch", default=rank),
        master_addr=env.get("MASTER_ADDR") or "127.0.0.1",
        master_port=_int(env, "MASTER_PORT", "pytorch", default=DEFAULT_MASTER_PORT),
    )


def _first_item(nodelist: str) -> str:
    """The first comma-separated item outside brackets: ``"a[1-2],b"`` -> ``"a[1-2]"``."""
    depth = 0
    for i, char in enumerate(nodelist):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            return nodelist[:i]
    return nodelist


def _parse_first_host(nodelist: str) -> str:
    """The first host of a Slurm host list without Slurm's tools: every bracket group
    ``[01-04,07]`` is replaced by its first number, e.g. ``"gpu[03-05]-ib,cpu1"`` ->
    ``"gpu03-ib"``, ``"node7,node9"`` -> ``"node7"``."""
    first = _first_item(nodelist.strip())
    if not first:
        raise ValueError("--launcher slurm: SLURM_NODELIST is empty")
    if first.count("[") != first.count("]"):
        raise ValueError(f"--launcher slurm: cannot parse SLURM_NODELIST={nodelist!r}")
    return re.sub(r"\[([^\],\-]+)[^\]]*\]", r"\1", first)


def first_host(nodelist: str, *, use_scontrol: bool = True) -> str:
    """The first host of ``SLURM_NODELIST``: ``scontrol show hostnames`` when Slurm's tools are
    installed (it understands every form), else :func:`_parse_first_host`."""
    if use_scontrol and shutil.which("scontrol"):
        done = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        hosts = done.stdout.split()
        if done.returncode == 0 and hosts:
            return hosts[0]
    return _parse_first_host(nodelist)


def env_from_slurm(env: Mapping[str, str], *, use_scontrol: bool = True) -> DistEnv:
    """mmcv's ``_init_dist_slurm`` values: rank, world and local rank from ``SLURM_*``; the
    master is the node list's first host unless ``MASTER_ADDR`` is set; ``MASTER_PORT`` is
    kept when set, else 29500."""
    nodelist = env.get("SLURM_NODELIST") or env.get("SLURM_JOB_NODELIST")
    if not nodelist and not env.get("MASTER_ADDR"):
        raise ValueError("--launcher slurm: SLURM_NODELIST is not set (run the job with srun)")
    addr = env.get("MASTER_ADDR") or first_host(nodelist or "", use_scontrol=use_scontrol)
    return DistEnv(
        rank=_int(env, "SLURM_PROCID", "slurm"),
        world_size=_int(env, "SLURM_NTASKS", "slurm"),
        local_rank=_int(env, "SLURM_LOCALID", "slurm"),
        master_addr=addr,
        master_port=_int(env, "MASTER_PORT", "slurm", default=DEFAULT_MASTER_PORT),
    )


def resolve_env(launcher: str, env: Mapping[str, str] | None = None) -> DistEnv:
    """The :class:`DistEnv` of ``launcher`` read from ``env`` (default ``os.environ``)."""
    env = os.environ if env is None else env
    if launcher == "none":
        return DistEnv()
    if launcher == "pytorch":
        return env_from_pytorch(env)
    if launcher == "slurm":
        return env_from_slurm(env)
    raise ValueError(f"--launcher must be one of {LAUNCHERS}, got {launcher!r}")


def default_launcher(env: Mapping[str, str] | None = None) -> str:
    """``"pytorch"`` when ``torchrun`` started this process with more than one process (its
    ``RANK`` and ``WORLD_SIZE`` are set), else ``"none"``; Slurm is never guessed, since every
    process of a Slurm job sees ``SLURM_*`` variables whether it is meant to join a group or not.
    """
    env = os.environ if env is None else env
    try:
        world = int(env.get("WORLD_SIZE", "1"))
    except ValueError:
        world = 1
    return "pytorch" if "RANK" in env and world > 1 else "none"


def pop_launcher(argv: Sequence[str], env: Mapping[str, str] | None = None) -> tuple[str, list[str]]:
    """``--launcher NAME`` (or ``--launcher=NAME``) taken out of ``argv``; without it, the
    :func:`default_launcher`. Entry points call this before their own parser.

    Raises:
        SystemExit: an unknown launcher name or a missing value, as one line.
    """
    rest: list[str] = []
    name: str | None = None
    items = list(argv)
    i = 0
    while i < len(items):
        if items[i] == "--launcher":
            if i + 1 >= len(items):
                raise SystemExit(f"--launcher needs a value: one of {LAUNCHERS}")
            name, i = items[i + 1], i + 2
            continue
        if items[i].startswith("--launcher="):
            name = items[i].split("=", 1)[1]
        else:
            rest.append(items[i])
        i += 1
    if name is None:
        name = default_launcher(env)
    if name not in LAUNCHERS:
        raise SystemExit(f"--launcher must be one of {LAUNCHERS}, got {name!r}")
    return name, rest


def choose_backend(device: torch.device | str) -> str:
    """NCCL for CUDA devices, gloo for the CPU."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def _export(env: DistEnv) -> None:
    """Set the variables ``init_process_group(init_method="env://")`` reads."""
    os.environ["MASTER_ADDR"] = env.master_addr
    os.environ["MASTER_PORT"] = str(env.master_port)
    os.environ["RANK"] = str(env.rank)
    os.environ["WORLD_SIZE"] = str(env.world_size)
    os.environ["LOCAL_RANK"] = str(env.local_rank)


@contextlib.contextmanager
def distributed(
    launcher: str = "pytorch",
    *,
    device: torch.device | str = "cpu",
    timeout_s: float = DEFAULT_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
) -> Iterator[DistEnv]:
    """Join the job's process group for the ``with`` block and leave it afterwards.

    With ``launcher="none"`` (or a world of 1 process) no group is created. On CUDA, the
    process's device is ``cuda:<local_rank>``; the caller should use the device it yields via
    ``torch.device("cuda", env.local_rank)``. The group is destroyed on exit, also when the
    block raised.

    Yields:
        the :class:`DistEnv` of this process.
    """
    info = resolve_env(launcher, env)
    if info.world_size == 1 or dist.is_initialized():
        yield info
        return
    backend = choose_backend(device)
    if backend == "nccl":
        torch.cuda.set_device(info.local_rank)
    _export(info)
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=info.rank,
        world_size=info.world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    try:
        yield info
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
