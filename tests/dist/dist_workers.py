"""Code the 2-process tests run in every spawned rank (not a test module).

Each worker joins a gloo group through :func:`detfn.dist.launch.distributed` with the
environment ``torchrun`` would set, runs, and leaves its result (or its error message) in a
file of the test's temporary directory.
"""

from __future__ import annotations

import json
import socket
import traceback
from pathlib import Path

import torch
import torch.multiprocessing as mp

from detfn.dist.launch import distributed

# fork: the ranks inherit the imported torch and detfn (importing them twice more costs more
# than the runs on a small shared CPU); the parent never creates a process group or touches CUDA
START_METHOD = "fork"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_env(rank: int, world: int, port: int) -> dict[str, str]:
    return {
        "RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_RANK": str(rank),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }


def _entry(rank: int, fn, world: int, port: int, out: str, kwargs: dict) -> None:
    torch.set_num_threads(1)
    result_file = Path(out) / f"rank{rank}.json"
    try:
        if kwargs.pop("bare", False):  # the worker joins the group itself
            result = fn(torchrun_env(rank, world, port), Path(out), **kwargs)
            result_file.write_text(json.dumps({"ok": True, "result": result}))
            return
        with distributed("pytorch", env=torchrun_env(rank, world, port), timeout_s=30) as env:
            result = fn(env, Path(out), **kwargs)
        result_file.write_text(json.dumps({"ok": True, "result": result}))
    except BaseException as error:
        result_file.write_text(json.dumps(error_record(error)))


def error_record(error: BaseException) -> dict:
    return {
        "ok": False,
        "type": type(error).__name__,
        "message": str(error),
        "trace": traceback.format_exc(),
    }


def run_scenarios(env, out: Path, *, scenarios: dict[str, tuple]) -> dict[str, dict]:
    """``fn(env, out / name, **kwargs)`` for every ``name: (fn, kwargs)`` in one process group
    (one spawn for several runs: starting two Python processes costs more than the runs); each
    scenario's result or error record."""
    records = {}
    for name, (fn, kwargs) in scenarios.items():
        (out / name).mkdir(exist_ok=True)
        try:
            records[name] = {"ok": True, "result": fn(env, out / name, **kwargs)}
        except Exception as error:
            records[name] = error_record(error)
    return records


def run_ranks(worker, out: Path, world: int = 2, **kwargs) -> list[dict]:
    """Run ``worker(env, out, **kwargs)`` on ``world`` spawned gloo ranks; each rank's record."""
    port = free_port()
    mp.start_processes(
        _entry,
        args=(worker, world, port, str(out), kwargs),
        nprocs=world,
        start_method=START_METHOD,
    )
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]


def group_after_error(env: dict[str, str], out: Path) -> dict:
    """Join through :func:`distributed`, raise inside; report whether the group outlived it."""
    del out
    import torch.distributed as dist

    inside = None
    try:
        with distributed("pytorch", env=env, timeout_s=30) as info:
            inside = (dist.is_initialized(), dist.get_world_size(), info.rank)
            raise RuntimeError("boom")
    except RuntimeError as error:
        message = str(error)
    return {"inside": inside, "after": dist.is_initialized(), "message": message}
