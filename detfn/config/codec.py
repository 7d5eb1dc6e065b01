"""JSON encoding and checked decoding of frozen config dataclasses.

dataclasses-json alone decodes ``Union[ResNetConfig, MobileNetV2Config]`` as whichever member
first accepts the dict (any all-defaults class accepts any dict), ignores ``Literal`` and reports
errors without saying where. This codec walks the type hints itself:

* a config that sits in a polymorphic place (a union of configs, or a subclass of the declared
  class) is written with a ``"type"`` tag from :mod:`detfn.registry` and read back by that tag;
* ``Literal`` values, primitive types and fixed tuple lengths are checked on load;
* tuples stay tuples, ``Optional`` stays ``Optional``;
* every error is one line naming the dotted path, e.g.
  ``model.backbone.depth: 51 is not one of (18, 34, 50, 101)``.

A field may carry dataclasses-json's own ``metadata=dataclasses_json.config(encoder=, decoder=)``;
the codec honours it, so custom leaf types keep working the dataclasses-json way.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import pathlib
import types
import typing
from typing import Any, Literal, Union

from detfn import registry

__all__ = ["TAG_KEY", "ConfigError", "ConfigTypeError", "decode", "encode", "located_message"]

TAG_KEY = "type"
_NONE_TYPE = type(None)


class ConfigError(ValueError):
    """A config that cannot be loaded or built: the message names the dotted path."""


class ConfigTypeError(ConfigError, TypeError):
    """A value of the wrong type; both a ``ConfigError`` and a ``TypeError``."""


# ---------------------------------------------------------------------------------------------
# type-hint helpers


@functools.cache
def field_hints(cls: type) -> dict[str, Any]:
    """Resolved type hints of a dataclass's fields (string annotations evaluated)."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # a class defined in a local scope with postponed annotations
        hints = {}
    return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(cls)}


def _union_members(tp: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(tp)
    if origin is Union or (hasattr(types, "UnionType") and isinstance(tp, types.UnionType)):
        return typing.get_args(tp)
    return None


def _config_members(tp: Any) -> tuple[type, ...]:
    """The dataclass types a hint admits (itself, or the dataclass members of a union)."""
    members = _union_members(tp)
    candidates = members if members is not None else (tp,)
    return tuple(c for c in candidates if isinstance(c, type) and dataclasses.is_dataclass(c))


def _common_base(classes: tuple[type, ...]) -> type | None:
    """The most derived base shared by all ``classes`` that is itself a dataclass config."""
    for base in classes[0].__mro__[1:]:
        if base is object or not dataclasses.is_dataclass(base):
            continue
        if base.__name__ == "Config" and base.__module__.startswith("detfn.config"):
            return None  # the universal root says nothing about the field's role
        if all(issubclass(c, base) for c in classes):
            return base
    return None


def _accepts(candidates: tuple[type, ...], cls: type) -> bool:
    """Whether a value of config class ``cls`` may stand where ``candidates`` are declared.

    Subclasses of a declared member are accepted, and so are subclasses of the members' common
    config base: that is how a user's registered ``MyBackboneConfig(BackboneConfig)`` fits a
    ``ResNetConfig | MobileNetV2Config`` field without an edit of detfn.
    """
    if any(issubclass(cls, c) for c in candidates):
        return True
    base = _common_base(candidates) if len(candidates) > 1 else None
    return base is not None and issubclass(cls, base)


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


# ---------------------------------------------------------------------------------------------
# encoding


def encode(value: Any, hint: Any = Any) -> Any:
    """Turn a config (or any value inside one) into JSON-ready Python data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _encode_config(value, hint)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if isinstance(value, dict):
        value_hint = _item_hint(hint, 1)
        return {str(k): encode(v, value_hint) for k, v in value.items()}
    if isinstance(value, (tuple, list, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [encode(item, _item_hint(hint, i)) for i, item in enumerate(items)]
    return value


def _item_hint(hint: Any, index: int) -> Any:
    """Hint of the ``index``-th item of a tuple/list hint, or of the values of a dict hint."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if not args:
        return Any
    if origin is dict:
        return args[1] if index == 1 else args[0]
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        return args[index] if index < len(args) else Any
    return args[0]


def _needs_tag(value: Any, hint: Any) -> bool:
    members = _config_members(hint)
    return len(members) != 1 or members[0] is not type(value)


def _encode_config(cfg: Any, hint: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if _needs_tag(cfg, hint):
        out[TAG_KEY] = registry.tag_of(type(cfg))
    hints = field_hints(type(cfg))
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        custom = field.metadata.get("dataclasses_json", {}).get("encoder")
        out[field.name] = custom(value) if custom is not None else encode(value, hints[field.name])
    return out


# ---------------------------------------------------------------------------------------------
# decoding


def decode(data: Any, hint: Any, path: str = "") -> Any:
    """Check ``data`` (parsed JSON) against ``hint`` and build the typed value.

    Already-typed values (a config instance, a tuple) are accepted where they fit, so the same
    function checks values given to :func:`detfn.config.override`.

    Raises:
        ConfigError: naming the dotted ``path`` and the problem.
    """
    if hint is Any or hint is typing.Any:
        return data
    if typing.get_origin(hint) is typing.Annotated:
        return decode(data, typing.get_args(hint)[0], path)
    members = _union_members(hint)
    if members is not None:
        return _decode_union(data, members, path)
    if typing.get_origin(hint) is Literal:
        return _decode_literal(data, typing.get_args(hint), path)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _decode_config(data, (hint,), path)
    origin = typing.get_origin(hint)
    if origin in (tuple, list, set, frozenset, dict):
        return _decode_container(data, hint, origin, path)
    return _decode_leaf(data, hint, path)


def _where(path: str) -> str:
    return path or "<root>"


def _decode_union(data: Any, members: tuple[Any, ...], path: str) -> Any:
    if data is None:
        if _NONE_TYPE in members:
            return None
        raise ConfigTypeError(f"{_where(path)}: null is not allowed here")
    configs = tuple(m for m in members if isinstance(m, type) and dataclasses.is_dataclass(m))
    if configs and (isinstance(data, dict) or dataclasses.is_dataclass(data)):
        return _decode_config(data, configs, path)
    others = [m for m in members if m is not _NONE_TYPE and m not in configs]
    for member in others:
        try:
            return decode(data, member, path)
        except ConfigError:
            continue
    expected = " | ".join(_type_name(m) for m in members)
    raise ConfigTypeError(f"{_where(path)}: expected {expected}, got {data!r}")


def _decode_literal(data: Any, allowed: tuple[Any, ...], path: str) -> Any:
    for option in allowed:
        if data == option and type(data) is type(option):
            return option
        if isinstance(option, enum.Enum) and data == option.value:
            return option
    raise ConfigError(f"{_where(path)}: {data!r} is not one of {allowed!r}")


def _decode_container(data: Any, hint: Any, origin: type, path: str) -> Any:
    args = typing.get_args(hint)
    if origin is dict:
        if not isinstance(data, dict):
            raise ConfigTypeError(f"{_where(path)}: expected an object, got {data!r}")
        key_hint, value_hint = args if args else (Any, Any)
        return {
            decode(k, key_hint, f"{path}.{k}"): decode(v, value_hint, f"{path}.{k}")
            for k, v in data.items()
        }
    if not isinstance(data, (list, tuple)) and not (
        origin in (set, frozenset) and isinstance(data, (set, frozenset))
    ):
        raise ConfigTypeError(f"{_where(path)}: expected a list, got {data!r}")
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(data) != len(args):
            raise ConfigError(f"{_where(path)}: expected {len(args)} items, got {len(data)}")
        return tuple(decode(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(data, args)))
    item_hint = args[0] if args else Any
    items = [decode(v, item_hint, f"{path}[{i}]") for i, v in enumerate(data)]
    return origin(items)


def _decode_leaf(data: Any, hint: Any, path: str) -> Any:
    if hint is _NONE_TYPE or hint is None:
        if data is None:
            return None
        raise ConfigTypeError(f"{_where(path)}: expected null, got {data!r}")
    if hint is bool:
        if isinstance(data, bool):
            return data
    elif hint is int:
        if isinstance(data, int) and not isinstance(data, bool):
            return data
    elif hint is float:
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return float(data)
    elif hint is str:
        if isinstance(data, str):
            return data
    elif isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(data)
        except ValueError:
            allowed = tuple(m.value for m in hint)
            raise ConfigError(f"{_where(path)}: {data!r} is not one of {allowed!r}") from None
    elif isinstance(hint, type) and issubclass(hint, pathlib.PurePath):
        if isinstance(data, (str, pathlib.PurePath)):
            return hint(data)
    else:
        return data  # a type the codec does not know: passed through unchecked
    raise ConfigTypeError(f"{_where(path)}: expected {_type_name(hint)}, got {data!r}")


def _resolve_tag(tag: Any, candidates: tuple[type, ...], path: str) -> type:
    for cls in candidates:
        if registry.tag_of(cls) == tag or cls.__name__ == tag:
            return cls
    cls = registry.class_of_tag(tag) if isinstance(tag, str) else None
    if cls is not None and _accepts(candidates, cls):
        return cls
    known = {registry.tag_of(c) for c in candidates}
    known |= {registry.tag_of(t) for t in registry.registered_types() if _accepts(candidates, t)}
    raise ConfigError(f"{_where(path)}: unknown type tag {tag!r}; known tags: {sorted(known)}")


def _decode_config(data: Any, candidates: tuple[type, ...], path: str) -> Any:
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        if _accepts(candidates, type(data)):
            return data
        expected = " | ".join(c.__name__ for c in candidates)
        raise ConfigTypeError(f"{_where(path)}: expected {expected}, got {type(data).__name__}")
    if not isinstance(data, dict):
        expected = " | ".join(c.__name__ for c in candidates)
        raise ConfigTypeError(f"{_where(path)}: expected an object for {expected}, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(candidates[0])}
    data = dict(data)
    if TAG_KEY in data and TAG_KEY not in fields:
        cls = _resolve_tag(data.pop(TAG_KEY), candidates, path)
    elif len(candidates) == 1:
        cls = candidates[0]
    else:
        tags = sorted(registry.tag_of(c) for c in candidates)
        raise ConfigError(f"{_where(path)}: missing '{TAG_KEY}' tag; expected one of {tags}")
    return _construct(cls, data, path)


def _construct(cls: type, data: dict[str, Any], path: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for name in data:
        if name not in fields:
            close = difflib.get_close_matches(name, list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid fields: {sorted(fields)}"
            raise ConfigError(f"{_join(path, name)}: unknown field of {cls.__name__}{hint}")
    hints = field_hints(cls)
    kwargs = {}
    for name, value in data.items():
        custom = fields[name].metadata.get("dataclasses_json", {}).get("decoder")
        if custom is not None:
            kwargs[name] = custom(value)
        else:
            kwargs[name] = decode(value, hints[name], _join(path, name))
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except TypeError as error:
        raise ConfigTypeError(located_message(error, cls, path)) from error
    except ValueError as error:
        raise ConfigError(located_message(error, cls, path)) from error


def located_message(error: Exception, cls: type, path: str) -> str:
    """A validation message with its dotted path.

    ``OptimConfig.lr must be > 0`` raised while building ``runner.optimizer`` becomes
    ``runner.optimizer.lr: must be > 0 (OptimConfig)``; other messages get the path as a prefix.
    """
    message = str(error)
    prefix = f"{cls.__name__}."
    if message.startswith(prefix):
        field, _, rest = message[len(prefix) :].partition(" ")
        return f"{_join(path, field)}: {rest} ({cls.__name__})"
    return f"{_where(path)}: {message}"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
