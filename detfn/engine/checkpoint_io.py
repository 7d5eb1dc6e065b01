"""Atomic checkpoint files of a whole :class:`TrainState`, and safe loading.

A checkpoint is a ``torch.save``d dict of plain values (tensors, numbers, str, bytes, None and
dicts / lists / tuples of them) that ``torch.load(weights_only=True)`` reads without running code:
``{"format": "detfn-checkpoint", "format_version", "meta": {"detfn_version", "time", "config",
"config_type", "loader", "epoch", "iter", ...}, "state": {every TrainState field}}``. Dataclass
and NamedTuple values are written as dicts and rebuilt from a fresh state (``like``) on resume.
Writes go to a temporary file that is fsynced and renamed over the target, so a crash mid-write
leaves the previous file and the ``latest.json`` pointer untouched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import importlib.metadata
import json
import numbers
import os
import pathlib
import pickle
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

import torch

from detfn.config import file_mode
from detfn.engine.events import Stage
from detfn.engine.state import TrainState

FORMAT = "detfn-checkpoint"
FORMAT_VERSION = 1
LATEST_FILE = "latest.json"
LATEST_LINK = "latest.pth"  # mmcv's name; a convenience symlink next to the JSON pointer

_LEAVES = (torch.Tensor, int, float, bool, str, bytes, complex, type(None), torch.dtype, torch.Size)
# Counters and schedule values restored from the checkpoint on resume; the run's length
# (max_epochs, max_iters, iters_per_epoch) and the base values come from the new run's config.
_RESUMED_FIELDS = ("epoch", "iter", "inner_iter", "hyper")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, unsafe, or does not fit the model."""


def to_plain(value: Any, where: str = "state") -> Any:
    """``value`` as plain data (dataclasses, NamedTuples, Mappings -> dicts; enums, numpy scalars
    -> builtins); anything else is a :class:`CheckpointError` naming its path (state.hooks.x)."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, enum.Enum):
        return to_plain(value.value, where)
    # exact builtins: a numpy scalar or a str enum would be refused by the weights-only loader
    for abstract, kind in (
        (bool, bool),
        (numbers.Integral, int),
        (numbers.Real, float),
        (str, str),
    ):
        if isinstance(value, abstract):
            return kind(value)
    if isinstance(value, _LEAVES):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_plain(getattr(value, f.name), f"{where}.{f.name}")
            for f in dataclasses.fields(value)
        }
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {k: to_plain(v, f"{where}.{k}") for k, v in zip(value._fields, value)}
    if isinstance(value, Mapping):
        return {_plain_key(k, where): to_plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [to_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if isinstance(value, tuple) else items
    raise CheckpointError(
        f"{where} holds a {type(value).__qualname__}, which a weights-only checkpoint cannot "
        "store; keep only tensors, numbers, str and dicts/lists/tuples of them in the state"
    )


def _plain_key(key: Any, where: str) -> Any:
    if isinstance(key, (str, int)):
        return key
    raise CheckpointError(f"{where} has a key {key!r} of type {type(key).__name__}; use str or int")


def _like(template: Any, value: Any, device: torch.device | None) -> Any:
    """Rebuild ``value`` (plain) with the types and tensor devices of ``template``."""
    if isinstance(value, torch.Tensor):
        if isinstance(template, torch.Tensor):
            return value.to(template.device)
        return value if device is None else value.to(device)
    if dataclasses.is_dataclass(template) and isinstance(value, Mapping):
        fields = {f.name: f for f in dataclasses.fields(template)}
        new = {k: _like(getattr(template, k), v, device) for k, v in value.items() if k in fields}
        return dataclasses.replace(template, **{k: v for k, v in new.items() if fields[k].init})
    if isinstance(template, tuple) and hasattr(template, "_fields") and isinstance(value, Mapping):
        fields = [k for k in template._fields if k in value]
        return type(template)(**{k: _like(getattr(template, k), value[k], device) for k in fields})
    if isinstance(value, Mapping):
        sub = template if isinstance(template, Mapping) else {}
        return {k: _like(sub.get(k), v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        subs = list(template) if isinstance(template, (list, tuple)) else []
        items = [_like(subs[i] if i < len(subs) else None, v, device) for i, v in enumerate(value)]
        return tuple(items) if isinstance(value, tuple) else items
    return value


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[IO[bytes]], None], size: int | None = None
) -> pathlib.Path:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync it, rename it to ``path``
    (mode 0644 under umask 022, as ``open`` would create it).

    On any exception the temporary file is removed and ``path`` is left as it was; a full disk
    is one :class:`CheckpointError` line naming the directory and the bytes needed (``size``).
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, file_mode())
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        pathlib.Path(tmp).unlink(missing_ok=True)
        if _disk_full(error):
            free = shutil.disk_usage(path.parent).free
            need = f"about {size} bytes" if size else "more space"
            raise CheckpointError(
                f"{path.parent}: no space left on the device for {path.name}: it needs {need}, "
                f"{free} bytes are free"
            ) from None
        raise
    _fsync_dir(path.parent)
    return path


def _disk_full(error: BaseException) -> bool:
    """ENOSPC, also as torch's zip writer reports it ("file write failed"), or in its cause."""
    while error is not None:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if isinstance(error, RuntimeError) and "file write failed" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _tensor_bytes(value: Any) -> int:
    """Bytes of the tensors in a plain value (what a checkpoint of it needs, roughly)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, Mapping):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def _fsync_dir(directory: pathlib.Path) -> None:
    """Make the rename durable; not every platform can open a directory, which is harmless."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some file systems cannot fsync a directory
            os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    path: str | os.PathLike[str],
    state: TrainState,
    *,
    meta: Mapping[str, Any] | None = None,
    save_optimizer: bool = True,
) -> pathlib.Path:
    """Write ``state`` and ``meta`` (config, loader position; the version, time and counters are
    added) to ``path`` atomically. Without the optimizer, a resume restarts it fresh."""
    fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    if not save_optimizer:
        fields["opt_state"] = None
    plain_state = {k: to_plain(v, f"state.{k}") for k, v in fields.items()}
    info = {
        "detfn_version": _version(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "epoch": state.epoch,
        "iter": state.iter,
        **to_plain(dict(meta or {}), "meta"),
    }
    ckpt = {"format": FORMAT, "format_version": FORMAT_VERSION, "meta": info, "state": plain_state}
    return atomic_write(path, lambda f: torch.save(ckpt, f), _tensor_bytes(plain_state))


def _version() -> str:
    """The installed detfn version, without importing the package (which loads everything)."""
    try:
        return importlib.metadata.version("detfn")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def write_latest(directory: str | os.PathLike[str], checkpoint: str | os.PathLike[str]) -> None:
    """Point ``<directory>/latest.json`` (atomically; the authority) and, where the file system
    has symlinks, the ``latest.pth`` symlink at ``checkpoint``."""
    directory = pathlib.Path(directory)
    name = os.path.relpath(checkpoint, directory)
    text = json.dumps({"checkpoint": name}) + "\n"
    atomic_write(directory / LATEST_FILE, lambda f: f.write(text.encode()))
    link = directory / LATEST_LINK
    tmp = directory / f".{LATEST_LINK}.{os.getpid()}.tmp"
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(name, tmp)
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)


def find_latest(directory: str | os.PathLike[str]) -> pathlib.Path | None:
    """The checkpoint ``latest.json`` in ``directory`` points at, or None if there is none."""
    directory = pathlib.Path(directory)
    pointer = directory / LATEST_FILE
    if pointer.is_file():
        try:
            name = json.loads(pointer.read_text())["checkpoint"]
        except (ValueError, KeyError, TypeError):
            raise CheckpointError(f"{pointer}: not a valid latest-checkpoint pointer") from None
        target = directory / name
        if not target.is_file():
            raise CheckpointError(f"{pointer}: points at {target}, which does not exist")
        return target
    link = directory / LATEST_LINK
    return link.resolve() if link.is_file() else None


def advance_counters(state: TrainState, stage: Stage | str) -> TrainState:
    """The counters as the loop will have them once the event of ``stage`` is done: a checkpoint
    of ``after_train_iter`` resumes after that iteration (mmcv stores ``iter + 1`` likewise)."""
    stage = Stage(stage)
    if stage is Stage.AFTER_TRAIN_ITER:
        return dataclasses.replace(state, iter=state.iter + 1, inner_iter=state.inner_iter + 1)
    if stage is Stage.AFTER_TRAIN_EPOCH:
        return dataclasses.replace(state, epoch=state.epoch + 1, inner_iter=0)
    return state


_UNSAFE = re.compile(r"GLOBAL (\S+)|Unsupported class (\S+)")


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The stored dict (``torch.load(weights_only=True)``, on the CPU; a detfn checkpoint gets its
    ``"path"``). Missing, corrupt or code-carrying files are one :class:`CheckpointError` line."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = _UNSAFE.search(str(error))
        if found:
            culprit = found.group(1) or found.group(2)
            raise CheckpointError(
                f"{path}: not a weights-only checkpoint (it carries pickled code: {culprit}); "
                "refusing to load it"
            ) from None
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint (its pickle data is unreadable)"
        ) from None
    except MemoryError:
        raise
    except Exception as error:  # zip, EOF, OS and parse errors all mean an unreadable file
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint "
            f"({_first_line(error) or type(error).__name__})"
        ) from None
    if isinstance(ckpt, dict) and ckpt.get("format") == FORMAT:
        ckpt["path"] = str(path)
    return ckpt


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else ""


def state_from_checkpoint(ckpt: Mapping[str, Any], like: TrainState) -> TrainState:
    """``like`` (the new run's fresh state) with the stored weights, optimizer state, counters,
    current hyperparameters, rng and hook states, on ``like``'s devices; the run's length and base
    values stay the new config's. Other names or shapes are a :class:`CheckpointError`."""
    where = ckpt.get("path", "<checkpoint>") if isinstance(ckpt, Mapping) else "<checkpoint>"
    if not isinstance(ckpt, Mapping) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{where}: not a detfn training checkpoint, cannot resume from it; "
            "use load_weights (load_from) for weights only"
        )
    stored = ckpt["state"]
    device = _first_device(like.params)
    params = _fit(like.params, stored["params"], where, "params")
    buffers = _fit(like.buffers, stored["buffers"], where, "buffers")
    opt_state = like.opt_state
    if stored.get("opt_state") is not None:
        opt_state = _like(like.opt_state, stored["opt_state"], device)
    return dataclasses.replace(
        like,
        params=params,
        buffers=buffers,
        opt_state=opt_state,
        rng=_like(None, stored.get("rng", {}), None),
        hooks=_like(like.hooks, stored.get("hooks", {}), device),
        **{k: _like(getattr(like, k), stored[k], None) for k in _RESUMED_FIELDS if k in stored},
    )


def _first_device(tensors: Mapping[str, torch.Tensor]) -> torch.device | None:
    return next((t.device for t in tensors.values()), None)


def _fit(
    like: Mapping[str, torch.Tensor], stored: Mapping[str, torch.Tensor], where: str, what: str
) -> dict[str, torch.Tensor]:
    """Stored tensors with exactly the names and shapes of ``like``, on ``like``'s devices."""
    missing = sorted(set(like) - set(stored))
    unexpected = sorted(set(stored) - set(like))
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: {what} do not match the model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    for name, tensor in like.items():
        if tuple(stored[name].shape) != tuple(tensor.shape):
            shape = tuple(stored[name].shape)
            raise CheckpointError(
                f"{where}: {what}[{name!r}] has shape {shape}, the model has {tuple(tensor.shape)}"
            )
    return {name: stored[name].to(tensor.device) for name, tensor in like.items()}
