"""Typed, frozen, JSON-round-tripping configs.

Every detfn config is a ``@dataclass(frozen=True)`` with typed fields and defaults, checked in
``__post_init__`` (see :mod:`detfn.config.checks`). Configs are values: hashable, comparable,
safe to share.

How mmdetection's ``_base_`` inheritance maps onto this
--------------------------------------------------------
mmdetection builds ``faster_rcnn_r50_fpn_1x_coco.py`` by merging four ``_base_`` dict files
(model, dataset, schedule, runtime) and then merging the child's dicts on top; lists replace,
dicts merge, and ``_delete_=True`` stops a merge. detfn has no merging:

* a *base* is an ordinary Python value, e.g. ``FASTER_RCNN_R50_FPN_1X``, composed of other values
  (``ResNetConfig()``, ``FPNConfig()``, a schedule) the way the ``_base_`` files are composed;
* a *variant* is ``dataclasses.replace(base, field=new_value)``; a change deep inside uses
  :func:`override`: ``override(base, "model.roi_head.bbox_head.num_classes", 3)``. Replacing a
  field replaces it whole, so there is no ``_delete_`` and no list-versus-dict surprise;
* the intermediate variables that mmdetection fails to re-bind (``train_pipeline``) are plain
  Python names here, so they are bound by the language;
* the command line (tyro) and JSON files are two more ways to write the same values; both are
  checked by the same types.

Polymorphic fields (a union of config classes) are written to JSON with a ``"type"`` tag taken
from :mod:`detfn.registry`; see :mod:`detfn.config.codec`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import pathlib
import tempfile
from dataclasses import dataclass
from typing import Any, TypeVar

from dataclasses_json import DataClassJsonMixin

from detfn.config.checks import (
    check,
    check_in_range,
    check_non_negative,
    check_positive,
    check_sorted,
    check_unit_interval,
    fail,
)
from detfn.config.codec import TAG_KEY, ConfigError, ConfigTypeError, decode, encode, field_hints

__all__ = [
    "TAG_KEY",
    "Config",
    "ConfigError",
    "ConfigTypeError",
    "check",
    "check_in_range",
    "check_non_negative",
    "check_positive",
    "check_sorted",
    "check_unit_interval",
    "fail",
    "from_dict",
    "from_json",
    "load",
    "one_of",
    "override",
    "save",
    "to_dict",
    "to_json",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Config(DataClassJsonMixin):
    """Optional base of detfn configs: adds dataclasses-json's ``to_json``/``from_json`` methods.

    The methods go through detfn's checked, tag-aware codec, so ``cfg.to_json()`` and
    ``to_json(cfg)`` write the same text. Plain frozen dataclasses work with every function of
    this module too; the base is a convenience, not a requirement.
    """

    def to_dict(self, encode_json: bool = False) -> dict[str, Any]:
        del encode_json  # the codec always produces JSON-ready data
        return encode(self, type(self))

    @classmethod
    def from_dict(cls: type[T], kvs: Any, *, infer_missing: bool = False) -> T:
        del infer_missing  # missing fields always take their defaults
        return decode(kvs, cls)


def to_dict(cfg: Any) -> dict[str, Any]:
    """JSON-ready dict of a config, polymorphic fields tagged. Log this, not ``asdict(cfg)``."""
    return encode(cfg, type(cfg))


def from_dict(data: Any, cls: type[T]) -> T:
    """Checked inverse of :func:`to_dict`; raises :class:`ConfigError` naming the dotted path."""
    return decode(data, cls)


def to_json(cfg: Any, *, indent: int | None = 2) -> str:
    """JSON text of a config; ``from_json(to_json(c), type(c)) == c``."""
    return json.dumps(to_dict(cfg), indent=indent)


def from_json(text: str, cls: type[T]) -> T:
    """Parse and check JSON text into a ``cls`` config."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"invalid JSON: {error}") from None
    return from_dict(data, cls)


def save(cfg: Any, path: str | os.PathLike[str]) -> pathlib.Path:
    """Write ``cfg`` as JSON, atomically (temporary file, then rename)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(to_json(cfg) + "\n")
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path: str | os.PathLike[str], cls: type[T]) -> T:
    """Read a config JSON file; errors name the file and the dotted path."""
    path = pathlib.Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config: {error.strerror or error}") from None
    try:
        return from_json(text, cls)
    except ConfigError as error:
        raise type(error)(f"{path}: {error}") from None


def override(cfg: T, path: str, value: Any) -> T:
    """A copy of ``cfg`` with the field at dotted ``path`` set to ``value``.

    ``override(cfg, "model.roi_head.bbox_head.num_classes", 3)`` replaces along the path with
    :func:`dataclasses.replace`; an integer segment indexes a tuple field
    (``"data.train.pipeline.2.scale"``). The value is type-checked against the field's hint.

    Raises:
        ConfigError: a segment that is not a field (with the closest valid name), or a value of
            the wrong type.
    """
    if not path:
        raise ConfigError("override: empty path")
    return _override(cfg, path.split("."), value, "")


def _override(node: Any, parts: list[str], value: Any, done: str) -> Any:
    head, rest = parts[0], parts[1:]
    here = f"{done}.{head}" if done else head
    if isinstance(node, tuple):
        return _override_item(node, head, rest, value, here, done)
    if not dataclasses.is_dataclass(node) or isinstance(node, type):
        where = done or "<root>"
        raise ConfigError(f"override: {here}: {where} is {node!r}, which has no field {head!r}")
    names = [f.name for f in dataclasses.fields(node)]
    if head not in names:
        close = difflib.get_close_matches(head, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; fields: {names}"
        raise ConfigError(f"override: {here}: {type(node).__name__} has no field {head!r}{hint}")
    if rest:
        new = _override(getattr(node, head), rest, value, here)
    else:
        new = decode(value, field_hints(type(node))[head], here)
    try:
        return dataclasses.replace(node, **{head: new})
    except TypeError as error:
        raise ConfigTypeError(f"override: {here}: {error}") from error
    except ValueError as error:
        raise ConfigError(f"override: {here}: {error}") from error


def _override_item(node: tuple, head: str, rest: list[str], value: Any, here: str, done: str):
    if not head.lstrip("-").isdigit() or not -len(node) <= int(head) < len(node):
        raise ConfigError(f"override: {here}: {done} is a tuple of {len(node)}; bad index {head!r}")
    i = int(head) % len(node)
    new = _override(node[i], rest, value, here) if rest else value
    return (*node[:i], new, *node[i + 1 :])


def one_of(*classes: type) -> Any:
    """A union of config classes that tyro shows as subcommands named by their tags.

    Use it as a field type: ``backbone: one_of(ResNetConfig, MobileNetV2Config) = ResNetConfig()``.
    The JSON codec sees through the ``Annotated`` markers and uses the registry's tags.
    """
    import typing

    import tyro

    from detfn.registry import tag_of

    annotated = tuple(typing.Annotated[c, tyro.conf.subcommand(tag_of(c).lower())] for c in classes)
    return typing.Union[annotated]
