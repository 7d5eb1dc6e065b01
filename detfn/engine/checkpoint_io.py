"""Checkpoint files: a whole :class:`TrainState` written atomically and loaded safely, and the
weights of any checkpoint for ``load_from``.

A checkpoint is a ``torch.save``d dict of plain values that ``torch.load(weights_only=True)``
reads without running code: ``{"format": "detfn-checkpoint", "format_version", "meta":
{"detfn_version", "time", "config", "config_type", "loader", "stage", "env", "epoch", "iter"},
"state": {every TrainState field}}``; dataclasses and NamedTuples are written as dicts and rebuilt
from the new run's fresh state on resume. A write goes to a fsynced temporary file renamed over
the target, so a crash mid-write leaves the previous file and ``latest.json`` untouched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import importlib.metadata
import json
import logging
import math
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

from detfn.config import file_mode, to_json
from detfn.dist.env_info import collect_env
from detfn.engine.events import Event, Stage
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
    for cls, kind in ((bool, bool), (numbers.Integral, int), (numbers.Real, float), (str, str)):
        if isinstance(value, cls):
            return kind(value)
    if isinstance(value, _LEAVES):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_plain({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, where)
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a NamedTuple
        return to_plain(dict(zip(value._fields, value)), where)
    if isinstance(value, Mapping):
        bad = [k for k in value if not isinstance(k, (str, int))]
        if bad:
            kind = type(bad[0]).__name__
            raise CheckpointError(f"{where} has a key {bad[0]!r} of type {kind}; use str or int")
        return {k: to_plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [to_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if isinstance(value, tuple) else items
    held = f"{where} holds a {type(value).__qualname__}"
    kept = "keep only tensors, numbers, str and dicts/lists/tuples of them in the state"
    raise CheckpointError(f"{held}, which a weights-only checkpoint cannot store; {kept}")


def _like(template: Any, value: Any, device: torch.device | None) -> Any:
    """Rebuild ``value`` (plain) with the types and tensor devices of ``template``."""
    if isinstance(value, torch.Tensor):
        device = template.device if isinstance(template, torch.Tensor) else device
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
    """Call ``write(file)`` on a temporary file next to ``path`` (mode as ``open`` would give it),
    fsync it, rename it to ``path``. On any exception ``path`` is left as it was; a full disk is
    one :class:`CheckpointError` line naming the directory and the bytes needed (``size``)."""
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
            full = f"{path.parent}: no space left on the device for {path.name}"
            raise CheckpointError(f"{full}: it needs {need}, {free} bytes are free") from None
        raise
    with contextlib.suppress(OSError):  # make the rename durable where the platform can
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
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
    try:  # the installed version, without importing detfn (which loads everything)
        version = importlib.metadata.version("detfn")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    info = {"detfn_version": version, "time": stamp, "epoch": state.epoch, "iter": state.iter}
    info.update(to_plain(dict(meta or {}), "meta"))
    ckpt = {"format": FORMAT, "format_version": FORMAT_VERSION, "meta": info, "state": plain_state}
    tensors = torch.utils._pytree.tree_leaves(plain_state)
    size = sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
    return atomic_write(path, lambda f: torch.save(ckpt, f), size)


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
    if stage == Stage.AFTER_TRAIN_ITER:  # a Stage or its name
        return dataclasses.replace(state, iter=state.iter + 1, inner_iter=state.inner_iter + 1)
    if stage == Stage.AFTER_TRAIN_EPOCH:
        return dataclasses.replace(state, epoch=state.epoch + 1, inner_iter=0)
    return state


_UNSAFE = re.compile(r"(?:GLOBAL|Unsupported class) (\S+)")


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The stored dict (``torch.load(weights_only=True)``, on the CPU; a detfn checkpoint gets its
    ``"path"``). Missing, corrupt or code-carrying files are one :class:`CheckpointError` line."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as error:  # zip, EOF, OS, pickle and parse errors: an unreadable file
        unpickling = isinstance(error, pickle.UnpicklingError)
        found = _UNSAFE.search(str(error)) if unpickling else None
        if found:
            unsafe = f"not a weights-only checkpoint (it carries pickled code: {found[1]})"
            raise CheckpointError(f"{path}: {unsafe}; refusing to load it") from None
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        detail = "its pickle data is unreadable" if unpickling else first_line
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({detail})") from None
    if isinstance(ckpt, dict) and ckpt.get("format") == FORMAT:
        ckpt["path"] = str(path)
    return ckpt


def state_from_checkpoint(ckpt: Mapping[str, Any], like: TrainState) -> TrainState:
    """``like`` (the new run's fresh state) with the stored weights, optimizer state, counters,
    current hyperparameters, rng and hook states, on ``like``'s devices; other names or shapes
    are a :class:`CheckpointError`."""
    where = ckpt.get("path", "<checkpoint>") if isinstance(ckpt, Mapping) else "<checkpoint>"
    if not isinstance(ckpt, Mapping) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{where}: not a detfn training checkpoint, cannot resume from it; "
                              "use load_weights (load_from) for weights only")  # fmt: skip
    stored = ckpt["state"]
    device = next((t.device for t in like.params.values()), None)
    params, _ = _fit(like.params, stored["params"], where, "params", strict=True)
    buffers, _ = _fit(like.buffers, stored["buffers"], where, "buffers", strict=True)
    resumed = {k: _like(getattr(like, k), stored[k], None) for k in _RESUMED_FIELDS if k in stored}
    resumed["rng"] = _like(None, stored.get("rng", {}), None)
    resumed["hooks"] = _like(like.hooks, stored.get("hooks", {}), device)
    if stored.get("opt_state") is not None:
        resumed["opt_state"] = _like(like.opt_state, stored["opt_state"], device)
    return dataclasses.replace(like, params=params, buffers=buffers, **resumed)


def _fit(
    like: Mapping[str, torch.Tensor], stored: Mapping[str, Any], where: str, what: str, strict: bool
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``like`` with the stored tensors of its names, on its devices and dtypes, and the names
    that got none. A shape mismatch always raises (it would train another model); ``strict``
    (resume) also refuses missing and unexpected names."""
    missing = [name for name in like if name not in stored]
    unexpected = sorted(set(stored) - set(like))
    if strict and (missing or unexpected):
        names = f"missing {sorted(missing)[:5]}, unexpected {unexpected[:5]}"
        raise CheckpointError(f"{where}: {what} do not match the model: {names}")
    fitted = dict(like)
    for name in like.keys() - set(missing):
        tensor, shape, own = like[name], tuple(stored[name].shape), tuple(like[name].shape)
        if shape != own:
            label = f"{what}[{name!r}]" if strict else repr(name)
            raise CheckpointError(f"{where}: {label} has shape {shape}, the model has {own}")
        fitted[name] = stored[name].to(device=tensor.device, dtype=tensor.dtype)
    return fitted, missing


def run_meta(run: Any, stage: Stage) -> dict[str, Any]:
    """What a checkpoint records about the run besides the state: config and loader position."""
    cfg = getattr(run, "cfg", None)
    is_config = dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)
    loader = getattr(run, "train_loader", None)
    return {
        "config": to_json(cfg) if is_config else None,
        "config_type": f"{type(cfg).__module__}.{type(cfg).__qualname__}" if is_config else None,
        "loader": loader.state_dict() if hasattr(loader, "state_dict") else None,
        "stage": stage.value,
        "env": collect_env(),
    }


def save_event_state(event: Event, state: TrainState, path: pathlib.Path, optimizer: bool) -> bool:
    """Save ``state`` as the loop will have it after ``event``; returns whether its weights are
    finite (one fused reduction): only a finite checkpoint may become ``latest``."""
    saved = advance_counters(state, event.stage)
    save_checkpoint(path, saved, meta=run_meta(event.run, event.stage), save_optimizer=optimizer)
    weights = (*saved.params.values(), *saved.buffers.values())
    tensors = [t for t in weights if t.is_floating_point()]
    if not tensors or bool(torch.stack(torch._foreach_norm(tensors, math.inf)).isfinite().all()):
        return True
    logger = getattr(event.run, "logger", None) or logging.getLogger("detfn")
    logger.warning("%s holds non-finite weights; latest still points at the previous file", path)
    return False


def load_weights(
    src: str | os.PathLike[str] | Mapping[str, Any], *, like: TrainState | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(params, buffers)`` of a detfn checkpoint, an mmcv ``{"state_dict": ...}`` or a plain
    state_dict (without a DataParallel ``module.`` prefix), a path or loaded; ``like``'s buffer
    names split a plain state_dict (without it, everything is params)."""
    ckpt = load_checkpoint(src) if isinstance(src, (str, os.PathLike)) else src
    if isinstance(ckpt, Mapping) and ckpt.get("format") == FORMAT:
        return dict(ckpt["state"]["params"]), dict(ckpt["state"]["buffers"])
    if isinstance(ckpt, Mapping) and isinstance(ckpt.get("state_dict"), Mapping):
        ckpt = ckpt["state_dict"]
    if not isinstance(ckpt, Mapping) or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        where = str(src) if isinstance(src, (str, os.PathLike)) else "<state_dict>"
        raise CheckpointError(f"{where}: neither a detfn checkpoint nor a state_dict of tensors")
    weights = dict(ckpt)
    if weights and all(k.startswith("module.") for k in weights):
        weights = {k[len("module.") :]: v for k, v in weights.items()}
    buffer_names = set(like.buffers) if like is not None else set()
    params = {k: v for k, v in weights.items() if k not in buffer_names}
    return params, {k: v for k, v in weights.items() if k in buffer_names}


def merge_weights(
    state: TrainState, params: Mapping[str, torch.Tensor], buffers: Mapping[str, torch.Tensor]
) -> tuple[TrainState, list[str]]:
    """``state`` with the weights copied in by name (``load_from``), and the names of its tensors
    that got none. Names the state lacks are ignored; a shape mismatch raises."""
    loaded = {**params, **buffers}
    new_params, missing = _fit(state.params, loaded, "load_from", "params", strict=False)
    new_buffers, missing_buffers = _fit(state.buffers, loaded, "load_from", "buffers", strict=False)
    state = dataclasses.replace(state, params=new_params, buffers=new_buffers)
    return state, missing + missing_buffers
