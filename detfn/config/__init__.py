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
  :func:`override`: ``override(base, "model.num_classes", 3)``. Replacing a
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
from collections.abc import Mapping
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
from detfn.config.codec import (
    TAG_KEY,
    ConfigError,
    ConfigTypeError,
    decode,
    encode,
    field_hints,
    located_message,
)

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


def file_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask (0644 under 022), for files
    written through ``tempfile.mkstemp``, which would leave them 0600."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def save(cfg: Any, path: str | os.PathLike[str]) -> pathlib.Path:
    """Write ``cfg`` as JSON, atomically (temporary file, then rename)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, file_mode())
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


_UNSET = object()


def override(cfg: T, path: str | Mapping[str, Any], value: Any = _UNSET) -> T:
    """A copy of ``cfg`` with the field at dotted ``path`` set to ``value``.

    ``override(cfg, "model.num_classes", 3)`` replaces along the path with
    :func:`dataclasses.replace`; an integer segment indexes a tuple field
    (``"data.train.pipeline.2.scale"``). The value is type-checked against the field's hint.

    ``override(cfg, {"model.neck.out_channels": 128, "model.rpn_head.feat_channels": 128})`` sets
    several fields at once: each config on the way is rebuilt once with all its changes, so
    fields that must agree (checked in ``__post_init__``) can change together.

    Raises:
        ConfigError: a segment that is not a field (with the closest valid name), a value of the
            wrong type, or a value the config's own validation rejects.
    """
    updates = dict(path) if isinstance(path, Mapping) else {path: value}
    if isinstance(path, Mapping) and value is not _UNSET:
        raise TypeError("override(cfg, mapping) takes no separate value")
    if not isinstance(path, Mapping) and value is _UNSET:
        raise TypeError("override(cfg, path, value) needs the value")
    tree: dict[str, Any] = {}
    for dotted, new in updates.items():
        if not dotted or any(not part for part in dotted.split(".")):
            raise ConfigError(f"override: bad path {dotted!r}")
        _insert(tree, dotted.split("."), new, dotted)
    return _apply(cfg, tree, "")


def _insert(tree: dict[str, Any], parts: list[str], value: Any, dotted: str) -> None:
    """Add one update to the nested ``{segment: subtree | _Leaf}`` tree of updates."""
    head, rest = parts[0], parts[1:]
    if not rest:
        if head in tree:
            raise ConfigError(f"override: {dotted} is given twice or inside another update")
        tree[head] = _Leaf(value)
        return
    child = tree.setdefault(head, {})
    if isinstance(child, _Leaf):
        raise ConfigError(f"override: {dotted} is inside a field that is also replaced whole")
    _insert(child, rest, value, dotted)


@dataclasses.dataclass(frozen=True)
class _Leaf:
    value: Any


def _apply(node: Any, tree: dict[str, Any], done: str) -> Any:
    if isinstance(node, tuple):
        return _apply_items(node, tree, done)
    changes = {}
    for head, sub in tree.items():
        here = f"{done}.{head}" if done else head
        _check_field(node, head, here, done)
        if isinstance(sub, _Leaf):
            changes[head] = decode(sub.value, field_hints(type(node))[head], here)
        else:
            changes[head] = _apply(getattr(node, head), sub, here)
    try:
        return dataclasses.replace(node, **changes)
    except TypeError as error:
        raise ConfigTypeError(f"override: {located_message(error, type(node), done)}") from error
    except ValueError as error:
        raise ConfigError(f"override: {located_message(error, type(node), done)}") from error


def _check_field(node: Any, head: str, here: str, done: str) -> None:
    if not dataclasses.is_dataclass(node) or isinstance(node, type):
        where = done or "<root>"
        raise ConfigError(f"override: {here}: {where} is {node!r}, which has no field {head!r}")
    names = [f.name for f in dataclasses.fields(node)]
    if head not in names:
        close = difflib.get_close_matches(head, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; fields: {names}"
        raise ConfigError(f"override: {here}: {type(node).__name__} has no field {head!r}{hint}")


def _apply_items(node: tuple, tree: dict[str, Any], done: str) -> tuple:
    items = list(node)
    for head, sub in tree.items():
        here = f"{done}.{head}"
        if not head.lstrip("-").isdigit() or not -len(node) <= int(head) < len(node):
            raise ConfigError(
                f"override: {here}: {done} is a tuple of {len(node)}; bad index {head!r}"
            )
        i = int(head) % len(node)
        items[i] = sub.value if isinstance(sub, _Leaf) else _apply(items[i], sub, here)
    return tuple(items)


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
